"""The automatic recipe: decisions from facts alone (no training), and how a run records them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textweaver.config import ModelConfig
from textweaver.training import recipe as autoconfig
from textweaver.training.recipe import FINETUNE_MAX_PASSES, Facts, Speed, finetune_passes

from conftest import TINY, XIYOUJI

CHINESE_2MIN = Facts(train_tokens=662_263, vocab_size=4_506, shortlist=896, budget_s=119.0, device="cpu")
BF16_FAST = Speed(fp32=7_000.0, bf16=15_000.0)


def recipe_for(facts: Facts, speed: Speed, precision: str | None = None) -> autoconfig.Recipe:
    return autoconfig.choose_schedule(autoconfig.choose_model(facts, speed), facts, speed, precision)


def test_a_large_vocabulary_in_two_minutes_gets_many_small_steps_in_bf16() -> None:
    recipe = recipe_for(CHINESE_2MIN, BF16_FAST)
    assert (recipe.model, recipe.layers, recipe.width) == ("lstm", 2, 256)
    assert recipe.precision == "bf16" and recipe.lr == autoconfig.LR_LARGE_VOCAB > autoconfig.LR
    assert recipe.cutoffs == []  # a character vocabulary keeps the full softmax
    # ~1.8M tokens bought: about 1,000 tokens a step gives ~1,700 steps instead of ~440 at 4,096
    assert recipe.batch_size * recipe.context == 1024
    assert any("bf16: 2.1x" in r for r in recipe.reasons)
    assert any("steps" in r for r in recipe.reasons)


def test_bf16_is_used_only_where_it_measured_faster() -> None:
    slow_bf16 = Speed(fp32=10_000.0, bf16=9_000.0)
    recipe = recipe_for(CHINESE_2MIN, slow_bf16)
    assert recipe.precision == "fp32"
    assert any("not faster" in r for r in recipe.reasons)
    assert recipe_for(CHINESE_2MIN, Speed(fp32=10_000.0)).precision == "fp32"  # no bf16 on this device
    assert recipe_for(CHINESE_2MIN, BF16_FAST, precision="fp32").precision == "fp32"  # the user's word wins


def test_the_batch_grows_with_the_budget_and_the_model_grows_with_the_tokens_bought() -> None:
    short = recipe_for(CHINESE_2MIN, BF16_FAST)  # ~1.8M tokens
    ten = recipe_for(Facts(662_263, 4_506, 896, 600.0, "cpu"), BF16_FAST)  # ~9M tokens
    hours = recipe_for(Facts(662_263, 4_506, 896, 4 * 3600.0, "cpu"), BF16_FAST)
    assert short.batch_size <= ten.batch_size <= hours.batch_size
    assert [r.width for r in (short, ten, hours)] == [256, 384, 512]
    assert short.lr > ten.lr > hours.lr  # wider models take smaller steps
    assert any("enough for a wider model" in r for r in ten.reasons)
    assert any(r.startswith("lr 0.01: the 2x384 takes smaller steps") for r in ten.reasons)
    # a wider model never steps with fewer than MIN_BATCH_TOKENS_WIDE tokens
    assert ten.batch_size * ten.context >= autoconfig.MIN_BATCH_TOKENS_WIDE > short.batch_size * short.context
    # the width follows the tokens bought, not the corpus: English gets the same sizes
    english = [recipe_for(Facts(1_000_000, 65, 30, b, "cpu"), Speed(fp32=40_000.0)).width for b in (90, 600, 7200)]
    assert english == [256, 384, 512]


def test_the_large_vocabulary_rate_falls_once_the_budget_buys_many_passes() -> None:
    short = recipe_for(CHINESE_2MIN, BF16_FAST)  # ~1.8M tokens, under 3 passes: the big steps pay
    # a small Chinese corpus: ~4.5M tokens (still the small width) are ~22 passes
    many = recipe_for(Facts(200_000, 3_000, 700, 300.0, "cpu"), BF16_FAST)
    assert short.lr == autoconfig.LR_LARGE_VOCAB and many.width == short.width
    assert autoconfig.LR < many.lr < autoconfig.LR_LARGE_VOCAB
    lr_reasons = [r for r in many.reasons if r.startswith("lr ")]
    assert len(lr_reasons) == 1 and "passes" in lr_reasons[0] and f"lr {many.lr:g}" in lr_reasons[0]
    # a small vocabulary keeps its rate however many passes
    english = recipe_for(Facts(200_000, 65, 30, 300.0, "cpu"), BF16_FAST)
    assert english.lr == autoconfig.LR


def test_the_fine_tuning_rate_falls_once_the_budget_buys_many_passes() -> None:
    """Fine-tuning a 2x512 on Alice (133K characters): 1 minute is ~6 passes and keeps the measured rate;
    5 minutes are ~25 and take smaller steps, as measured (1e-3 1.185, 4e-4 1.137 nats/char)."""
    base = ModelConfig(kind="lstm", vocab_size=129, n_layer=2, n_embd=512, context=64)
    speed = Speed(fp32=8_000.0, bf16=11_000.0)

    def tuned(budget: float | None, vocab: int = 129) -> autoconfig.Recipe:
        facts = Facts(train_tokens=133_000, vocab_size=vocab, shortlist=40, budget_s=budget, device="cpu")
        return autoconfig.choose_schedule(autoconfig.finetune_model(base, vocab), facts, speed)

    assert tuned(60).lr == autoconfig.FINETUNE_LR and tuned(None).lr == autoconfig.FINETUNE_LR
    five = tuned(300)
    assert 3e-4 < five.lr < 6e-4
    lr_reasons = [r for r in five.reasons if r.startswith("lr ")]
    assert len(lr_reasons) == 1 and "fine-tuning with ~25 passes" in lr_reasons[0]
    assert 1e-3 < tuned(300, vocab=5_000).lr < autoconfig.FINETUNE_LR_LARGE_VOCAB  # the large-vocabulary rate too


def test_fine_tuning_takes_the_largest_batch_whatever_the_budget() -> None:
    """A trained model takes fewer, less noisy steps: measured side by side, 64 x 64 beat the budget rule's 32 x 64
    on all four held-out novels (bench/results/finetune_batch_*.md)."""
    base = ModelConfig(kind="lstm", vocab_size=13_000, n_layer=2, n_embd=512, context=64)
    facts = Facts(train_tokens=387_000, vocab_size=13_000, shortlist=1200, budget_s=180.0, device="cpu")
    speed = Speed(fp32=5_000.0, bf16=6_800.0)
    tuned = autoconfig.choose_schedule(autoconfig.finetune_model(base, 13_000), facts, speed)
    assert tuned.batch_size * tuned.context == autoconfig.MAX_BATCH_TOKENS
    assert any(r.startswith("batch 64 x 64: fine-tuning") for r in tuned.reasons), tuned.reasons
    fresh = autoconfig.choose_schedule(autoconfig.choose_model(facts, speed), facts, speed)
    assert fresh.batch_size * fresh.context < autoconfig.MAX_BATCH_TOKENS  # the same budget from scratch: more steps


def test_a_step_budget_gets_the_largest_batch_and_full_warmup() -> None:
    recipe = recipe_for(Facts(100_000, 65, 30, None, "cpu"), BF16_FAST)
    assert recipe.batch_size * recipe.context == autoconfig.MAX_BATCH_TOKENS
    assert recipe.warmup_steps == autoconfig.MAX_WARMUP


@settings(max_examples=200, deadline=None)
@given(
    fp32=st.floats(1.0, 1e8), ratio=st.floats(0.0, 5.0), budget=st.one_of(st.none(), st.floats(1.0, 1e6)),
    vocab=st.integers(2, 300_000), world=st.integers(1, 16),
)  # fmt: skip
def test_every_recipe_is_trainable(fp32: float, ratio: float, budget: float | None, vocab: int, world: int) -> None:
    facts = Facts(10**6, vocab, max(1, vocab // 3), budget, "cpu", world_size=world)
    recipe = recipe_for(facts, Speed(fp32=fp32, bf16=fp32 * ratio))
    tokens = recipe.batch_size * recipe.context
    assert recipe.batch_size % world == 0 and recipe.batch_size >= world
    assert autoconfig.MIN_BATCH_TOKENS <= tokens < autoconfig.MAX_BATCH_TOKENS + world * recipe.context
    assert autoconfig.MIN_WARMUP <= recipe.warmup_steps <= autoconfig.MAX_WARMUP
    assert recipe.precision in ("fp32", "bf16") and recipe.lr > 0 and recipe.reasons


def test_training_without_model_options_prints_records_and_keeps_the_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from textweaver import train

    options = {k: v for k, v in TINY.items() if k not in ("preset", "precision")}
    train([XIYOUJI], tmp_path / "r", max_time=30, max_steps=3, **options)
    err = capsys.readouterr().err
    assert "auto: lstm 2x256" in err and "steps" not in err.split("auto:")[0]
    saved = json.loads((tmp_path / "r" / "last" / "config.json").read_text())["train"]
    assert saved["model"] == "lstm" and saved["width"] == 256 and saved["context"] == autoconfig.CONTEXT
    assert saved["precision"] in ("fp32", "bf16") and saved["warmup_steps"] is not None
    recipe = saved["extra"]["recipe"]
    assert recipe["summary"].startswith("lstm 2x256") and recipe["reasons"]

    train([XIYOUJI], tmp_path / "r", resume=True, max_time=30, max_steps=5, **options)
    resumed = json.loads((tmp_path / "r" / "last" / "config.json").read_text())["train"]
    for key in ("model", "width", "layers", "context", "batch_size", "lr", "warmup_steps", "precision", "extra"):
        assert resumed[key] == saved[key], key


def test_the_output_layer_follows_the_vocabulary_and_the_users_choice() -> None:
    words = Facts(10**6, 10_000, 1_500, 600.0, "cpu")
    assert autoconfig.choose_head(words, "lstm")[0] == [1536, 3072]
    assert autoconfig.choose_head(CHINESE_2MIN, "lstm") == ([], "")
    forced = Facts(662_263, 4_506, 896, 119.0, "cpu", softmax="adaptive")
    cutoffs, reason = autoconfig.choose_head(forced, "gru")
    assert cutoffs == [896, 1792] and "896 most frequent" in reason
    assert autoconfig.choose_head(Facts(10**6, 10_000, 1_500, 600.0, "cpu", softmax="full"), "lstm")[0] == []
    assert autoconfig.choose_head(words, "transformer")[0] == []
    small_vocab = Facts(10**6, 65, 30, 600.0, "cpu", softmax="adaptive")
    assert autoconfig.choose_head(small_vocab, "lstm")[0] == [32]  # the shortlist is at most half the vocabulary


def test_an_interrupted_bf16_adaptive_softmax_run_resumes_to_exactly_the_uninterrupted_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from textweaver import train
    from textweaver.training.state import RunState

    options = {**TINY, "model": "lstm", "softmax": "adaptive", "precision": "bf16", "max_steps": 30, "seed": 3}
    whole = train([XIYOUJI], tmp_path / "whole", **options)
    real_stop_reason = RunState.stop_reason

    def interrupt_at_11(self: RunState, *args: object) -> str:
        return "interrupted" if self.step == 11 else real_stop_reason(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RunState, "stop_reason", interrupt_at_11)
    assert train([XIYOUJI], tmp_path / "split", **options).steps == 11
    monkeypatch.undo()
    second = train([XIYOUJI], tmp_path / "split", resume=True, **options)
    assert second.steps == 30 and second.val_loss == whole.val_loss
    saved = json.loads((tmp_path / "split" / "last" / "config.json").read_text())
    assert saved["train"]["precision"] == "bf16" and saved["model"]["cutoffs"]


def test_the_pass_limit_applies_to_time_budgets_that_buy_more_than_it() -> None:
    speed = Speed(fp32=5_000.0, bf16=9_000.0)  # the faster one counts
    facts = Facts(train_tokens=400_000, vocab_size=13_000, shortlist=1_200, budget_s=300.0, device="cpu")
    passes, why = finetune_passes(facts, speed)  # ~6.8 passes
    assert passes == FINETUNE_MAX_PASSES and "the budget buys ~7 over the corpus" in why
    assert finetune_passes(dataclasses.replace(facts, budget_s=120.0), speed) == (None, "")  # ~2.7 passes
    assert finetune_passes(dataclasses.replace(facts, budget_s=None), speed) == (None, "")  # a step or epoch budget
    # Alice in Wonderland's 117K tokens: 3 passes would be 86 steps, under FINETUNE_MIN_STEPS: the time budget stays
    short = dataclasses.replace(facts, train_tokens=117_000, budget_s=120.0)  # ~9 passes
    assert finetune_passes(short, speed) == (None, "")
