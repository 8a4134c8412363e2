"""Shared fixtures: the real-text excerpts in tests/data and a small trained run; the helpers several
test files use (the CLI run in-process, small models, tokenizers built from a text); and the rule that
under TEXTWEAVER_NO_SKIP=1 (CI) a skipped test fails the run."""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

if TYPE_CHECKING:
    from textweaver.data.tokenizer import Tokenizer

DATA = Path(__file__).parent / "data"
SHAKESPEARE = DATA / "shakespeare_8k.txt"
XIYOUJI = DATA / "xiyouji_excerpt.txt"
SQLITE = DATA / "sqlite_excerpt.c"

# Small and fast settings for runs made in tests.
# float32: runs that are compared with each other must not depend on a speed measurement.
TINY = {"preset": "tiny", "precision": "fp32", "tensorboard": False, "eval_every": 1000, "sample_length": 20}


# The last line a child process prints: the peak of its own memory in KiB. VmHWM, not ru_maxrss: Linux
# hands a process started by fork/vfork + exec the parent's high-water mark as its ru_maxrss, so a child of
# a pytest process that has grown to 1 GB would report 1 GB whatever it did itself.
PRINT_OWN_PEAK_KIB = (
    "print([int(line.split()[1]) for line in open('/proc/self/status') if line.startswith('VmHWM:')][0])"
)


def own_peak_kib(stdout: str) -> int:
    """The KiB a child printed with PRINT_OWN_PEAK_KIB as its last line."""
    return int(stdout.split()[-1])


NO_SKIP = "TEXTWEAVER_NO_SKIP"  # set to 1 by .ci/run: every test must run there


def _no_skip() -> bool:
    return os.environ.get(NO_SKIP, "") not in ("", "0")


def _skip_reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    longrepr = report.longrepr
    return longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)  # (file, line, "Skipped: why")


def _fail_if_skipped(report: pytest.CollectReport | pytest.TestReport, ran: bool) -> None:
    """A skip becomes a failure that gives the skip's reason. An expected failure (xfail) that ran
    to its failure stays as it is; one that never ran (``run=False``, ``pytest.xfail()``) is a skip."""
    if _no_skip() and report.skipped and not (ran and hasattr(report, "wasxfail")):
        why = getattr(report, "wasxfail", None) or _skip_reason(report)
        report.outcome = "failed"
        report.longrepr = f"skipped, and {NO_SKIP}=1 says every test must run: {why}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    report = yield  # skip(), skipif, importorskip, a fixture that skips: all end here as a skipped report
    stopped = call.excinfo is not None and call.excinfo.errisinstance(pytest.xfail.Exception)
    _fail_if_skipped(report, ran=call.when == "call" and not stopped)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, Any]:
    report = yield  # a module skipped as a whole (importorskip or skip(allow_module_level=True) at import)
    _fail_if_skipped(report, ran=False)
    return report


@pytest.hookimpl(wrapper=True, tryfirst=True)  # outside the terminal reporter's own wrapper
def pytest_terminal_summary(terminalreporter: Any) -> Generator[None, None, None]:
    yield  # after the short summary that lists each skip's reason
    skipped = len(terminalreporter.stats.get("skipped", []))
    if skipped and not _no_skip():
        terminalreporter.write_line(
            f"{skipped} skipped (reasons above): CI runs with {NO_SKIP}=1, where a skip fails the run.",
            yellow=True,
            bold=True,
        )


@pytest.fixture(autouse=True)
def _few_threads() -> None:
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny transformer trained briefly on the Shakespeare excerpt (shared, read-only)."""
    from textweaver import train

    out = tmp_path_factory.mktemp("runs") / "tiny"
    train([SHAKESPEARE], out, model="transformer", max_steps=60, **TINY)
    return out


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process: exit status, stdout, stderr."""
    from textweaver.app.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def one_line_error(code: int, out: str, err: str, message: str) -> None:
    """The CLI's refusal: exit 2, nothing on stdout, one `textweaver: error:` line matching ``message``."""
    assert code == 2, err
    assert out == "" and err.count("\n") == 1 and err.startswith("textweaver: error: "), err
    assert "Traceback" not in err
    assert re.search(message, err), err


# Helpers shared by the specification files of several modules (the models', the tokenizers').


def small(kind: str, vocab: int = 50, **kw: object) -> torch.nn.Module:
    """A small model of ``kind`` with seeded weights, in eval mode."""
    from textweaver.config import ModelConfig
    from textweaver.models import build_model

    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, vocab_size=vocab, n_layer=2, n_embd=32, n_head=4, context=48, **kw)  # type: ignore[arg-type]
    return build_model(cfg).eval()


ALL_LEVELS = ["char", "word", "bpe"]

# Hand-picked texts that tokenizers commonly get wrong.
TRICKY = [
    "",
    "西游记：混沌未分天地乱，茫茫渺渺无人见。",
    "family 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵, skin tone 👍🏽",
    "col1\tcol2\t\tcol3\n",
    "line one\r\nline two\r\n\r\n",
    "cafe\u0301 vs caf\u00e9, a\u0308\u0304, \u0301 leading mark",
    "   leading and trailing whitespace   ",
    "\x00\x07\x1b control chars \u2028 line sep \u00a0 nbsp",
]


def tokenizer_for(
    text: str, level: str, vocab_size: int | None = None, lowercase: bool = False, normalize: str | None = None
) -> Tokenizer:
    """A tokenizer built from ``text`` itself, as prepare() builds one from a corpus."""
    from textweaver.data.tokenizer import preprocess
    from textweaver.data.vocab import VocabCounter

    counter = VocabCounter(level, lowercase, normalize)
    counter.update(preprocess(text, lowercase, normalize))
    return counter.build(vocab_size)
