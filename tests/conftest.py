"""Shared fixtures: the real-text excerpts in tests/data and a small trained run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"
SHAKESPEARE = DATA / "shakespeare_8k.txt"
XIYOUJI = DATA / "xiyouji_excerpt.txt"
SQLITE = DATA / "sqlite_excerpt.c"

# Small and fast settings for runs made in tests.
TINY = {"preset": "tiny", "tensorboard": False, "eval_every": 1000, "sample_length": 20}


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
