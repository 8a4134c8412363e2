"""Specification of textweaver.training.choose: what a fresh run trains with, the recipe applied to this corpus
and this machine's measured speed, and the user's explicit options always winning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from textweaver.config import ModelConfig
from textweaver.training import choose
from textweaver.training import recipe as autoconfig
from textweaver.training.recipe import Speed

from conftest import SHAKESPEARE, TINY, XIYOUJI


def test_explicit_options_override_the_recipe(tmp_path: Path) -> None:
    from textweaver import train

    options = {k: v for k, v in TINY.items() if k != "preset"}
    train([SHAKESPEARE], tmp_path / "a", max_steps=2, batch_size=6, context=20, lr=1e-3, **options)
    saved = json.loads((tmp_path / "a" / "last" / "config.json").read_text())
    assert saved["model"]["kind"] == "lstm" and saved["model"]["context"] == 20
    assert (saved["train"]["batch_size"], saved["train"]["lr"]) == (6, 1e-3)
    assert "batch 6 x 20" in saved["train"]["extra"]["recipe"]["summary"]

    # the user's rate replaces the recipe's, and the recipe's reason for its own goes with it
    train([XIYOUJI], tmp_path / "c", max_steps=2, lr=1e-3, **options)
    recipe = json.loads((tmp_path / "c" / "last" / "config.json").read_text())["train"]["extra"]["recipe"]
    assert "lr 0.001" in recipe["summary"] and not [r for r in recipe["reasons"] if r.startswith("lr ")]

    train([SHAKESPEARE], tmp_path / "b", max_steps=2, model="gru", **options)
    saved = json.loads((tmp_path / "b" / "last" / "config.json").read_text())["train"]
    assert saved["model"] == "gru" and saved["preset"] == "small" and "recipe" not in saved["extra"]


def test_a_model_named_alone_with_a_time_budget_gets_the_recipes_batch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--model transformer --max-time T (no size, no batch): the preset's 32 x 128 made 42 steps in 40 s at word
    level; the recipe sizes the batch for the steps the budget buys (here a measured speed of 1.2M tokens/s for
    10 s: 12M tokens / 8,000 steps -> 1,500 -> 2,048 tokens a step, 16 x 128), with the preset's size and rate."""
    from textweaver import train

    # the speed, not the clock, decides
    monkeypatch.setattr(choose.calibrate, "measure", lambda *args: Speed(fp32=1.2e6))
    options = {k: v for k, v in TINY.items() if k != "preset"}
    train([SHAKESPEARE], tmp_path / "t", model="transformer", max_time=10, **options)
    saved = json.loads((tmp_path / "t" / "last" / "config.json").read_text())["train"]
    assert (saved["batch_size"], saved["lr"], saved["preset"], saved["context"]) == (16, 3e-3, "small", 128)
    summary = saved["extra"]["recipe"]["summary"]
    assert summary.startswith("transformer 4x128, batch 16 x 128, lr 0.003, warmup 100, fp32")
    assert "batch 16 x 128: the budget buys ~12.0M tokens, ~5,859 steps" in saved["extra"]["recipe"]["reasons"]
    assert f"auto: {summary}" in capsys.readouterr().err
    # a size, a preset or a batch given: the preset's batch, as before
    train([SHAKESPEARE], tmp_path / "p", model="transformer", preset="small", max_time=4, **options)
    saved = json.loads((tmp_path / "p" / "last" / "config.json").read_text())["train"]
    assert saved["batch_size"] == 32 and "recipe" not in saved["extra"]


def test_each_model_is_timed_at_the_batch_it_will_train_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bf16 pays more with bigger steps (a 2x512 LSTM: ~1.0x at 1,024 tokens, 1.24x at 2,048), so a wide
    model - a wider fresh recipe or a fine-tuned base - is timed at the wide models' smallest batch."""
    from textweaver import train

    seen: list[tuple[int, int]] = []

    def measure(config: ModelConfig, batch: int, device: torch.device) -> Speed:
        seen.append((config.n_embd, batch * config.context))
        return Speed(fp32=1e8, bf16=1e8)  # fast enough to buy the widest model in a second

    monkeypatch.setattr(choose.calibrate, "measure", measure)
    train([SHAKESPEARE], tmp_path / "fresh", max_time=1, tensorboard=False, sample_length=20, eval_tokens=4096)
    assert seen == [(256, autoconfig.MIN_BATCH_TOKENS), (512, autoconfig.MIN_BATCH_TOKENS_WIDE)]
    seen.clear()
    train([SHAKESPEARE], tmp_path / "tuned", init_from="builtin:english", max_steps=1, tensorboard=False,
          sample_length=20, eval_tokens=4096)  # fmt: skip
    assert seen == [(512, autoconfig.MIN_BATCH_TOKENS_WIDE)]
