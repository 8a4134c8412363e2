"""Hostile input: odd corpora, prompts and option values are either handled or refused with one line.

Cases already covered elsewhere: empty, binary and invalid UTF-8 corpora (test_cli.py), corrupted
checkpoints (test_checkpoint.py, test_cli.py), the tokenizer round trip (test_tokenizer.py).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from textweaver import load, train
from textweaver.config import ModelConfig
from textweaver.data.tokenizer import CharTokenizer
from textweaver.errors import TextweaverError
from textweaver.generation.generator import MAX_SAMPLES, GenerationRequest, Generator
from textweaver.generation.sampling import SamplingOptions
from textweaver.models import build_model

from conftest import PRINT_OWN_PEAK_KIB, SHAKESPEARE, TINY, one_line_error, own_peak_kib, run_cli

MIXED = (
    "孙悟空道：“师父，前面有山。”👩‍👩‍👧 🇯🇵 👍🏽\n"  # CJK, ZWJ family, flag, skin tone
    "שלום עולם, مرحبا بالعالم!\n"  # right-to-left Hebrew and Arabic
    "e\u0301 a\u0308 n\u0303 Z\u0351\u0352\u0353 ﬁ ① ﻿x\n"  # combining marks, ligature, circled digit, inner BOM
)


# ---- corpora


def test_zero_byte_files_in_a_directory_add_nothing_and_break_nothing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a.txt", "b.txt", "d.txt"):
        (corpus / name).write_bytes(b"")
    (corpus / "c.txt").write_bytes(SHAKESPEARE.read_bytes())
    result = train([corpus], tmp_path / "run", max_steps=3, **TINY)
    assert result.steps == 3
    info = load(tmp_path / "run").info()
    assert [Path(p).name for p in info["corpus"]] == ["a.txt", "b.txt", "c.txt", "d.txt"]
    assert info["train_tokens"] == 7161  # the text of c.txt alone (its last 10% is validation)


def test_a_directory_of_only_zero_byte_files_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a.txt", "b.txt"):
        (corpus / name).write_bytes(b"")
    args = ["train", str(corpus), "--out", str(tmp_path / "run"), "--max-steps", "3", "--no-tensorboard"]
    one_line_error(*run_cli(args, capsys), "empty")
    assert not (tmp_path / "run" / "last").exists()


@pytest.mark.parametrize("kind", ["lstm", "transformer"])
def test_a_corpus_of_one_repeated_character_trains_and_generates_it(kind: str, tmp_path: Path) -> None:
    corpus = tmp_path / "a.txt"
    corpus.write_text("a" * 6000)
    result = train([corpus], tmp_path / "run", model=kind, max_steps=30, **TINY)
    assert result.val_loss is not None and result.val_loss < 0.05
    model = load(tmp_path / "run")
    assert model.generate("a", 50, seed=1) == "a" * 51
    assert model.generate(None, 5, seed=1).endswith("aaaaa")


def test_mixed_scripts_train_generate_and_round_trip(tmp_path: Path) -> None:
    corpus = tmp_path / "mixed.txt"
    corpus.write_text(MIXED * 80, encoding="utf-8")
    train([corpus], tmp_path / "run", max_steps=40, **TINY)
    model = load(tmp_path / "run")
    vocab = set(model.tokenizer.vocab)
    for prompt in ("👩‍👩‍👧", "שלום", "e\u0301", "孙悟空", MIXED):
        text = model.generate(prompt, 60, seed=3)
        assert text.startswith(prompt) and len(text) == len(prompt) + 60
        assert set(text[len(prompt) :]) <= vocab  # only characters of the corpus, never <unk>
        text.encode("utf-8")  # always valid text
    held_out = MIXED[::-1]  # the same characters in an order never seen
    (tmp_path / "held_out.txt").write_text(held_out, encoding="utf-8")
    scores = model.evaluate(tmp_path / "held_out.txt")
    # the same figure another way: every character read in one pass of the whole text (evaluate reads
    # the file in chunks and scores it in windows of the context, carrying the LSTM's state)
    assert model.checkpoint.model_config.kind == "lstm"
    ids = torch.from_numpy(model.tokenizer.encode(held_out)).long()  # (T,)
    with torch.inference_mode():
        logits, _ = model.model(ids[None, :-1])  # (1, T-1, V)
    nats = float(torch.nn.functional.cross_entropy(logits[0].float(), ids[1:]))
    assert scores["unk_rate"] == 0.0 and scores["chars"] == len(held_out) and scores["tokens"] == len(ids) - 1
    assert scores["nats_per_token"] == pytest.approx(nats, rel=1e-5)
    assert scores["bits_per_char"] == pytest.approx(nats / (len(held_out) / len(ids)) / math.log(2), rel=1e-5)


# ---- prompts


@pytest.fixture(scope="module")
def rnn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lstm"
    train([SHAKESPEARE], out, model="lstm", max_steps=30, **TINY)
    return out


@pytest.mark.parametrize("which", ["rnn", "transformer"])
def test_a_prompt_of_only_unknown_characters_still_generates(
    which: str, rnn_run: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = load(rnn_run if which == "rnn" else trained_run)
    prompt = "€€ 孙悟空 🙂"  # none of these are in the Shakespeare excerpt
    text = model.generate(prompt, 40, seed=1)
    assert text.startswith(prompt) and len(text) == len(prompt) + 40
    assert "\ufffd" not in text[len(prompt) :]
    assert capsys.readouterr().err.count("warning") == 1


PEAK_RSS_SCRIPT = f"""
import sys
from textweaver import load
model = load(sys.argv[1])
prompt = open(sys.argv[2], encoding="utf-8").read()[:5000] * int(sys.argv[3])
texts = model.generate_many(prompt, 20, num_samples=8, seed=2)
assert len(texts) == 8 and all(t.startswith(prompt) and len(t) == len(prompt) + 20 for t in texts)
{PRINT_OWN_PEAK_KIB}
"""


@pytest.mark.parametrize("which", ["rnn", "transformer"])
def test_a_prompt_far_longer_than_the_context_is_read_in_bounded_memory(
    which: str, rnn_run: Path, trained_run: Path
) -> None:
    """8 samples from a 1,000,000-character prompt peak within a few MB of a 5,000-character one (reading
    the prompt in one pass would hold 8 x 1M x width activations: gigabytes)."""

    def peak_kib(repeats: int) -> int:
        run = rnn_run if which == "rnn" else trained_run
        done = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, str(run), str(SHAKESPEARE), str(repeats)],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return own_peak_kib(done.stdout)

    short, long = peak_kib(1), peak_kib(200)
    assert long - short < 120 * 1024, f"peak memory grew by {(long - short) // 1024} MiB with the prompt"


def test_an_rnn_reads_a_long_prompt_in_chunks_exactly_as_in_one_pass(
    rnn_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load(rnn_run)
    prompt = SHAKESPEARE.read_text()[:3000]
    whole = model.generate(prompt, 80, temperature=0.0)
    monkeypatch.setattr("textweaver.generation.generator.PROMPT_CHUNK", 7)
    assert model.generate(prompt, 80, temperature=0.0) == whole


def test_generation_longer_than_the_history_buffer_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """The history buffer compacts itself when full; the text must not change because of it."""
    g = tiny_generator("transformer", context=16)
    request = GenerationRequest(prompt="abc", length=300, seed=4, sampling=SamplingOptions(repetition_penalty=1.3))
    expected = g.generate(request)
    monkeypatch.setattr("textweaver.generation.generator.HISTORY_SLACK", 5)
    assert g.generate(request) == expected


def test_a_prompt_that_is_not_valid_unicode_is_refused(rnn_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A prompt with undecodable bytes (Linux hands them to Python as lone surrogates)."""
    args = ["generate", str(rnn_run), "--prompt", os.fsdecode(b"caf\xe9"), "--length", "5"]
    one_line_error(*run_cli(args, capsys), r"--prompt is not valid text.*position 3")


