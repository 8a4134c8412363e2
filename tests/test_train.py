"""Training: learns, logs, checkpoints, reproduces, resumes exactly, stops cleanly."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from textweaver import load, train
from textweaver.errors import TextweaverError
from textweaver.training import loop
from textweaver.training.state import RunState

from conftest import SHAKESPEARE, TINY, XIYOUJI, run_cli


def evaluations(run: Path) -> list[dict[str, Any]]:
    """The metrics records of the evaluations (the progress records between them carry no val_loss)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "val_loss" in r]


def test_progress_is_recorded_between_evaluations_without_validation_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    from textweaver.run import log as runlog

    monkeypatch.setattr(sys.modules["textweaver.training.hooks"], "PROGRESS_EVERY_S", 0.0)  # every step
    assert runlog.PROGRESS_EVERY_S > 0
    train([SHAKESPEARE], tmp_path / "r", max_steps=6, **{**TINY, "eval_every": 3})
    records = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    progress = [r for r in records if "val_loss" not in r]
    assert [r["step"] for r in progress] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["train_loss"]) and r["lr"] > 0 and r["tokens_per_s"] > 0 for r in progress)
    assert [r["step"] for r in evaluations(tmp_path / "r")] == [3, 6]


def test_a_time_budget_without_eval_every_evaluates_by_time_within_a_share_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--max-time alone: ~15 evaluations over the budget (not one per 500 steps: 3 points in a 1-minute run),
    spaced so that evaluating takes at most EVAL_SHARE of the time."""
    assert loop.eval_gap(60, 0.1) == 4.0  # cheap evaluations: every budget / EVALS_PER_BUDGET
    assert loop.eval_gap(60, 2.0) == pytest.approx(18.0)  # 2 s each: 2 s in every 20 s, 10%
    # a loaded test machine makes evaluations slow: a looser share keeps the points without changing the rule
    monkeypatch.setattr(loop, "EVAL_SHARE", 0.5)
    options = {**{k: v for k, v in TINY.items() if k != "eval_every"}, "threads": 1}  # 2 threads crawl on a busy CPU
    result = train([SHAKESPEARE], tmp_path / "r", max_time=8, **options)
    steps = [r["step"] for r in evaluations(tmp_path / "r")]
    assert len(steps) >= 6 and len(steps) > result.steps // 500 + 1 and steps == sorted(set(steps)), steps
    assert "evaluating every 0.533 s or more, at most 50% of the time" in capsys.readouterr().err


def test_the_first_evaluation_by_time_waits_when_its_estimated_cost_would_take_over_the_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A word-level transformer scoring 92,776 validation tokens at ~1,000 tokens/s: an evaluation 1/15 into a
    40 s budget took ~40 s and left 2 training steps. Before the first evaluation its cost is estimated from the
    training speed; here scoring is made to look 10^6 times slower than it is, so none comes before the end."""
    monkeypatch.setattr(loop, "EVAL_SPEEDUP", 1e-6)
    options = {**{k: v for k, v in TINY.items() if k != "eval_every"}, "threads": 1}
    result = train([SHAKESPEARE], tmp_path / "r", max_time=3, **options)
    assert [r["step"] for r in evaluations(tmp_path / "r")] == [result.steps]  # the final one only


