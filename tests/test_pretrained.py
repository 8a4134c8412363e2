"""The model shipped with textweaver: `builtin:shakespeare` works wherever a RUN_DIR does."""

from __future__ import annotations

from pathlib import Path

import pytest

from textweaver import TextweaverError, load
from textweaver.checkpoint import builtin_model_dir
from textweaver.corpus import builtin_corpus_path

from conftest import run_cli

# Nats/char of builtin:shakespeare on the held-back last 10% of Tiny Shakespeare, measured 2026-11-22
# (HELD_OUT_MEASURED) with a margin for other CPUs' arithmetic; a damaged or retrained-worse model fails it
HELD_OUT_MEASURED = 1.4517  # (its own training excerpt scores 1.225: the reason not to test on that)
HELD_OUT_BAR = HELD_OUT_MEASURED + 0.02


def test_the_builtin_model_is_small() -> None:
    directory = builtin_model_dir("shakespeare")
    size = sum(p.stat().st_size for p in directory.iterdir())
    assert size <= 5 * 1024 * 1024
    info = load("builtin:shakespeare").info()
    assert info["model"] == "lstm" and info["vocab_size"] == 66


def test_it_scores_held_back_shakespeare_below_the_bar(tmp_path: Path) -> None:
    """Scored on text it never trained on (its run's validation split, the last 10% of the corpus), not on
    its own training text, and against a figure measured here, not the one stored in its config.json."""
    text = builtin_corpus_path("shakespeare").read_text(encoding="utf-8")
    held_back = tmp_path / "held_back.txt"
    held_back.write_text(text[len(text) - round(len(text) * 0.1) :], encoding="utf-8")  # its val split, exactly
    scores = load("builtin:shakespeare").evaluate(held_back)
    assert scores["unk_rate"] == 0.0 and scores["chars"] > 100_000
    assert scores["nats_per_token"] < HELD_OUT_BAR


def test_it_generates_shakespeare_like_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["generate", "builtin:shakespeare", "--prompt", "ROMEO:", "--length", "300", "--seed", "1"],
                           capsys)  # fmt: skip
    assert code == 0
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 300 + 1
    words = out.split()
    assert sum(w.strip(".,:;!?'").lower() in {"the", "and", "to", "i", "of", "my", "you", "a"} for w in words) >= 5


def test_an_unknown_builtin_model_is_refused() -> None:
    with pytest.raises(TextweaverError, match="unknown built-in model builtin:homer"):
        load("builtin:homer")
