"""The command line: the documented contract end to end, and one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from textweaver import train
from textweaver.app.cli import app
from textweaver.config import PRESETS, ModelConfig, TrainConfig, parse_duration
from textweaver.generation.generator import GenerationRequest
from textweaver.generation.sampling import SamplingOptions
from textweaver.models import build_model

from conftest import SHAKESPEARE, TINY, XIYOUJI, one_line_error, run_cli


def textweaver(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "textweaver", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


@pytest.mark.slow
def test_train_generate_eval_info_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "run"
    trained = textweaver("train", str(SHAKESPEARE), "--out", str(out), "--preset", "tiny", "--max-steps", "40",
                         "--eval-every", "20", "--sample-length", "20")  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout == ""  # training talks on stderr only
    assert "val" in trained.stderr and "bits/char" in trained.stderr

    generated = textweaver("generate", str(out), "--prompt", "ROMEO:", "--length", "80", "--seed", "1")
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout.startswith("ROMEO:") and len(generated.stdout) == len("ROMEO:") + 80 + 1  # + newline
    again = textweaver("generate", str(out), "--prompt", "ROMEO:", "--length", "80", "--seed", "1")
    assert again.stdout == generated.stdout

    evaluated = textweaver("eval", str(out), str(SHAKESPEARE), "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    scores = json.loads(evaluated.stdout)
    assert set(scores) == {"nats_per_token", "bits_per_char", "perplexity", "tokens", "chars", "unk_rate", "files"}
    assert [f["file"] for f in scores["files"]] == [str(SHAKESPEARE)]
    assert scores["chars"] == len(SHAKESPEARE.read_text()) and scores["unk_rate"] == 0.0
    assert 0 < scores["bits_per_char"] < 6

    described = textweaver("info", str(out / "last"))
    assert described.returncode == 0 and "lstm" in described.stdout and "val_loss" in described.stdout


def test_generate_options_json_stream_and_samples(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["generate", str(trained_run), "-p", "To be", "-n", "30", "--seed", "3", "--json",
                            "--num-samples", "3", "--top-k", "5", "--top-p", "0.9"], capsys)  # fmt: skip
    assert code == 0
    payload = json.loads(out)
    assert len(payload["samples"]) == 3 and all(len(s) == 35 and s.startswith("To be") for s in payload["samples"])
    assert payload["settings"]["top_k"] == 5 and payload["settings"]["temperature"] == 0.8

    code, streamed, _ = run_cli(
        ["generate", str(trained_run), "-p", "To be", "-n", "30", "--seed", "3", "--stream"], capsys
    )
    code2, plain, _ = run_cli(["generate", str(trained_run), "-p", "To be", "-n", "30", "--seed", "3"], capsys)
    assert code == code2 == 0 and streamed == plain

    code, many, _ = run_cli(["generate", str(trained_run), "-n", "10", "--num-samples", "2", "--seed", "1"], capsys)
    assert code == 0 and many.count("\n-----\n") == 1


def test_no_prompt_starts_from_a_corpus_sentence(trained_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompts = json.loads((trained_run / "best" / "prompts.json").read_text())
    code, out, _ = run_cli(["generate", str(trained_run), "-n", "10", "--seed", "9"], capsys)
    assert code == 0 and out[: -10 - 1] in prompts


def test_every_command_documents_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    """Each option's own flag, followed by its metavar and then its whole help text, its own."""
    group = typer.main.get_command(app)
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        code, out, _ = run_cli([name, "--help"], capsys)
        assert code == 0 and "Usage:" in out
        text = " ".join(out.split())  # the help is wrapped to the terminal's width
        for param in command.params:
            assert getattr(param, "help", None), f"{name}: {param.name} has no help text"
            flag = max(param.opts, key=len)
            help_text = " ".join(param.help.split())
            # `--flag <int>`, `--flag / --no-flag`, an argument as `files... <list[str]>`
            row = rf"(?<![\w-]){re.escape(flag)}(?:\.\.\.| / --[\w-]+)?(?: <[^>]+>)? {re.escape(help_text)}"
            assert re.search(row, text), f"{name} --help does not show {flag} followed by its help: {help_text!r}"
        helps = [" ".join(param.help.split()) for param in command.params]
        assert len(set(helps)) == len(helps), f"{name}: two options share one help text"