# ---- absurd option values


@pytest.mark.parametrize(("args", "message"), [
    (["--length", "99999999999"], "--length must be between 1 and"),
    (["--num-samples", "100000000"], f"--num-samples must be between 1 and {MAX_SAMPLES}"),
    (["--temperature", "1e-300"], "--temperature must be >= 0"),
    (["--temperature", "inf"], "--temperature must be >= 0"),
    (["--temperature", "nan"], "--temperature must be >= 0"),
    (["--top-k", "0"], "--top-k must be at least 1"),
    (["--top-p", "nan"], r"--top-p must be in \(0, 1\]"),
    (["--repetition-penalty", "0"], "--repetition-penalty must be positive"),
    (["--seed", "-1"], "--seed must be between 0 and"),
    (["--seed", str(2**70)], "--seed must be between 0 and"),
    (["--device", "tpu"], "--device"),
])  # fmt: skip
def test_absurd_generation_options_are_refused(
    args: list[str], message: str, rnn_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one_line_error(*run_cli(["generate", str(rnn_run), "--prompt", "a", *args], capsys), message)


def test_an_enormous_top_k_is_the_whole_vocabulary(rnn_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["generate", str(rnn_run), "--prompt", "a", "--length", "5", "--top-k", str(10**12),
                              "--seed", "1"], capsys)  # fmt: skip
    assert code == 0, err
    assert out.startswith("a") and len(out.rstrip("\n")) == 6


@pytest.mark.parametrize(("args", "message"), [
    (["--width", "10000000"], r"needs about [\d.]+ GiB .* only [\d.]+ GiB is free"),
    (["--layers", "5", "--width", "200000"], r"needs about [\d.]+ GiB"),
    (["--batch-size", "1000000000"], r"needs about [\d.]+ GiB"),
    (["--model", "transformer", "--context", "1000000"], "fewer than the context|needs about"),
    (["--max-time", "0"], "--max-time must be a positive duration"),
    (["--max-steps", "-3"], "--max-steps must be positive"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--val-fraction", "1.5"], "--val-fraction must be between 0 and 1"),
    (["--dropout", "1"], r"--dropout must be in \[0, 1\)"),
    (["--eval-every", "0"], "--eval-every must be positive"),
    (["--threads", "0"], "--threads must be positive"),
    (["--threads", "100000"], "--threads must be between 1 and"),
    (["--context", "1"], "--context must be at least 2"),
    (["--level", "byte"], "--level"),
    (["--normalize", "NFX"], "NFX"),
    (["--encoding", "no-such-codec"], "no-such-codec"),
])  # fmt: skip
def test_absurd_training_options_are_refused_before_any_work(
    args: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["train", str(SHAKESPEARE), "--out", str(out), "--max-steps", "2", "--no-tensorboard", *args]
    one_line_error(*run_cli(argv, capsys), message)
    assert not (out / "last").exists()


# ---- fuzzing generate's inputs


def tiny_generator(kind: str, context: int = 24) -> Generator:
    torch.manual_seed(0)
    vocab = ["<unk>", *"abcdefgh \n.", "孙", "👍"]
    cfg = ModelConfig(kind=kind, vocab_size=len(vocab), n_layer=1, n_embd=16, n_head=2, context=context)
    return Generator(build_model(cfg), CharTokenizer(vocab), ["abc.", "孙👍"], torch.device("cpu"))


GENERATORS = {kind: tiny_generator(kind) for kind in ("lstm", "gru", "transformer")}
any_float = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from([0.0, 1e-300, 1e-7, 1.0, 3.0])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(sorted(GENERATORS)),
    prompt=st.none() | st.text(st.characters(exclude_categories=()), max_size=80) | st.text("abc孙👍\n", max_size=80),
    length=st.integers(-3, 60),
    num_samples=st.integers(-1, 4),
    seed=st.none() | st.integers(-(2**64), 2**64),
    stop=st.none() | st.text(max_size=3),
    temperature=any_float,
    top_k=st.none() | st.integers(-2, 10**9),
    top_p=st.none() | any_float,
    repetition_penalty=st.sampled_from([1.0, 1.3]) | any_float,
)
def test_generate_either_returns_well_formed_text_or_refuses_with_one_line(
    kind: str, prompt: str | None, length: int, num_samples: int, seed: int | None, stop: str | None,
    temperature: float, top_k: int | None, top_p: float | None, repetition_penalty: float,
) -> None:  # fmt: skip
    g = GENERATORS[kind]
    sampling = SamplingOptions(temperature, top_k, top_p, repetition_penalty)
    request = GenerationRequest(prompt, length, num_samples, seed, stop, sampling)
    try:
        texts = g.generate(request, warn=False)
    except TextweaverError as e:
        assert "\n" not in str(e) and str(e)
        return
    start = prompt or ""
    assert len(texts) == num_samples
    for text in texts:
        text.encode("utf-8")
        assert text.startswith(start)
        generated = len(text) - len(start) if prompt else None
        if stop is None and generated is not None:
            assert generated == length  # a char model: one character per token, <unk> never generated
        if stop is not None and prompt:
            assert stop not in text[len(start) :]


# ---- a 500 MB file on one line


TRAIN_PEAK_SCRIPT = f"""
import sys
from textweaver.app.cli import main
try:
    main(["train", *sys.argv[1:]])
except SystemExit as e:
    assert not e.code, e.code
{PRINT_OWN_PEAK_KIB}
"""


def _train_peak_rss_mib(tmp_path: Path, megabytes: int) -> float:
    """Peak RSS of `textweaver train` (encoding included) on a file of one line of ``megabytes`` MiB."""
    block = SHAKESPEARE.read_text().replace("\n", " ").encode() * 64
    corpus = tmp_path / f"line{megabytes}.txt"
    with corpus.open("wb") as f:
        for _ in range(megabytes * 2**20 // len(block) + 1):
            f.write(block)
    out = tmp_path / f"run{megabytes}"
    args = [str(corpus), "--out", str(out), "--preset", "tiny", "--max-steps", "2", "--no-tensorboard",
            "--no-progress", "--eval-tokens", "20000"]  # fmt: skip
    done = subprocess.run([sys.executable, "-c", TRAIN_PEAK_SCRIPT, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert load(out).info()["train_tokens"] > 0.85 * megabytes * 2**20
    corpus.unlink()
    return own_peak_kib(done.stdout) / 1024


@pytest.mark.slow
def test_a_500_mb_single_line_corpus_trains_in_bounded_memory(tmp_path: Path) -> None:
    """Memory must not grow with the corpus: a 500 MB line is read in 8 MB chunks and memory-mapped,
    so it peaks where a 50 MB one does."""
    small, large = _train_peak_rss_mib(tmp_path, 50), _train_peak_rss_mib(tmp_path, 500)
    assert large < 1024, f"peak RSS {large:.0f} MiB for a 500 MiB corpus"
    assert large - small < 128, f"peak RSS grew from {small:.0f} MiB (50 MB corpus) to {large:.0f} MiB (500 MB)"
