"""The model shipped with textweaver: `builtin:shakespeare` works wherever a RUN_DIR does."""

from __future__ import annotations

import pytest

from textweaver import TextweaverError, load
from textweaver.checkpoint import builtin_model_dir

from conftest import run_cli


def test_the_builtin_model_is_small_and_well_trained() -> None:
    directory = builtin_model_dir("shakespeare")
    size = sum(p.stat().st_size for p in directory.iterdir())
    assert size <= 5 * 1024 * 1024
    info = load("builtin:shakespeare").info()
    assert info["model"] == "lstm" and info["vocab_size"] == 66
    assert info["metrics"]["best_val_loss"] < 1.6  # nats/char on Tiny Shakespeare's validation split


def test_it_generates_shakespeare_like_text(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["generate", "builtin:shakespeare", "--prompt", "ROMEO:", "--length", "300", "--seed", "1"],
                           capsys)  # fmt: skip
    assert code == 0
    assert out.startswith("ROMEO:") and len(out) == len("ROMEO:") + 300 + 1
    words = out.split()
    assert sum(w.strip(".,:;!?'").lower() in {"the", "and", "to", "i", "of", "my", "you", "a"} for w in words) >= 5


def test_it_scores_shakespeare_well() -> None:
    from conftest import SHAKESPEARE

    scores = load("builtin:shakespeare").evaluate(SHAKESPEARE)
    assert scores["bits_per_char"] < 2.6 and scores["unk_rate"] == 0.0


def test_an_unknown_builtin_model_is_refused() -> None:
    with pytest.raises(TextweaverError, match="unknown built-in model builtin:homer"):
        load("builtin:homer")