def test_a_folder_of_many_short_files_is_summarized_in_config_json_and_info(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Thousands of short documents (reviews, posts): config.json and `info` give the folder, how many files and
    their size, not every name; a few files are still named one by one."""
    from textweaver.data.corpus import STORED_FILES

    reviews = tmp_path / "reviews"
    reviews.mkdir()
    lines = SHAKESPEARE.read_text(encoding="utf-8").splitlines(keepends=True)
    for i in range(STORED_FILES + 1):
        (reviews / f"review_{i:05d}.txt").write_text("".join(lines[i % 100 : i % 100 + 3]), encoding="utf-8")
    size = sum(f.stat().st_size for f in reviews.iterdir())
    train([reviews], tmp_path / "r", max_steps=2, **TINY)
    corpus = json.loads((tmp_path / "r" / "last" / "config.json").read_text(encoding="utf-8"))["corpus"]
    (folder,) = corpus["files"]
    assert folder["path"] == str(reviews) and folder["files"] == STORED_FILES + 1 and folder["bytes"] == size
    assert folder["tokens"] == corpus["train_tokens"] + corpus["val_tokens"] and corpus["cache_key"]
    code, out, err = run_cli(["info", str(tmp_path / "r")], capsys)
    assert code == 0, err
    (line,) = [line for line in out.splitlines() if line.strip().startswith("corpus:")]
    summary = f"{reviews}/ ({STORED_FILES + 1:,} files, {size / 1e3:.1f} kB, {folder['tokens']:,} tokens)"
    assert line.strip() == f"corpus: {summary}"

    train([SHAKESPEARE, reviews / "review_00001.txt"], tmp_path / "few", max_steps=1, **TINY)
    code, out, err = run_cli(["info", str(tmp_path / "few")], capsys)
    assert f"corpus: {SHAKESPEARE}, {reviews / 'review_00001.txt'}\n" in out


def test_training_lowers_the_validation_loss_and_logs_it(tmp_path: Path) -> None:
    result = train([SHAKESPEARE], tmp_path / "r", max_steps=120, **{**TINY, "eval_every": 40})
    records = evaluations(tmp_path / "r")
    assert [r["step"] for r in records] == [40, 80, 120]
    assert records[-1]["val_loss"] < records[0]["val_loss"] < math.log(60)
    assert result.val_bpc == pytest.approx(records[-1]["val_bpc"])
    # char model: bits/char = nats/token / ln 2
    assert records[-1]["val_bpc"] == pytest.approx(records[-1]["val_loss"] / math.log(2))
    samples = [json.loads(line) for line in (tmp_path / "r" / "samples.jsonl").read_text().splitlines()]
    assert [(r["step"], list(r["samples"])) for r in samples] == [(s, ["0.2", "0.5", "1.0"]) for s in (40, 80, 120)]


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


def test_resume_keeps_the_runs_settings_and_takes_only_the_options_given(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    train([SHAKESPEARE], run, max_steps=6, patience=30, **{**TINY, "eval_every": 2})
    capsys.readouterr()
    train([SHAKESPEARE], run, resume=True, max_steps=10)  # patience and eval_every not given: kept
    saved = json.loads((run / "last" / "config.json").read_text())["train"]
    assert (saved["patience"], saved["eval_every"], saved["max_steps"]) == (30, 2, 10)
    assert (saved["sample_length"], saved["tensorboard"]) == (TINY["sample_length"], False)
    assert [r["step"] for r in evaluations(run)] == [2, 4, 6, 8, 10]
    err = capsys.readouterr().err
    assert "--max-steps: 6 -> 10" in err and "--patience" not in err and "--eval-every" not in err

    train([SHAKESPEARE], run, resume=True, max_steps=12, patience=50)  # given: it wins
    assert json.loads((run / "last" / "config.json").read_text())["train"]["patience"] == 50
    assert "--patience: 30 -> 50" in capsys.readouterr().err


def test_the_cli_resume_keeps_options_that_were_not_on_its_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "r"
    tiny = ["--preset", "tiny", "--precision", "fp32", "--no-tensorboard", "--sample-length", "10"]
    code, _, err = run_cli(["train", str(SHAKESPEARE), "--out", str(run), "--max-steps", "4", "--patience", "3",
                            "--eval-every", "2", *tiny], capsys)  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(["train", str(SHAKESPEARE), "--out", str(run), "--resume", "--max-steps", "6"], capsys)
    assert code == 0, err
    saved = json.loads((run / "last" / "config.json").read_text())["train"]
    assert (saved["patience"], saved["eval_every"], saved["sample_length"], saved["tensorboard"]) == (3, 2, 10, False)


def test_a_longer_budget_on_resume_keeps_the_learning_rate_decaying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--max-steps counts the whole run; raising it on a resume must not send the rate back up the cosine."""
    run = tmp_path / "r"
    real_stop_reason = RunState.stop_reason

    def interrupt_at_5(self: RunState, *args: object) -> str:
        return "interrupted" if self.step == 5 else real_stop_reason(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RunState, "stop_reason", interrupt_at_5)
    train([SHAKESPEARE], run, max_steps=10, **{**TINY, "eval_every": 1, "warmup_steps": 0, "lr": 1e-2})
    monkeypatch.undo()
    train([SHAKESPEARE], run, resume=True, max_steps=20)  # half way through 10 steps, now 20 in all
    lrs = [r["lr"] for r in evaluations(run)]
    assert len(lrs) == 20
    assert all(b <= a + 1e-12 for a, b in itertools.pairwise(lrs)), lrs
    assert lrs[5] < lrs[4] and lrs[-1] == pytest.approx(1e-3, rel=0.05)  # decays on, to the floor at the new end

    train([SHAKESPEARE], run, resume=True, max_steps=24)  # a finished run given more: it stays at the floor
    lrs = [r["lr"] for r in evaluations(run)]
    assert len(lrs) == 24 and lrs[-4:] == pytest.approx([1e-3] * 4, rel=0.05)


def test_encoding_auto_reads_a_gb18030_novel_and_says_what_it_chose(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gb = tmp_path / "novel.txt"
    gb.write_bytes(XIYOUJI.read_text(encoding="utf-8").encode("gb18030"))
    train([gb], tmp_path / "gb", max_steps=2, encoding="auto", **TINY)
    assert re.search(rf"--encoding auto: {re.escape(str(gb))} reads as (gb18030|gbk|gb2312)", capsys.readouterr().err)
    train([XIYOUJI], tmp_path / "utf8", max_steps=2, **TINY)
    assert load(tmp_path / "gb").tokenizer == load(tmp_path / "utf8").tokenizer  # the same characters


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


def test_divergence_stops_with_a_message_and_never_saves_nan_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run checkpoints at step 5, then its rate becomes infinite at step 8: the weights turn NaN, the
    run stops with advice, and last/ still holds the finite weights of step 5."""

    real = loop.learning_rate
    monkeypatch.setattr(loop, "learning_rate", lambda step, *a: math.inf if step >= 8 else real(step, *a))
    run = tmp_path / "r"
    with pytest.raises(TextweaverError, match="diverged.*lower --lr"):
        train([SHAKESPEARE], run, max_steps=200, grad_clip=0, **{**TINY, "eval_every": 5})
    saved = load(run / "last")
    assert saved.info()["metrics"]["step"] == 5
    assert all(p.isfinite().all() for p in saved.model.parameters())


def test_patience_stops_when_validation_stops_improving(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = train([SHAKESPEARE], tmp_path / "r", max_steps=400, patience=1, lr=1e-7, warmup_steps=1,
                   **{**TINY, "eval_every": 5})  # fmt: skip
    assert result.stopped == "patience" and result.steps < 400
    capsys.readouterr()
    assert train([SHAKESPEARE], tmp_path / "r", resume=True).stopped == "already-complete"
    assert "--patience 1 ran out" in capsys.readouterr().err  # not "reached its budget"


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
