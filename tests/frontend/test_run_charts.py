"""The run page's charts are drawn the right way up: what a run's metrics history says, the
SVG shows (SVG's y grows downwards, so a falling loss must end lower on the page)."""

from __future__ import annotations

from frontend.run_charts import run_charts


def ys(points: str) -> list[float]:
    return [float(point.split(",")[1]) for point in points.split()]


def xs(points: str) -> list[float]:
    return [float(point.split(",")[0]) for point in points.split()]


def test_a_falling_loss_is_drawn_falling_and_held_out_points_sit_on_its_axes():
    history = [{"step": step, "loss": 1.2 - 0.1 * step} for step in range(1, 7)]
    history += [{"step": 3, "eval_loss": 1.0, "eval_accuracy": 0.5},
                {"step": 6, "eval_loss": 0.8, "eval_accuracy": 0.75}]  # fmt: skip
    loss, accuracy = run_charts("reward", [("Run 1", history)])

    train, held_out = loss.chart.lines
    assert ys(train.points) == sorted(ys(train.points))  # lower loss, further down the page
    assert xs(train.points) == sorted(xs(train.points))  # later steps to the right
    assert [mark.y for mark in held_out.marks] == sorted(mark.y for mark in held_out.marks)
    # The y axis's ticks go up the page as their values grow; the x axis says what it counts.
    ticks = loss.chart.y_ticks
    assert [tick.at for tick in ticks] == sorted((tick.at for tick in ticks), reverse=True)
    assert loss.chart.x_label == "optimizer step" and "nats" in loss.title

    # A rising accuracy is drawn rising: its dots go up the page.
    (dots,) = accuracy.chart.lines
    assert dots.marks[0].y > dots.marks[1].y
