"""Chart geometry for server-drawn SVG: the view computes coordinates here, the template draws them.

No script and no inline style (the pages' CSP allows neither), so a chart is plain SVG shapes
with CSS classes. A chart is for people who would rather look than read: every one of them has a
table beside it that carries the same numbers, and an ``aria-label`` that says what it shows.
Coordinates are rounded to a tenth of a unit so the markup stays short.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Room for the y tick labels on the left and the x labels underneath.
LEFT, BOTTOM, TOP, RIGHT = 34, 18, 6, 6
# A day's bar stays a bar, not a slab, when only a few days are shown.
MAX_BAR = 40.0

Interval = tuple[float | None, float | None, float | None]  # value, low, high


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True)
class Mark:
    """One value of a series: a dot at ``y``, a whisker from ``low_y`` to ``high_y`` if known."""

    x: float
    y: float
    low_y: float | None
    high_y: float | None
    title: str


@dataclass(frozen=True)
class Line:
    key: str
    label: str
    index: int  # picks the colour class series-<index>
    segments: list[str]  # polyline points; a missing value breaks the line
    marks: list[Mark]


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    lines: list[Line]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    baseline: float  # y of the value 0 (or of the bottom when 0 is out of range)
    plot_left: int
    plot_right: int


@dataclass(frozen=True)
class Bar:
    x: float
    cx: float  # the middle, for its label
    y: float
    width: float
    height: float
    label: str
    value: int
    title: str


@dataclass(frozen=True)
class BarChart:
    width: int
    height: int
    bars: list[Bar]
    baseline: float
    peak: int


@dataclass(frozen=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    index: int
    title: str


@dataclass(frozen=True)
class StackedBarChart:
    width: int
    height: int
    segments: list[Segment]
    x_ticks: list[Tick]
    baseline: float
    peak: int
    legend: list[tuple[int, str]]


def _r(value: float) -> float:
    return round(value, 1)


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else str(int(value))


def _every(count: int, most: int) -> int:
    """Label every n-th of ``count`` positions so that at most ``most`` labels show."""
    return max(1, math.ceil(count / most))


def interval_line_chart(
    *,
    x_labels: Sequence[str],
    series: Sequence[tuple[str, str, Sequence[Interval]]],
    low: float = 0.0,
    high: float = 1.0,
    width: int = 600,
    height: int = 200,
) -> LineChart:
    """Lines of estimates with their confidence intervals as whiskers, one point per x label.

    ``series`` is ``(key, label, [(value, low, high) per x label])``; a None value leaves a gap.
    The y range is ``low..high``, widened downward to the lowest interval end (an alpha can be
    negative) in steps of a tenth. Series are dodged sideways a little so that whiskers of
    several series on the same x do not hide one another."""
    ends = [v for _, _, values in series for e in values for v in e if v is not None]
    low = min([low, *[math.floor(v * 10) / 10 for v in ends]])
    high = max([high, *[math.ceil(v * 10) / 10 for v in ends]])
    span = (high - low) or 1.0
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / max(1, len(x_labels))
    dodge = min(6.0, slot / (len(series) + 1))

    def y_of(value: float) -> float:
        return _r(TOP + (high - value) / span * plot_h)

    lines = [
        _interval_line(
            index, key, label, values, x_labels=x_labels, slot=slot, y_of=y_of,
            shift=(index - (len(series) - 1) / 2) * dodge,
        )
        for index, (key, label, values) in enumerate(series)
    ]  # fmt: skip
    step = 0.25 if span <= 1.0 else 0.5
    first = math.ceil(low / step - 1e-9) * step
    ticks = [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]
    every = _every(len(x_labels), 12)
    return LineChart(
        width=width,
        height=height,
        lines=lines,
        x_ticks=[
            Tick(at=_r(LEFT + (i + 0.5) * slot), label=label)
            for i, label in enumerate(x_labels)
            if i % every == 0
        ],
        y_ticks=[Tick(at=y_of(t), label=_number(round(t, 2))) for t in ticks],
        baseline=y_of(min(max(0.0, low), high)),
        plot_left=LEFT,
        plot_right=width - RIGHT,
    )


def _interval_line(
    index: int,
    key: str,
    label: str,
    values: Sequence[Interval],
    *,
    x_labels: Sequence[str],
    slot: float,
    shift: float,
    y_of: Callable[[float], float],
) -> Line:
    """One series: its polyline (broken where a value is missing) and a mark per estimate with
    its whisker and a title that reads the numbers out."""
    segments: list[list[str]] = [[]]
    marks = []
    for i, (value, lo, hi) in enumerate(values):
        if value is None:
            segments.append([])
            continue
        x = _r(LEFT + (i + 0.5) * slot + shift)
        segments[-1].append(f"{x},{y_of(value)}")
        interval = f" ({lo:.2f} to {hi:.2f})" if lo is not None and hi is not None else ""
        marks.append(
            Mark(
                x=x,
                y=y_of(value),
                low_y=y_of(lo) if lo is not None else None,
                high_y=y_of(hi) if hi is not None else None,
                title=f"{label}, {x_labels[i]}: {value:.2f}{interval}",
            )
        )
    segments_drawn = [" ".join(s) for s in segments if len(s) > 1]
    return Line(key=key, label=label, index=index, segments=segments_drawn, marks=marks)


def bar_chart(
    *, labels: Sequence[str], values: Sequence[int], width: int = 280, height: int = 120
) -> BarChart:
    """Vertical bars of counts (a histogram when the labels are the values of a scale)."""
    peak = max([*values, 1])
    plot_w, plot_h = width - 2 * RIGHT, height - TOP - BOTTOM
    slot = plot_w / max(1, len(labels))
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        h = plot_h * value / peak
        bars.append(
            Bar(
                x=_r(RIGHT + i * slot + slot * 0.1),
                cx=_r(RIGHT + (i + 0.5) * slot),
                y=_r(TOP + plot_h - h),
                width=_r(slot * 0.8),
                height=_r(h),
                label=label,
                value=value,
                title=f"{label}: {value}",
            )
        )
    return BarChart(width=width, height=height, bars=bars, baseline=_r(TOP + plot_h), peak=peak)


def stacked_bar_chart(
    *,
    labels: Sequence[str],
    stacks: Sequence[tuple[str, Sequence[int]]],
    width: int = 600,
    height: int = 140,
) -> StackedBarChart:
    """One bar per label, each split into the ``stacks`` (``(name, count per label)``), bottom up
    in the order given; empty segments are left out."""
    totals = [sum(values[i] for _, values in stacks) for i in range(len(labels))]
    peak = max([*totals, 1])
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    slot = plot_w / max(1, len(labels))
    segments = []
    for i, label in enumerate(labels):
        bottom = float(TOP + plot_h)
        bar = min(max(slot * 0.8, 1.0), MAX_BAR)
        for index, (name, values) in enumerate(stacks):
            if not values[i]:
                continue
            h = plot_h * values[i] / peak
            bottom -= h
            segments.append(
                Segment(
                    x=_r(LEFT + (i + 0.5) * slot - bar / 2),
                    y=_r(bottom),
                    width=_r(bar),
                    height=_r(h),
                    index=index,
                    title=f"{label}, {name}: {values[i]}",
                )
            )
    every = _every(len(labels), 8)
    return StackedBarChart(
        width=width,
        height=height,
        segments=segments,
        x_ticks=[
            Tick(at=_r(LEFT + (i + 0.5) * slot), label=label)
            for i, label in enumerate(labels)
            if i % every == 0
        ],
        baseline=_r(TOP + plot_h),
        peak=peak,
        legend=[(index, name) for index, (name, _) in enumerate(stacks)],
    )


# A chart with axis titles: room for the y title and its tick labels, and the x title.
AXIS_LEFT, AXIS_BOTTOM = 62, 36


@dataclass(frozen=True)
class Series:
    """What a step chart draws: ``points`` as (step, value); ``dots`` marks each point (held-out
    evaluations, a few points) where a line alone would hide how few there are; ``dashed`` sets
    a held-out line apart from the training line of the same run."""

    key: str
    label: str
    points: Sequence[tuple[float, float]]
    index: int = 0
    dots: bool = False
    dashed: bool = False


@dataclass(frozen=True)
class StepLine:
    key: str
    label: str
    index: int
    points: str  # polyline points, in step order
    marks: list[Mark]  # the dots, each with a title that reads the value out
    dashed: bool


@dataclass(frozen=True)
class StepChart:
    width: int
    height: int
    lines: list[StepLine]
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    x_label: str
    y_label: str
    plot_left: int
    plot_right: int
    plot_top: int
    plot_bottom: int

    @property
    def y_label_y(self) -> float:
        return _r((self.plot_top + self.plot_bottom) / 2)

    @property
    def x_label_x(self) -> float:
        return _r((self.plot_left + self.plot_right) / 2)


def nice_ticks(low: float, high: float, most: int = 5, *, whole: bool = False) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten apart) from at or below ``low`` to at
    or above ``high``, at most about ``most`` intervals; whole numbers only with ``whole``."""
    if high <= low:
        pad = abs(low) * 0.05 or (1.0 if whole else 0.05)
        low, high = low - pad, high + pad
    raw = (high - low) / most
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    if whole:
        step = max(1.0, math.ceil(step))
    first = math.floor(low / step + 1e-9) * step
    count = math.ceil((high - first) / step - 1e-9)
    return [round(first + i * step, 12) for i in range(count + 1)]


