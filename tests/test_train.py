"""Training: learns, logs, checkpoints, reproduces, resumes exactly, stops cleanly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from textweaver import load, train
from textweaver.errors import TextweaverError
from textweaver.run_state import RunState

from conftest import SHAKESPEARE, TINY, XIYOUJI


def test_training_lowers_the_validation_loss_and_logs_it(tmp_path: Path) -> None:
    result = train([SHAKESPEARE], tmp_path / "r", max_steps=120, **{**TINY, "eval_every": 40})
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [40, 80, 120]
    assert records[-1]["val_loss"] < records[0]["val_loss"] < math.log(60)
    assert result.val_bpc == pytest.approx(records[-1]["val_bpc"])
    # char model: bits/char = nats/token / ln 2
    assert records[-1]["val_bpc"] == pytest.approx(records[-1]["val_loss"] / math.log(2))
    samples = (tmp_path / "r" / "samples.txt").read_text()
    assert samples.count("--- temperature") == 9  # 3 evaluations x 3 temperatures


def test_tensorboard_scalars_are_written(tmp_path: Path) -> None:
    train([SHAKESPEARE], tmp_path / "r", max_steps=10, **{**TINY, "tensorboard": True})
    assert list((tmp_path / "r" / "tensorboard").glob("events.out.tfevents.*"))


def test_the_same_seed_gives_the_same_run(tmp_path: Path) -> None:
    a = train([SHAKESPEARE], tmp_path / "a", max_steps=30, seed=5, **TINY)
    b = train([SHAKESPEARE], tmp_path / "b", max_steps=30, seed=5, **TINY)
    c = train([SHAKESPEARE], tmp_path / "c", max_steps=30, seed=6, **TINY)
    assert a.val_loss == b.val_loss != c.val_loss


@pytest.mark.parametrize("model", ["transformer", "lstm"])
def test_an_interrupted_run_resumes_to_exactly_the_uninterrupted_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    options = {**TINY, "model": model, "max_steps": 40, "dropout": 0.1, "seed": 3}
    whole = train([SHAKESPEARE], tmp_path / "whole", **options)

    real_stop_reason = RunState.stop_reason

    def interrupt_at_17(self: RunState, *args: object) -> str:
        return "interrupted" if self.step == 17 else real_stop_reason(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RunState, "stop_reason", interrupt_at_17)
    first = train([SHAKESPEARE], tmp_path / "split", **options)
    assert first.stopped == "interrupted" and first.steps == 17
    monkeypatch.undo()
    second = train([SHAKESPEARE], tmp_path / "split", resume=True, **options)
    assert second.resumed and second.steps == 40
    assert second.val_loss == pytest.approx(whole.val_loss, abs=1e-6)


def test_resume_without_a_checkpoint_starts_fresh_and_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    result = train([SHAKESPEARE], tmp_path / "r", resume=True, max_steps=5, **TINY)
    assert not result.resumed and result.steps == 5
    assert "starting a fresh run" in capsys.readouterr().err


def test_resuming_a_finished_run_does_nothing(tmp_path: Path) -> None:
    train([SHAKESPEARE], tmp_path / "r", max_steps=5, **TINY)
    again = train([SHAKESPEARE], tmp_path / "r", resume=True, max_steps=5, **TINY)
    assert again.stopped == "already-complete" and again.steps == 5


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    train([SHAKESPEARE], tmp_path / "r", max_steps=5, **TINY)
    with pytest.raises(TextweaverError, match="--resume"):
        train([SHAKESPEARE], tmp_path / "r", max_steps=5, **TINY)


def test_resume_with_a_different_corpus_is_refused(tmp_path: Path) -> None:
    train([SHAKESPEARE], tmp_path / "r", max_steps=5, **TINY)
    with pytest.raises(TextweaverError, match="different vocabulary"):
        train([XIYOUJI], tmp_path / "r", resume=True, max_steps=10, **TINY)


def test_divergence_stops_with_a_message_and_never_saves_nan_weights(tmp_path: Path) -> None:
    with pytest.raises(TextweaverError, match="diverged.*lower --lr"):
        train([SHAKESPEARE], tmp_path / "r", max_steps=200, lr=1e6, warmup_steps=1, grad_clip=0, **TINY)
    if (tmp_path / "r" / "last").exists():
        model = load(tmp_path / "r" / "last").model
        assert all(p.isfinite().all() for p in model.parameters())


def test_patience_stops_when_validation_stops_improving(tmp_path: Path) -> None:
    result = train([SHAKESPEARE], tmp_path / "r", max_steps=400, patience=1, lr=1e-7, warmup_steps=1,
                   **{**TINY, "eval_every": 5})  # fmt: skip
    assert result.stopped == "patience" and result.steps < 400


def test_word_level_reports_bits_per_character(tmp_path: Path) -> None:
    result = train([SHAKESPEARE], tmp_path / "w", level="word", vocab_size=300, max_steps=30, **TINY)
    model = load(tmp_path / "w")
    assert model.tokenizer.level == "word" and len(model.tokenizer) == 300
    assert result.val_bpc is not None and result.val_loss is not None
    assert result.val_bpc < result.val_loss / math.log(2)  # a word token holds several characters


def test_chinese_text_trains_and_generates_chinese(tmp_path: Path) -> None:
    train([XIYOUJI], tmp_path / "x", max_steps=40, **TINY)
    text = load(tmp_path / "x").generate("孙悟空", length=30, seed=1)
    assert text.startswith("孙悟空") and len(text) == 33
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in text[3:]) > 5


def test_corpus_shorter_than_the_context_is_refused(tmp_path: Path) -> None:
    short = tmp_path / "short.txt"
    short.write_text("just a few words here\n" * 3)
    with pytest.raises(TextweaverError, match="fewer than the context of 256"):
        train([short], tmp_path / "r", context=256, max_steps=5, **TINY)


def test_a_budget_of_many_passes_over_the_corpus_turns_dropout_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The budget rule: 3 s buy far more than 10 passes over 7,161 tokens, so dropout 0.2 is chosen
    (and recorded, so --resume and the checkpoint keep it); a step budget or an explicit value is left alone."""
    train([SHAKESPEARE], tmp_path / "long", max_time=3, **TINY)
    assert "passes over the corpus: dropout 0.2" in capsys.readouterr().err
    saved = json.loads((tmp_path / "long" / "last" / "config.json").read_text())
    assert saved["model"]["dropout"] == 0.2 and saved["train"]["dropout"] == 0.2
    train([SHAKESPEARE], tmp_path / "steps", max_steps=40, **TINY)
    train([SHAKESPEARE], tmp_path / "chosen", max_time=3, dropout=0.0, **TINY)
    for run in ("steps", "chosen"):
        assert json.loads((tmp_path / run / "last" / "config.json").read_text())["model"]["dropout"] == 0.0
    assert "dropout 0.2" not in capsys.readouterr().err


def test_set_dropout_reaches_every_dropout_of_a_built_model() -> None:
    import torch

    from textweaver.config import ModelConfig
    from textweaver.models import build_model, set_dropout

    for kind in ("lstm", "transformer"):
        model = build_model(ModelConfig(kind=kind, vocab_size=10, n_layer=2, n_embd=16, n_head=2, context=8))
        set_dropout(model, 0.3)
        assert model.config.dropout == 0.3
        rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        rates += [m.dropout for m in model.modules() if hasattr(m, "dropout") and isinstance(m.dropout, float)]
        assert rates and all(r == 0.3 for r in rates)