def test_presets_lists_parameter_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Every preset's row, its sizes as declared and the parameters of the model it builds (65 characters)."""
    code, out, _ = run_cli(["presets"], capsys)
    assert code == 0
    header, *lines = out.splitlines()
    assert header.split()[:9] == ["model", "preset", "layers", "width", "heads", "context", "batch", "lr", "params"]
    rows = {(line.split()[0], line.split()[1]): line.split()[2:9] for line in lines}
    assert set(rows) == {(kind, name) for kind, table in PRESETS.items() for name in table}
    for (kind, name), (layers, width, heads, context, batch, lr, params) in rows.items():
        p = PRESETS[kind][name]
        assert (int(layers), int(width), int(context), int(batch), float(lr)) == (
            p.n_layer, p.n_embd, p.context, p.batch_size, p.lr
        ), (kind, name)  # fmt: skip
        assert heads == (str(p.n_head) if kind == "transformer" else "-")
        model = build_model(ModelConfig(kind=kind, vocab_size=65, n_layer=p.n_layer, n_embd=p.n_embd, n_head=p.n_head))
        assert int(params.replace(",", "")) == sum(t.numel() for t in model.parameters()), (kind, name)
    # by hand, for the tiny recurrent models: embedding 65 x 64, the cell's input and recurrent weights
    # and two biases per gate (LSTM 4 gates, GRU 3), the head's bias (its weights are the embedding's)
    assert rows["lstm", "tiny"][-1] == f"{65 * 64 + 4 * 64 * (64 + 64 + 2) + 65:,}" == "37,505"
    assert rows["gru", "tiny"][-1] == f"{65 * 64 + 3 * 64 * (64 + 64 + 2) + 65:,}" == "29,185"


@pytest.mark.slow
def test_python_dash_m_works_like_the_command() -> None:
    result = textweaver("--version")
    assert result.returncode == 0 and result.stdout.startswith("textweaver ")


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


BAD_CORPORA = {
    "empty": (b"", "empty"),
    "binary": (b"\x7fELF\x02\x01\x00\x00abc", r"binary file \(NUL byte at byte offset 6\)"),
    "invalid_utf8": (
        b"hello world\n" * 10 + b"caf\xe9\n",
        "invalid utf-8 at byte offset 123.*--encoding.*--errors replace",
    ),
    "short": (b"tiny text\n", "fewer than the context"),
}


@pytest.mark.parametrize("case", sorted(BAD_CORPORA))
def test_bad_corpora_fail_with_one_line_and_leave_no_checkpoint(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, message = BAD_CORPORA[case]
    corpus = _write(tmp_path / "corpus.txt", data)
    out = tmp_path / "run"
    code, stdout, err = run_cli(
        ["train", str(corpus), "--out", str(out), "--max-steps", "5", "--no-tensorboard"], capsys
    )
    one_line_error(code, stdout, err, message)
    assert not (out / "last").exists() and not (out / "best").exists()
    assert not list(out.glob(".*tmp*")) if out.exists() else True


def _corrupt_weights(run: Path) -> None:
    weights = run / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])


def _newer_format(run: Path) -> None:
    config_path = run / "best" / "config.json"
    config = json.loads(config_path.read_text())
    config["format_version"] = 99
    config_path.write_text(json.dumps(config))


