"""The house's import directions (README, "Code map"): frontend → training → annotation → the
base layer in feedback/. The wiring (settings, the root URLconf, the Celery app, wsgi/asgi) sits on
top and is the only code that may name every app. Lazy imports inside functions count too."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("feedback", "annotation", "training", "frontend")
WIRING = {
    "feedback",  # __init__: loads the Celery app
    "feedback.settings",
    "feedback.urls",
    "feedback.celery",
    "feedback.wsgi",
    "feedback.asgi",
}
LAYER = {"feedback": 0, "annotation": 1, "training": 2, "frontend": 3}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path, module: str) -> set[str]:
    """Every module this file imports, relative imports resolved, at any depth of the file."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def layer_of(module: str, *, importer: bool = True) -> int | None:
    # The package itself, as a target ("from feedback import api"), is the base layer's package.
    if module in WIRING and (importer or module != "feedback"):
        return 4
    top = module.split(".")[0]
    return LAYER.get(top)


def source_files() -> list[Path]:
    return [
        path
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if "migrations" not in path.parts
    ]


def test_imports_point_down_the_layers() -> None:
    upward = []
    for path in source_files():
        module = module_name(path)
        own = layer_of(module)
        for target in imported(path, module):
            theirs = layer_of(target, importer=False)
            if theirs is not None and own is not None and theirs > own:
                upward.append(f"{module} imports {target}")
    assert sorted(upward) == []


def test_the_walk_sees_an_upward_import() -> None:
    """The check above could pass by reading nothing: show it on a made-up module."""
    fake = ROOT / "annotation" / "_layers_probe.py"
    fake.write_text("def f():\n    from training.models import TrainingRun\n", encoding="utf-8")
    try:
        targets = imported(fake, "annotation._layers_probe")
    finally:
        fake.unlink()
    assert "training.models" in targets
    assert layer_of("training.models") > layer_of("annotation._layers_probe")
    assert len(source_files()) > 100
