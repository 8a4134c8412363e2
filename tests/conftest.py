"""Shared fixtures: the real-text excerpts in tests/data and a small trained run."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
SHAKESPEARE = DATA / "shakespeare_8k.txt"
XIYOUJI = DATA / "xiyouji_excerpt.txt"
SQLITE = DATA / "sqlite_excerpt.c"

# Small and fast settings for runs made in tests.
# float32: runs that are compared with each other must not depend on a speed measurement.
TINY = {"preset": "tiny", "precision": "fp32", "tensorboard": False, "eval_every": 1000, "sample_length": 20}


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny transformer trained briefly on the Shakespeare excerpt (shared, read-only)."""
    from textweaver import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train([SHAKESPEARE], out, model="transformer", max_steps=60, **TINY)
    return out


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process: exit status, stdout, stderr."""
    from textweaver.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def one_line_error(code: int, out: str, err: str, message: str) -> None:
    """The CLI's refusal: exit 2, nothing on stdout, one `textweaver: error:` line matching ``message``."""
    assert code == 2, err
    assert out == "" and err.count("\n") == 1 and err.startswith("textweaver: error: "), err
    assert "Traceback" not in err
    assert re.search(message, err), err