@pytest.mark.parametrize(("args", "message"), [
    (["train", "{tmp}/missing.txt", "--out", "{tmp}/r"], "missing.txt: no such file or directory"),
    (["generate", "{tmp}"], "not a textweaver checkpoint"),
    (["generate", "{run}", "--temperature", "-1"], "--temperature must be >= 0"),
    (["generate", "{run}", "--top-p", "1.5"], r"--top-p must be in \(0, 1\]"),
    (["generate", "{run}", "--top-p", "0"], r"--top-p must be in \(0, 1\]"),
    (["generate", "{run}", "--length", "0"], "--length must be between 1 and"),
    (["generate", "{run}", "--length", "-5"], "--length must be between 1 and"),
    (["generate", "{run}", "--length", "many"], "Invalid value for '--length'"),
    (["generate", "{run}", "--temperature", "hot"], "Invalid value for '--temperature'"),
    (["train", "{corpus}", "--out", "{tmp}/r", "--max-time", "soon"], "--max-time: cannot read 'soon'"),
    (["train", "{corpus}", "--out", "{tmp}/r", "--max-steps", "ten"], "Invalid value for '--max-steps'"),
    (["train", "{corpus}", "--out", "{tmp}/r", "--preset", "tiny", "--layers", "3"], "not both"),
    (["train", "{corpus}", "--out", "{tmp}/r", "--model", "cnn"], "unknown --model 'cnn'"),
    (["eval", "{run}", "{tmp}/missing.txt"], "no such file"),
    (["generate", "{corrupt}"], "corrupted or truncated"),
    (["generate", "{newer}"], "newer than this textweaver"),
])  # fmt: skip
def test_bad_input_gets_one_line_and_exit_status_2(
    args: list[str], message: str, tmp_path: Path, trained_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corrupt, newer = tmp_path / "corrupt", tmp_path / "newer"
    for copy, damage in ((corrupt, _corrupt_weights), (newer, _newer_format)):
        shutil.copytree(trained_run, copy)
        damage(copy)
    values = {"tmp": tmp_path, "run": trained_run, "corpus": SHAKESPEARE, "corrupt": corrupt, "newer": newer}
    one_line_error(*run_cli([a.format(**values) for a in args], capsys), message)


def test_output_file_gets_exactly_what_stdout_gets(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for extra in ([], ["--num-samples", "2"], ["--json", "--num-samples", "2"]):
        args = ["generate", str(trained_run), "-p", "To be", "-n", "30", "--seed", "3", *extra]
        code, printed, _ = run_cli(args, capsys)
        target = tmp_path / "out.txt"
        code2, nothing, err = run_cli([*args, "--output", str(target)], capsys)
        assert code == code2 == 0 and nothing == "" and err == ""
        assert target.read_text(encoding="utf-8") == printed
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left beside it


def test_output_is_written_whole_or_not_at_all(
    trained_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out.txt"
    target.write_text("an earlier text\n")
    args = ["generate", str(trained_run), "-p", "To be", "-n", "30", "--seed", "3", "-o", str(target)]

    def disk_full(fd: int) -> None:  # the text is in the file, but it never reaches the disk
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    one_line_error(*run_cli(args, capsys), r"--output .*out.txt: cannot write \(No space left on device\)")
    monkeypatch.undo()

    def interrupted(*args: object, **kwargs: object) -> list[str]:
        raise KeyboardInterrupt

    monkeypatch.setattr("textweaver.generation.generator.Generator.generate", interrupted)
    assert run_cli(args, capsys)[0] == 130  # Ctrl-C while generating
    assert target.read_text() == "an earlier text\n" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


@pytest.fixture(scope="module")
def chinese_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "xiyouji"
    train([XIYOUJI], out, model="lstm", max_steps=5, **TINY)
    return out


@pytest.mark.parametrize("stored", ["孙悟空道：", "\ufeff孙悟空道：\n美猴王"], ids=["plain", "bom-and-lines"])
def test_prompt_file_gives_the_same_text_as_the_same_prompt(
    stored: str, chinese_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text(stored, encoding="utf-8")
    prompt = stored.removeprefix("\ufeff")  # a byte-order mark is dropped, as corpus files lose theirs
    base = ["generate", str(chinese_run), "-n", "40", "--seed", "5"]
    code, from_file, err = run_cli([*base, "--prompt-file", str(prompt_file)], capsys)
    code2, from_option, _ = run_cli([*base, "--prompt", prompt], capsys)
    assert code == code2 == 0 and "warning" not in err
    assert from_file == from_option and from_file.startswith(prompt) and len(from_file) == len(prompt) + 40 + 1


@pytest.mark.parametrize(("args", "files", "message"), [
    (["--prompt", "a", "--prompt-file", "{tmp}/p.txt"], {"p.txt": b"b"}, "--prompt and --prompt-file both"),
    (["--prompt-file", "{tmp}/missing.txt"], {}, r"--prompt-file .*missing.txt: no such file"),
    (["--prompt-file", "{tmp}"], {}, "--prompt-file .*: is a folder: name a text file"),
    (["--prompt-file", "{tmp}/p.txt"], {"p.txt": b""}, "--prompt-file .*p.txt: empty: write the start text"),
    (["--prompt-file", "{tmp}/p.txt"], {"p.txt": "ROMEO: 孙悟空".encode("gb18030")},
     r"--prompt-file .*p.txt: invalid utf-8 at byte offset 7: .*(iconv -f \S+ -t utf-8|save it as UTF-8)"),
    (["--output", "{tmp}/missing/out.txt"], {}, "--output .*out.txt: the folder .*missing does not exist"),
    (["--output", "{tmp}"], {}, "--output .*: is a folder: name a file in it"),
    (["--stream", "--output", "{tmp}/out.txt"], {}, "--stream prints as it goes, --output writes the file whole"),
])  # fmt: skip
def test_bad_prompt_files_and_outputs_get_one_line(
    args: list[str], files: dict[str, bytes], message: str, trained_run: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    one_line_error(*run_cli(["generate", str(trained_run), *[a.format(tmp=tmp_path) for a in args]], capsys), message)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(files)  # nothing written


def test_precision_help_quotes_the_recipes_bf16_threshold(capsys: pytest.CaptureFixture[str]) -> None:
    """The help states the constant the recipe uses, not a copy of it (a copy said 1.15x while the code said 1.1x)."""
    from textweaver.config import BF16_MIN_SPEEDUP

    code, out, _ = run_cli(["train", "--help"], capsys)
    assert code == 0
    assert f"at least {BF16_MIN_SPEEDUP:g}x faster" in " ".join(out.split())


def _field_defaults(cls: type) -> dict[str, object]:
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        for f in dataclasses.fields(cls)
    }


@pytest.mark.parametrize(
    ("command", "classes", "at_least"),
    [("train", [TrainConfig], 35), ("generate", [GenerationRequest, SamplingOptions], 7)],
)
def test_the_cli_defaults_are_the_dataclasses_defaults(command: str, classes: list[type], at_least: int) -> None:
    """An option's default is declared once, on its dataclass field: the command line must agree with it."""
    defaults = {name: value for cls in classes for name, value in _field_defaults(cls).items()}
    options = [p for p in typer.main.get_command(app).commands[command].params if p.name in defaults]  # type: ignore[attr-defined]
    assert len(options) >= at_least
    for option in options:
        given = option.default
        if isinstance(given, str) and isinstance(defaults[option.name], float):  # "5m"
            given = parse_duration(given, option.name)
        assert given == defaults[option.name], (
            f"--{option.name}: the CLI says {given!r}, the dataclass {defaults[option.name]!r}"
        )


@pytest.mark.parametrize(
    ("command", "classes", "internal"),
    [
        ("train", [TrainConfig], {"cutoffs", "min_lr_ratio", "sample_temperatures", "extra"}),
        ("generate", [GenerationRequest, SamplingOptions], {"sampling", "repetition_window"}),
    ],
)
def test_each_option_is_declared_once_on_its_dataclass_field(
    command: str, classes: list[type], internal: set[str]
) -> None:
    """The command's options are built from the fields (config.option): flag, help and default written once, so a
    new option is one field; the fields that are no option are named here."""
    params = {p.name: p for p in typer.main.get_command(app).commands[command].params}  # type: ignore[attr-defined]
    fields = [f for cls in classes for f in dataclasses.fields(cls)]
    assert {f.name for f in fields if "option" not in f.metadata} == internal
    for f in fields:
        if "option" in f.metadata:
            assert params[f.name].help == f.metadata["option"].help, f.name