def _tick_label(value: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{value:.{decimals}f}"


def step_chart(
    *, series: Sequence[Series], y_label: str, x_label: str = "optimizer step",
    width: int = 600, height: int = 220,
) -> StepChart:  # fmt: skip
    """Values by training step, the right way up: a larger value is drawn higher (SVG's y grows
    downward, so y is measured from the top of the range). Both axes have round ticks."""
    steps = [s for line in series for s, _ in line.points]
    values = [v for line in series for _, v in line.points]
    x_ticks = nice_ticks(min([0, *steps]), max([1, *steps]), 6, whole=True)
    y_ticks = nice_ticks(min(values, default=0.0), max(values, default=1.0), 4)
    left, right, top = AXIS_LEFT, width - RIGHT - 6, TOP + 4
    bottom = height - AXIS_BOTTOM
    x_low, x_span = x_ticks[0], (x_ticks[-1] - x_ticks[0]) or 1.0
    y_high, y_span = y_ticks[-1], (y_ticks[-1] - y_ticks[0]) or 1.0

    def x_of(step: float) -> float:
        return _r(left + (step - x_low) / x_span * (right - left))

    def y_of(value: float) -> float:
        return _r(top + (y_high - value) / y_span * (bottom - top))

    lines = []
    for line in series:
        ordered = sorted(line.points)
        marks = [
            Mark(x=x_of(s), y=y_of(v), low_y=None, high_y=None,
                 title=f"{line.label}, step {_number(s)}: {v:.4g}")
            for s, v in ordered
        ] if line.dots else []  # fmt: skip
        lines.append(
            StepLine(
                key=line.key,
                label=line.label,
                index=line.index,
                marks=marks,
                points=" ".join(f"{x_of(s)},{y_of(v)}" for s, v in ordered),
                dashed=line.dashed,
            )
        )
    return StepChart(
        width=width, height=height, lines=lines, x_label=x_label, y_label=y_label,
        x_ticks=[Tick(at=x_of(t), label=_tick_label(t, x_ticks)) for t in x_ticks],
        y_ticks=[Tick(at=y_of(t), label=_tick_label(t, y_ticks)) for t in y_ticks],
        plot_left=left, plot_right=right, plot_top=top, plot_bottom=bottom,
    )  # fmt: skip
