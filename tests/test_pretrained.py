"""The model shipped with textweaver: `builtin:shakespeare` works wherever a RUN_DIR does."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from textweaver import TextweaverError, load
from textweaver.data.corpus import builtin_corpus_path
from textweaver.run.checkpoint import builtin_model_dir

from conftest import run_cli

# Nats/char of builtin:shakespeare on the held-back last 10% of Tiny Shakespeare, measured 2026-11-22
# (HELD_OUT_MEASURED) with a margin for other CPUs' arithmetic; a damaged or retrained-worse model fails it
HELD_OUT_MEASURED = 1.4517  # (its own training excerpt scores 1.225: the reason not to test on that)
HELD_OUT_BAR = HELD_OUT_MEASURED + 0.02
DATA = Path(__file__).parent / "data"
ENGLISH_MEASURED = 1.1003  # builtin:english on tests/data/pride_heldback.txt, nats/char, rebuilt 2026-12-07
CHINESE_MEASURED = 4.4051  # builtin:chinese on tests/data/xiyouji_heldback.txt, nats/char, rebuilt 2026-12-08
COMMON_ENGLISH = set(
    [
        "the",
        "and",
        "to",
        "of",
        "a",
        "i",
        "in",
        "that",
        "was",
        "he",
        "it",
        "his",
        "her",
        "you",
        "with",
        "as",
        "for",
        "had",
        "is",
        "she",
        "not",
        "at",
        "but",
        "be",
        "my",
        "on",
        "have",
        "him",
        "by",
        "said",
        "all",
        "so",
        "this",
        "which",
        "from",
        "they",
        "me",
        "were",
        "what",
        "no",
        "we",
        "one",
        "there",
        "an",
        "or",
    ]
)


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


# The base models for fine-tuning. Each is scored on an excerpt of its run's validation split (text it never
# trained on; tests/data/README.md says where each comes from), against a figure measured on 2026-12-07
# with a margin for other CPUs' arithmetic, not against the loss stored in its config.json.
BASES = {  # name: (held-back excerpt, nats/char measured on it, a prompt)
    "english": ("pride_heldback.txt", ENGLISH_MEASURED, "It is a truth universally acknowledged"),
    "chinese": ("xiyouji_heldback.txt", CHINESE_MEASURED, "孙悟空"),
}
BASE_MARGIN = 0.02


@pytest.mark.parametrize("name", sorted(BASES))
def test_a_base_model_fits_the_wheel_budget_and_loads_everywhere_a_run_does(name: str) -> None:
    directory = builtin_model_dir(name)
    assert sum(p.stat().st_size for p in directory.iterdir()) <= 40 * 1024 * 1024  # the budget per model
    info = load(f"builtin:{name}").info()
    assert info["model"] == "lstm" and info["level"] == "char"


@pytest.mark.parametrize("name", sorted(BASES))
def test_a_base_model_scores_its_held_back_excerpt_below_the_bar(name: str) -> None:
    excerpt, measured, _ = BASES[name]
    scores = load(f"builtin:{name}").evaluate(DATA / excerpt)
    assert scores["unk_rate"] == 0.0 and scores["chars"] > 5_000
    assert scores["nats_per_token"] < measured + BASE_MARGIN


def test_the_english_base_writes_english(capsys: pytest.CaptureFixture[str]) -> None:
    prompt = BASES["english"][2]
    code, out, _ = run_cli(["generate", "builtin:english", "--prompt", prompt, "--length", "400", "--seed", "1"],
                           capsys)  # fmt: skip
    assert code == 0 and out.startswith(prompt)
    words = [w.strip(".,:;!?'\"-").lower() for w in out[len(prompt) :].split()]
    assert len(words) >= 50
    assert sum(w in COMMON_ENGLISH for w in words) >= 0.3 * len(words), out
    letters = [ch for ch in out if ch.isalpha()]  # typographic quotes (’ “) are English too; letters are Latin
    assert sum(ch.isascii() for ch in letters) >= 0.99 * len(letters), out


def test_the_chinese_base_writes_chinese(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["generate", "builtin:chinese", "--prompt", "孙悟空", "--length", "300", "--seed", "1"],
                           capsys)  # fmt: skip
    assert code == 0 and out.startswith("孙悟空")
    letters = [ch for ch in out if ch.isalpha()]
    assert len(letters) >= 150
    assert sum("\u4e00" <= ch <= "\u9fff" for ch in letters) >= 0.95 * len(letters), out


def test_a_base_model_is_a_fine_tuning_source(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    code, _, err = run_cli(["train", str(DATA / "xiyouji_excerpt.txt"), "--out", str(run), "--init-from",
                            "builtin:chinese", "--max-steps", "3", "--batch-size", "4", "--no-tensorboard",
                            "--no-progress", "--eval-every", "3", "--sample-length", "10"], capsys)  # fmt: skip
    assert code == 0, err
    assert "fine-tuning builtin:chinese (lstm 2x512" in err
    info = load(run).info()
    assert info["init_from"].startswith("builtin:chinese (lstm 2x512") and info["vocab_size"] >= 13_000


def test_weights_stored_in_float16_load_as_float32_and_score_as_before(tmp_path: Path) -> None:
    """How shipped bases fit the wheel (scripts/build_base.py --ship): half the file, the same loss to 1e-3."""
    import shutil

    from textweaver.run import checkpoint

    copy = tmp_path / "shakespeare"  # stored in float32 (the bases are float16 already)
    shutil.copytree(builtin_model_dir("shakespeare"), copy)
    text = builtin_corpus_path("shakespeare").read_text(encoding="utf-8")
    held_back = tmp_path / "held_back.txt"
    held_back.write_text(text[-20_000:], encoding="utf-8")
    before = load(copy).evaluate(held_back)["nats_per_token"]
    size = (copy / checkpoint.WEIGHTS).stat().st_size
    checkpoint.half_weights(copy)
    assert (copy / checkpoint.WEIGHTS).stat().st_size < 0.55 * size
    model = load(copy)  # the checksum in config.json was updated, the weights are float32 again
    assert all(p.dtype == torch.float32 for p in model.model.parameters())
    # what fine-tuning and export read: float32 too (mixing float16 rows into new ones would round them)
    assert {t.dtype for t in checkpoint.load_state(checkpoint.load(copy)).values()} == {torch.float32}
    assert load(copy).evaluate(held_back)["nats_per_token"] == pytest.approx(before, abs=1e-3)


@pytest.mark.parametrize("name", sorted(BASES))
def test_the_shipped_bases_are_stored_in_float16_and_load_as_float32(name: str) -> None:
    from safetensors import safe_open

    from textweaver.run import checkpoint

    with safe_open(str(builtin_model_dir(name) / checkpoint.WEIGHTS), framework="pt") as f:
        assert {f.get_tensor(key).dtype for key in f.keys()} == {torch.float16}  # noqa: SIM118 (not a dict)
    assert all(p.dtype == torch.float32 for p in load(f"builtin:{name}").model.parameters())
