"""The package's shape: folders that follow the pipeline, imports that flow one way (docs/architecture.md), and
tests that follow the modules: each module has the test file(s) named after it that import it."""

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


# Every module of the package and the test file(s) that specify it, named after it. None: no test file of its own,
# for the reason given. A module's tests go in its own file: a new module needs an entry here (and its file).
TESTED_BY: dict[str, str | tuple[str, ...] | None] = {
    "textweaver.__main__": None,  # `python -m textweaver`: tests/test_cli.py runs it as a process (an import runs it)
    "textweaver.errors": None,  # the exception class alone: no behaviour of its own
    "textweaver.config": "tests/test_config.py",
    "textweaver.device": None,  # no test of its own yet: --device is refused through the CLI in tests/test_hostile.py
    "textweaver.data.batches": "tests/test_batches.py",
    "textweaver.data.bpe": "tests/test_bpe.py",
    "textweaver.data.corpus": "tests/test_corpus.py",
    "textweaver.data.dataset": "tests/test_dataset.py",
    "textweaver.data.tokenizer": "tests/test_tokenizer.py",
    "textweaver.data.vocab": "tests/test_vocab.py",
    "textweaver.models": "tests/test_models.py",  # the package's own functions: build_model, set_dropout, ...
    "textweaver.models.heads": "tests/test_heads.py",
    "textweaver.models.rnn": "tests/test_rnn.py",
    "textweaver.models.transformer": "tests/test_transformer.py",
    "textweaver.run.checkpoint": "tests/test_checkpoint.py",
    "textweaver.run.lock": "tests/test_lock.py",
    "textweaver.run.log": "tests/test_log.py",
    "textweaver.generation.generator": "tests/test_generator.py",
    "textweaver.generation.sampling": "tests/test_sampling.py",
    "textweaver.training.calibrate": "tests/test_calibrate.py",
    "textweaver.training.choose": "tests/test_choose.py",
    # joins torchrun's process group: tests/test_distributed.py runs it under torchrun, in processes of their own
    "textweaver.training.distributed": None,
    "textweaver.training.evaluate": "tests/test_evaluate.py",
    "textweaver.training.finetune": "tests/test_finetune.py",
    "textweaver.training.hooks": "tests/test_hooks.py",
    "textweaver.training.loop": "tests/test_train.py",
    "textweaver.training.recipe": "tests/test_recipe.py",
    "textweaver.training.schedule": "tests/test_schedule.py",
    "textweaver.training.setup": "tests/test_setup.py",
    "textweaver.training.state": "tests/test_state.py",
    "textweaver.export.onnx": "tests/test_export.py",
    "textweaver.export.check": "tests/test_export.py",
    "textweaver.export.site": "tests/test_export.py",
    "textweaver.export.train_step": "tests/test_train_step.py",
    "textweaver.report.report": "tests/test_report.py",
    "textweaver.app.api": "tests/test_api.py",
    "textweaver.app.cli": "tests/test_cli.py",
    "textweaver.app.options": "tests/test_options.py",
    "textweaver.app.http": "tests/test_http.py",
    "textweaver.app.serve": "tests/test_serve.py",
    "textweaver.app.studio.app": "tests/test_studio.py",
    "textweaver.app.studio.deps": None,  # the routes' shared dependencies: through the studio app in test_studio.py
    "textweaver.app.studio.generate": "tests/test_studio.py",
    "textweaver.app.studio.publish": None,  # routes: requested through the studio app in tests/test_studio.py
    "textweaver.app.studio.runs": "tests/test_studio.py",
    "textweaver.app.studio.texts": None,  # routes: requested through the studio app in tests/test_studio.py
    "textweaver.app.studio.trainer": "tests/test_studio.py",
    "textweaver.app.studio.training": None,  # routes: requested through the studio app in tests/test_studio.py
    "textweaver.app.studio.workspace": "tests/test_studio.py",
}
ROOT = PACKAGE.parent.parent


def specified_modules() -> set[str]:
    """The modules with behaviour to specify: every file, and a package whose __init__ defines a function or class."""
    return {
        name for name, path in modules().items()
        if path.name != "__init__.py"
        or any(isinstance(node, ast.FunctionDef | ast.ClassDef) for node in ast.parse(path.read_text()).body)
    }  # fmt: skip


def imports_module(path: Path, module: str) -> bool:
    """``import M``, ``from M import x`` or ``from P import m`` (P.m == M), anywhere in the file."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name == module for a in node.names):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and (node.module == module or any(f"{node.module}.{a.name}" == module for a in node.names))
        ):
            return True
    return False


def test_every_module_has_its_own_test_file_and_that_file_imports_it() -> None:
    problems = [f"{name}: not in TESTED_BY" for name in sorted(specified_modules() - TESTED_BY.keys())]
    problems += [f"{name}: in TESTED_BY but no such module" for name in sorted(TESTED_BY.keys() - specified_modules())]
    for name, tests in sorted(TESTED_BY.items()):
        for test in (tests,) if isinstance(tests, str) else tests or ():
            if not (ROOT / test).is_file():
                problems.append(f"{name}: its test file {test} does not exist")
            elif not imports_module(ROOT / test, name):
                problems.append(f"{name}: its test file {test} never imports it")
    assert not problems, "tests follow the modules (TESTED_BY in tests/test_architecture.py):\n" + "\n".join(problems)
