"""Specification of textweaver.training.hooks: the budget rule that turns dropout on for a run of many passes."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from textweaver import train
from textweaver.training.state import RunState

from conftest import SHAKESPEARE, TINY


def test_a_budget_of_many_passes_over_the_corpus_turns_dropout_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The budget rule: 3 s at 1M tokens/s buy far more than 10 passes over 7,161 tokens, so dropout 0.2 is
    chosen (and recorded, so --resume and the checkpoint keep it); a step budget or an explicit value is
    left alone. The speed is fixed and the decision taken at step 1, so a busy machine cannot change it."""
    monkeypatch.setattr(importlib.import_module("textweaver.training.hooks"), "AUTO_DROPOUT_AFTER_STEPS", 1)
    monkeypatch.setattr(RunState, "tokens_per_s", lambda self: 1e6)
    train([SHAKESPEARE], tmp_path / "long", max_time=3, **TINY)
    assert "passes over the corpus: dropout 0.2" in capsys.readouterr().err
    saved = json.loads((tmp_path / "long" / "last" / "config.json").read_text())
    assert saved["model"]["dropout"] == 0.2 and saved["train"]["dropout"] == 0.2
    train([SHAKESPEARE], tmp_path / "steps", max_steps=40, **TINY)
    train([SHAKESPEARE], tmp_path / "chosen", max_time=3, dropout=0.0, **TINY)
    for run in ("steps", "chosen"):
        assert json.loads((tmp_path / run / "last" / "config.json").read_text())["model"]["dropout"] == 0.0
    assert "dropout 0.2" not in capsys.readouterr().err


def test_a_wider_model_gets_dropout_from_fewer_passes() -> None:
    """~6 passes: too few for a 2x256 to memorise the corpus, enough for a 2x384 (on Journey to the
    West at ~8 passes the 2x384 reached 4.402 nats/char without dropout and 4.192 with it)."""
    import time

    from rich.console import Console

    from textweaver.config import TrainConfig
    from textweaver.training.distributed import Dist
    from textweaver.training.hooks import dropout_for_budget

    def chosen(width: int, passes: float) -> float:
        # 1 s into a 100 s budget at 10,000 tokens/s: ~1M tokens bought in all
        s = RunState(tokens=10_000, segment_tokens=10_000, segment_start=time.monotonic() - 1.0)
        return dropout_for_budget(TrainConfig(max_time=100.0), s, int(1_000_000 / passes), width, Dist(), Console())

    assert [chosen(w, 6.0) for w in (128, 256, 384, 512)] == [0.0, 0.0, 0.2, 0.2]
    assert chosen(128, 12.0) == chosen(256, 12.0) == 0.2  # narrower models keep the 10-pass threshold
    assert chosen(512, 2.0) == 0.0 and chosen(512, 3.0) == 0.2
