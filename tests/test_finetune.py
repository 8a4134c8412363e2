"""Fine-tuning (--init-from): vocabulary extension, weight transfer, the gain, resume and refusals."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from textweaver import load, train
from textweaver.models import build_model
from textweaver.run import checkpoint
from textweaver.training.finetune import Source, load_weights
from textweaver.training.recipe import FINETUNE_MAX_PASSES

from conftest import SHAKESPEARE, XIYOUJI, one_line_error, run_cli

# fine-tuning runs: small settings without model options (the source fixes the model)
FT = {"precision": "fp32", "tensorboard": False, "eval_every": 1000, "sample_length": 20}
SOURCE_STEPS = 300


@pytest.fixture(scope="module")
def halves(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The Shakespeare excerpt cut in two: the source learns the first half; the second half, with a few
    characters the first never has, is the new corpus."""
    text = SHAKESPEARE.read_text(encoding="utf-8")
    folder = tmp_path_factory.mktemp("halves")
    first, second = folder / "first.txt", folder / "second.txt"
    first.write_text(text[: len(text) // 2], encoding="utf-8")
    second.write_text(text[len(text) // 2 :].replace("e", "é", 40).replace("o", "ö", 25) + "\n§ 1\n", encoding="utf-8")
    return first, second


@pytest.fixture(scope="module")
def source(halves: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("source") / "run"
    train([halves[0]], out, model="lstm", layers=1, width=96, context=64, batch_size=16, max_steps=SOURCE_STEPS,
          lr=6e-3, **FT)  # fmt: skip
    return out


@pytest.mark.parametrize("kind", ["lstm", "gru", "transformer", "lstm-adaptive"])
def test_the_source_weights_carry_over_exactly_and_new_rows_start_at_the_average_token(
    tmp_path: Path, kind: str
) -> None:
    options = {"model": kind.split("-")[0], "layers": 1, "width": 32, "heads": 2 if kind == "transformer" else None,
               "max_steps": 5, "softmax": "adaptive" if "adaptive" in kind else "auto", **FT}  # fmt: skip
    train([SHAKESPEARE], tmp_path / "src", **options)
    ckpt = checkpoint.load(tmp_path / "src")
    old = len(ckpt.tokenizer)
    config = dataclasses.replace(ckpt.model_config, vocab_size=old + 3)
    torch.manual_seed(0)
    model = build_model(config)
    counts = np.full(old + 3, 100)
    counts[old:] = [1000, 10, 1]
    assert load_weights(model, Source("src", ckpt), counts) == 3
    model.eval()
    original = ckpt.build_model()
    x = torch.from_numpy(ckpt.tokenizer.encode("To be, or not to be: that is the question."))[None]
    with torch.no_grad():
        before, after = original(x)[0], model(x)[0]
    if "adaptive" in kind:  # log-probabilities: the appended tokens share the last cluster's mass
        assert torch.allclose(before[..., : config.cutoffs[0]], after[..., : config.cutoffs[0]], atol=1e-6)
    else:  # logits: identical for every token the source knows
        assert torch.allclose(before, after[..., :old], atol=1e-6)
    embed = model.embed.weight if hasattr(model, "embed") else model.wte.weight
    assert torch.allclose(embed[old:], embed[:old].mean(0).expand(3, -1))
    if kind in ("lstm", "gru"):  # biases follow the new corpus's frequencies, on the source's scale
        bias = model.head.bias.detach()
        assert bias[old] > bias[old + 1] > bias[old + 2]
        assert float(bias[old] - bias[old + 1]) == pytest.approx(np.log(1001 / 11), rel=1e-4)


def test_fine_tuning_beats_training_from_scratch_on_the_same_steps(source: Path, halves: tuple[Path, Path],
                                                                   tmp_path: Path) -> None:  # fmt: skip
    steps = {"max_steps": 40, "batch_size": 16, "lr": 3e-3, **FT}
    tuned = train([halves[1]], tmp_path / "tuned", init_from=str(source), **steps)
    scratch = train([halves[1]], tmp_path / "scratch", model="lstm", layers=1, width=96, context=64, **steps)
    assert tuned.val_loss is not None and scratch.val_loss is not None
    assert tuned.val_loss < 0.85 * scratch.val_loss  # the source's 300 steps on related text are worth having
    saved = json.loads((tmp_path / "tuned" / "last" / "config.json").read_text(encoding="utf-8"))
    record = saved["train"]["extra"]["init_from"]
    src_vocab = checkpoint.load(source).tokenizer.vocab
    tuned_vocab = checkpoint.load(tmp_path / "tuned").tokenizer.vocab
    new = set(halves[1].read_text(encoding="utf-8")) - set(src_vocab)
    assert {"é", "ö", "§"} <= new and tuned_vocab[: len(src_vocab)] == src_vocab
    assert set(tuned_vocab[len(src_vocab) :]) == new and len(tuned_vocab) == len(src_vocab) + len(new)
    assert record["source"] == str(source) and record["added_tokens"] == len(new) and record["model"] == "lstm 1x96"
    assert record["weights_sha256"] == checkpoint.weights_digest(checkpoint.resolve(source))
    assert saved["model"]["n_embd"] == 96 and saved["train"]["init_from"] == str(source)
    assert load(tmp_path / "tuned").info()["init_from"] == f"{source} (lstm 1x96, {len(src_vocab)} tokens, +{len(new)})"
    text = load(tmp_path / "tuned").generate(prompt="KING", length=40, seed=1)
    assert text.startswith("KING") and len(text) == 44


def test_a_fine_tuning_run_resumes_to_exactly_the_uninterrupted_result(
    source: Path, halves: tuple[Path, Path], tmp_path: Path
) -> None:
    options = {"init_from": str(source), "batch_size": 16, "dropout": 0.1, "seed": 4, **FT}
    whole = train([halves[1]], tmp_path / "whole", max_steps=30, **options)
    train([halves[1]], tmp_path / "split", max_steps=12, **options)
    second = train([halves[1]], tmp_path / "split", resume=True, max_steps=30, **options)
    assert second.resumed and second.steps == 30
    assert second.val_loss == pytest.approx(whole.val_loss, abs=1e-6)


def test_a_fine_tuned_chinese_model_learns_new_characters(tmp_path: Path) -> None:
    text = XIYOUJI.read_text(encoding="utf-8")
    (tmp_path / "a.txt").write_text(text[: len(text) // 2], encoding="utf-8")
    (tmp_path / "b.txt").write_text(text[len(text) // 2 :], encoding="utf-8")
    train([tmp_path / "a.txt"], tmp_path / "src", model="lstm", layers=1, width=64, max_steps=20, **FT)
    train([tmp_path / "b.txt"], tmp_path / "ft", init_from=str(tmp_path / "src"), max_steps=20, **FT)
    src, ft = checkpoint.load(tmp_path / "src").tokenizer, checkpoint.load(tmp_path / "ft").tokenizer
    new = set(ft.vocab[len(src) :])
    assert new and new == set((tmp_path / "b.txt").read_text(encoding="utf-8")) - set(src.vocab)
    # over a thousand characters: the rows are updated rarely, and the fine-tuning rate is the larger one
    from textweaver.training import recipe as autoconfig

    assert len(ft) >= autoconfig.LARGE_VOCAB
    assert json.loads((tmp_path / "ft" / "last" / "config.json").read_text())["train"]["lr"] == (
        autoconfig.FINETUNE_LR_LARGE_VOCAB
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--width", "128"], r"--width was given with --init-from .* fixes the model: drop --width"),
        (["--preset", "tiny"], r"--preset was given with --init-from"),
        (["--level", "word"], r"--level word differs from --init-from .* trained with --level char"),
        (["--lowercase"], r"--lowercase True differs from --init-from"),
        (["--vocab-size", "50"], r"--vocab-size is for word-level fine-tuning"),
    ],
)
def test_options_that_contradict_the_source_are_refused_in_one_line_and_nothing_is_written(
    source: Path, halves: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
    message: str,
) -> None:  # fmt: skip
    out = tmp_path / "r"
    args = ["train", str(halves[1]), "--out", str(out), "--init-from", str(source), "--max-steps", "3", *extra]
    one_line_error(*run_cli(args, capsys), message)
    assert not out.exists()


def test_a_missing_damaged_or_newer_source_is_refused_in_one_line(
    source: Path, halves: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def refused(src: Path | str, message: str) -> None:
        out = tmp_path / "r"
        args = ["train", str(halves[1]), "--out", str(out), "--init-from", str(src), "--max-steps", "3"]
        one_line_error(*run_cli(args, capsys), message)
        assert not out.exists()

    refused(tmp_path / "nowhere", "no such run directory")
    refused("builtin:klingon", "unknown built-in model builtin:klingon")
    copy = tmp_path / "copy"
    ckpt = checkpoint.resolve(source)
    for name in ("best", "last"):
        (copy / name).mkdir(parents=True)
        for f in (ckpt.parent / name).iterdir():
            (copy / name / f.name).write_bytes(f.read_bytes())
    for name in ("best", "last"):
        weights = copy / name / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-100])
    refused(copy, "corrupted or truncated")
    config_path = copy / "best" / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["format_version"] = checkpoint.FORMAT_VERSION + 1
    config_path.write_text(json.dumps(config), encoding="utf-8")
    refused(copy, "newer than this textweaver reads")


def test_fine_tuning_without_a_learning_rate_uses_the_fine_tuning_recipe(
    source: Path, halves: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from textweaver.training import recipe as autoconfig

    train([halves[1]], tmp_path / "r", init_from=str(source), max_steps=3, **FT)
    err = capsys.readouterr().err
    assert f"fine-tuning {source} (lstm 1x96" in err and "; the corpus adds " in err
    saved = json.loads((tmp_path / "r" / "last" / "config.json").read_text(encoding="utf-8"))
    assert saved["train"]["lr"] == autoconfig.FINETUNE_LR
    assert "fine-tuning" in saved["train"]["extra"]["recipe"]["reasons"][0]


SQLITE = Path(__file__).parent / "data" / "sqlite_excerpt.c"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (SHAKESPEARE.read_text(encoding="utf-8"), "english"),
        (XIYOUJI.read_text(encoding="utf-8"), "chinese"),
        (SQLITE.read_text(encoding="utf-8"), None),  # code: Latin letters, but 9% of it symbols
        ("Привет, как дела? Это русский текст, не английский.", None),
        ("こんにちは、これは日本語の文です。ひらがなとカタカナがあります。", None),
        ("   \n\n ", None),
    ],
)
def test_the_script_of_a_text_decides_its_default_base(text: str, expected: str | None) -> None:
    from textweaver.training.finetune import script

    assert script(text) == expected


def test_a_plain_run_on_english_prose_starts_from_the_english_base_and_none_opts_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from textweaver.config import TrainConfig
    from textweaver.data.corpus import CorpusOptions
    from textweaver.training.finetune import default_source

    def source_of(paths: list[Path], config: TrainConfig, given: set[str]) -> tuple[str | None, str]:
        return default_source(paths, config, given, CorpusOptions())

    assert source_of([SHAKESPEARE], TrainConfig(), set()) == (
        "builtin:english",
        "the corpus is mostly english prose",
    )
    assert source_of([XIYOUJI], TrainConfig(max_time=120), set())[0] == "builtin:chinese"
    # model options, another level, a short budget or code keep random weights
    assert source_of([XIYOUJI], TrainConfig(model="gru"), {"model"})[0] is None
    assert source_of([XIYOUJI], TrainConfig(context=32), {"context"})[0] is None
    assert source_of([SHAKESPEARE], TrainConfig(level="word"), {"level"})[0] is None
    assert source_of([SHAKESPEARE], TrainConfig(max_time=20), {"max_time"})[0] is None
    assert source_of([SQLITE], TrainConfig(), set())[0] is None
    quick = ["--max-steps", "2", "--no-tensorboard", "--sample-length", "5", "--eval-tokens", "4096"]
    code, out, err = run_cli(["train", str(SHAKESPEARE), "--out", str(tmp_path / "ft"), *quick], capsys)
    assert code == 0, err
    assert "starting from builtin:english: the corpus is mostly english prose (--init-from none" in out + err
    assert checkpoint.load(tmp_path / "ft" / "last").train_config["init_from"] == "builtin:english"
    code, out, err = run_cli(["train", str(SHAKESPEARE), "--out", str(tmp_path / "scratch"), "--init-from", "none",
                              *quick], capsys)  # fmt: skip
    assert code == 0, err
    assert "starting from" not in out + err
    assert checkpoint.load(tmp_path / "scratch" / "last").train_config["init_from"] is None


def test_a_fine_tuning_budget_that_buys_many_passes_trains_three_and_stops(
    source: Path,
    halves: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A base fine-tuned for many passes over a small corpus overfits it: a --max-time that buys more than
    FINETUNE_MAX_PASSES ends after that many (an epoch budget, which --epochs overrides). The excerpt is far
    too short for the rule's step floor, which is lowered here."""
    monkeypatch.setattr("textweaver.training.recipe.FINETUNE_MIN_STEPS", 1)
    tuned = train([halves[1]], tmp_path / "tuned", init_from=str(source), max_time=600, **FT)
    assert tuned.stopped == "epochs" and tuned.elapsed < 300
    saved = json.loads((tmp_path / "tuned" / "last" / "config.json").read_text(encoding="utf-8"))
    assert saved["train"]["epochs"] == FINETUNE_MAX_PASSES and saved["train"]["max_time"] == 600
    assert tuned.tokens >= FINETUNE_MAX_PASSES * saved["corpus"]["train_tokens"]
    assert f"{FINETUNE_MAX_PASSES:g} passes: the budget buys ~" in capsys.readouterr().err
    given = train([halves[1]], tmp_path / "given", init_from=str(source), max_time=600, epochs=1, **FT)
    assert given.stopped == "epochs" and given.tokens < 2 * saved["corpus"]["train_tokens"]  # the user's --epochs
