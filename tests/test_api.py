"""The Python API: `train` and `load` as a script would use them."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import textweaver
from textweaver import TextweaverError, load, train

from conftest import SHAKESPEARE, TINY


def test_load_generate_stream_and_batch(trained_run: Path) -> None:
    model = load(trained_run)
    text = model.generate("First", length=25, seed=4, temperature=0.5)
    assert text.startswith("First") and len(text) == 30
    assert "".join(model.stream("First", length=25, seed=4, temperature=0.5)) == text
    many = model.generate_many("First", length=10, num_samples=3, seed=4)
    assert len(many) == 3 and all(len(t) == 15 for t in many)
    assert model.random_prompt(seed=1) in model.checkpoint.prompts


def test_greedy_generation_is_deterministic_without_a_seed(trained_run: Path) -> None:
    model = load(trained_run)
    assert model.generate("the ", length=20, temperature=0) == model.generate("the ", length=20, temperature=0)


def test_info_and_evaluate(trained_run: Path) -> None:
    model = load(trained_run)
    info = model.info()
    assert info["model"] == "transformer" and info["parameters"] > 0 and info["vocab_size"] == len(model.tokenizer)
    scores = model.evaluate(SHAKESPEARE)
    assert scores["tokens"] > 7000 and scores["chars"] == len(SHAKESPEARE.read_text(encoding="utf-8"))
    # a char model's token is one character, so bits/char is nats/token in base 2
    assert scores["bits_per_char"] == pytest.approx(scores["nats_per_token"] / math.log(2))
    assert scores["perplexity"] == pytest.approx(math.exp(scores["nats_per_token"]))


def test_builtin_corpus_is_bundled_and_trainable(tmp_path: Path) -> None:
    result = train("builtin:shakespeare", tmp_path / "b", max_steps=3, eval_tokens=2000, **TINY)
    assert result.steps == 3
    info = load(tmp_path / "b").info()
    assert info["train_tokens"] > 1_000_000  # the whole of Tiny Shakespeare


def test_durations_as_text_and_unknown_options(tmp_path: Path) -> None:
    with pytest.raises(TextweaverError, match="unknown training option"):
        train([SHAKESPEARE], tmp_path / "r", max_step=3)
    with pytest.raises(TextweaverError, match="cannot read"):
        train([SHAKESPEARE], tmp_path / "r", max_time="a while")


def test_public_names() -> None:
    assert set(textweaver.__all__) >= {"load", "train", "TextweaverError", "__version__"}
