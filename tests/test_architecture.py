"""The package's shape: folders that follow the pipeline, imports that flow one way (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "textweaver"
# the order of the floors: a module imports only from its own floor and the ones before it
FLOORS = ["errors", "config", "device", "data", "models", "run", "generation", "training", "export", "report", "app"]
ENTRY = {"__init__", "__main__"}  # the package's doors: they may import anything


def floor(module: str) -> int:
    """``textweaver.data.corpus`` -> the index of ``data``."""
    return FLOORS.index(module.split(".")[1])


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every textweaver module the file imports, ``from textweaver import x`` as ``textweaver.x``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "textweaver":
            names = [f"textweaver.{a.name}" for a in node.names] if node.module == "textweaver" else [node.module]
            found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "textweaver"]
    return found


def test_every_module_lives_on_a_floor_of_the_pipeline() -> None:
    """Only the ground floor's modules sit in the package's root; everything else is in a pipeline folder."""
    stray = [
        name for name in modules()
        if name != "textweaver" and name.split(".")[1] not in FLOORS and name.split(".")[1] not in ENTRY
    ]  # fmt: skip
    assert not stray, f"modules outside the pipeline's folders: {stray}"
    root = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert root == sorted({"__init__", "__main__", "errors", "config", "device"}), root


def test_imports_flow_one_way_down_the_pipeline() -> None:
    upward = [
        f"{name} imports {other} (line {line})"
        for name, path in modules().items()
        if name != "textweaver" and name.split(".")[1] not in ENTRY
        for line, other in imported(path)
        if other != "textweaver" and other.split(".")[1] in FLOORS and floor(other) > floor(name)
    ]
    assert not upward, "a module imports a later floor of the pipeline:\n" + "\n".join(upward)


def test_no_module_imports_itself_round_a_cycle() -> None:
    graph = {name: {o for _, o in imported(path) if o in modules()} for name, path in modules().items()}
    done: set[str] = set()

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            raise AssertionError("import cycle: " + " -> ".join([*trail[trail.index(name) :], name]))
        if name in done:
            return
        for other in graph.get(name, ()):
            if other != "textweaver":
                visit(other, [*trail, name])
        done.add(name)

    for name in graph:
        visit(name, [])
