"""The Python API: `train` and `load` as a script would use them."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import textweaver
from textweaver import TextweaverError, load, train
from textweaver.app.api import TextModel

from conftest import SHAKESPEARE, TINY, run_cli


def test_load_generate_stream_and_batch(trained_run: Path) -> None:
    model = load(trained_run)
    assert isinstance(model, TextModel)
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


def test_evaluate_scores_every_file_of_a_folder_and_weighs_the_totals_by_tokens(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder is resolved as `train` resolves it (--glob *.txt, recursively); each file is scored on its
    own, as it scores alone, and the totals are the token-weighted sums."""
    text = SHAKESPEARE.read_text(encoding="utf-8")
    folder = tmp_path / "held_out"
    (folder / "more").mkdir(parents=True)
    (folder / "a.txt").write_text(text[:3000], encoding="utf-8")
    (folder / "more" / "b.txt").write_text(text[3000:7000], encoding="utf-8")
    (folder / "notes.md").write_text("not a .txt file, not scored", encoding="utf-8")
    model = load(trained_run)
    scores = model.evaluate(folder)
    files = scores["files"]
    assert [Path(f["file"]).name for f in files] == ["a.txt", "b.txt"]
    for f in files:
        alone = model.evaluate(f["file"])
        assert f["nats_per_token"] == pytest.approx(alone["nats_per_token"]) and f["tokens"] == alone["tokens"]
    assert scores["tokens"] == sum(f["tokens"] for f in files) and scores["chars"] == 7000
    weighted = sum(f["nats_per_token"] * f["tokens"] for f in files) / scores["tokens"]
    assert scores["nats_per_token"] == pytest.approx(weighted)
    assert model.evaluate([folder / "a.txt", folder / "more" / "b.txt"])["nats_per_token"] == pytest.approx(weighted)

    code, out, _ = run_cli(["eval", str(trained_run), str(folder / "a.txt"), str(folder / "more"), "--json"], capsys)
    assert code == 0 and [Path(f["file"]).name for f in json.loads(out)["files"]] == ["a.txt", "b.txt"]
    code, out, _ = run_cli(["eval", str(trained_run), str(folder)], capsys)
    assert code == 0 and "a.txt" in out and "b.txt" in out and "bits_per_char" in out


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
