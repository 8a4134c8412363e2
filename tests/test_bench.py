"""Every benchmark runs end to end: each bench module, as the README runs it (`python -m bench.NAME`), on
the small excerpts in tests/data for a few seconds, writing its results to a temporary folder (the
figures under bench/results/ are the real measurements and stay untouched). The side-by-side ones
need nanoGPT's runner in ../shared (CI has it) and skip without it; a crash is always a failure.
And the docs quote only figures that a results file holds."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from textweaver.config import PRESETS

from browser import CHROMIUM
from conftest import DATA, SHAKESPEARE

ROOT = Path(__file__).resolve().parent.parent
NANOGPT = ROOT.parent / "shared" / "baselines" / "nanogpt"
needs_nanogpt = pytest.mark.skipif(
    not (NANOGPT / "run.sh").is_file(), reason=f"no nanoGPT runner at {NANOGPT} (../shared beside the clone)"
)
# nanoGPT's recipe shrunk to a smoke test: one small layer, two batches per estimate
SMALL_NANOGPT = "--n_layer=1 --n_head=1 --n_embd=16 --eval_iters=2"
# a model named: the automatic recipe measures the machine first (tens of seconds on a loaded 2-core CPU)
TINY_TRAIN = "--model lstm --preset tiny --precision fp32"


def bench(module: str, *args: str, results: Path, name: str = "") -> list[dict[str, Any]]:
    """Run ``python -m bench.MODULE ARGS --results RESULTS`` from the repository root; the rows it wrote
    (to RESULTS/NAME.json, NAME defaulting to MODULE). One thread per process: two threads that wait for
    each other at every kernel slow down several-fold on a busy machine, and this checks that the
    benchmarks run, not how fast."""
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args, "--results", str(results)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, f"bench.{module} exited {done.returncode}:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert (results / f"{name or module}.md").is_file()
    return list(json.loads((results / f"{name or module}.json").read_text())["rows"])


def finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny English model that never saw Shakespeare: the base the fine-tuning benchmarks start from."""
    from textweaver import train

    out = tmp_path_factory.mktemp("bench") / "base"
    train([DATA / "pride_heldback.txt"], out, model="lstm", preset="tiny", max_steps=20, eval_every=1000,
          precision="fp32", tensorboard=False, sample_length=10, threads=1)  # fmt: skip
    return out


@pytest.mark.slow
def test_time_to_quality(tmp_path: Path) -> None:
    # 4 s: past the first progress record (every 2 s), a metrics line without validation figures
    rows = bench("time_to_quality", "--budgets", "4s", "--corpora", SHAKESPEARE.name, "--corpus-dir", str(DATA),
                 "--eval-every", "20", "--train-args", TINY_TRAIN, results=tmp_path)  # fmt: skip
    (row,) = rows
    assert row["corpus"] == SHAKESPEARE.name and row["steps"] > 0
    assert finite(row["val_nats_per_char"], row["val_bits_per_char"], row["tokens_per_s"])
    curve = json.loads((tmp_path / "time_to_quality_curves.json").read_text())[f"{SHAKESPEARE.name} 4s"]
    assert curve and all(finite(*point) for point in curve)  # evaluations only: every point has a loss


@pytest.mark.slow
@needs_nanogpt
def test_versus_nanogpt(tmp_path: Path) -> None:
    rows = bench("versus_nanogpt", "--corpora", SHAKESPEARE.name, "--corpus-dir", str(DATA), "--iters", "260",
                 "--nanogpt-args", SMALL_NANOGPT, "--train-args", TINY_TRAIN, results=tmp_path)  # fmt: skip
    (row,) = rows
    assert row["steps"] > 0 and finite(row["nanogpt_val"], row["textweaver_val"], row["ratio"], row["wall_s"])
    # both protocols of the runner, and the from-scratch path beside the default one
    assert finite(row["nanogpt_cold_blocks"], row["scratch_val"], row["scratch_ratio"], row["default_over_scratch"])


def test_the_side_by_side_default_path_refuses_a_corpus_its_base_learned_from(tmp_path: Path, base: Path) -> None:
    from bench.versus_nanogpt import default_start

    seen = tmp_path / "tinyshakespeare.txt"  # a file of builtin:english's corpus
    seen.write_text(SHAKESPEARE.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(SystemExit, match="builtin:english was trained on tinyshakespeare.txt.*--base english=RUN"):
        default_start(seen, {})
    assert default_start(seen, {"english": str(base)}) == (["--init-from", str(base)], str(base))  # left it out
    assert default_start(DATA / "sqlite_excerpt.c", {}) == ([], "random weights (no base applies)")
    assert default_start(DATA / "xiyouji_excerpt.txt", {})[1] == "builtin:chinese"


@pytest.mark.slow
def test_base_candidates(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text(SHAKESPEARE.read_text(encoding="utf-8"), encoding="utf-8")
    rows = bench("base_candidates", str(corpus), "--out", str(tmp_path / "runs"), "--steps", "lstm-2x512=4",
                 "--only", "lstm-2x512", "--eval-every", "2", "--threads", "1", results=tmp_path)  # fmt: skip
    (row,) = rows
    assert row["steps"] == 4 and len(row["curve"]) == 2 and finite(row["best_val"], row["cpu_s"])


@pytest.mark.slow
def test_foreign_names(tmp_path: Path, base: Path) -> None:
    corpus_file = tmp_path / "corpus.txt"
    corpus_file.write_text("Holmes looked at Watson. " * 4 + "Nobody else.\n", encoding="utf-8")  # 8 in 113
    rows = bench("foreign_names", str(base), "--corpus", str(corpus_file), "--language", "english", "--samples", "2",
                 "--length", "50", results=tmp_path)  # fmt: skip
    corpus, generated = rows
    assert corpus["names"] == {"Holmes": 4, "Watson": 4} and corpus["per_10k"] == pytest.approx(8e4 / 113)
    assert generated["chars"] > 0 and finite(generated["per_10k"])


@pytest.mark.slow
@needs_nanogpt
def test_bpe_vs_char(tmp_path: Path) -> None:
    rows = bench("bpe_vs_char", "--corpora", SHAKESPEARE.name, "--corpus-dir", str(DATA), "--budget", "2s",
                 "--train-args", TINY_TRAIN, results=tmp_path)  # fmt: skip
    (row,) = rows
    assert finite(row["char_bpc"], row["bpe_bpc"], row["ratio"]) and row["bpe_chars_per_token"] > 1


@pytest.mark.slow
@needs_nanogpt
def test_finetune_gain(tmp_path: Path, base: Path) -> None:
    rows = bench("finetune_gain", "--base-en", str(base), "--english", SHAKESPEARE.name, "--minutes", "1",
                 "--iters", "260", "--nanogpt-args", SMALL_NANOGPT, "--scratch-args", TINY_TRAIN,
                 "--corpus-dir", str(DATA), results=tmp_path)  # fmt: skip
    (row,) = rows
    assert row["nanogpt_iters"] == 260
    assert finite(row["nanogpt_val"], row["scratch_val"], row["tuned_val"], row["tuned_over_scratch"])


@pytest.mark.slow
@needs_nanogpt
def test_finetune_choices(tmp_path: Path, base: Path) -> None:
    rows = bench("finetune_choices", "--base", str(base), "--corpus", SHAKESPEARE.name, "--minutes", "0.12",
                 "--variants", "default,rows=random", "--corpus-dir", str(DATA), results=tmp_path,
                 name=f"finetune_choices_{SHAKESPEARE.stem}")  # fmt: skip
    assert [r["variant"] for r in rows] == ["default", "rows=random"]
    assert all(finite(r["val"]) for r in rows)
    assert finite(rows[0]["unused_mass"], rows[0]["kept_val"], rows[0]["pruned_val_at_best"])


@pytest.mark.slow
def test_generation(tmp_path: Path, base: Path) -> None:
    rows = bench("generation", "--presets", "tiny", "--length", "100", "--run", str(base), results=tmp_path)
    assert [r["model"] for r in rows] == [*(f"{kind} tiny" for kind in PRESETS), f"trained: {base}"]
    assert all(finite(r["chars_per_s_1"], r["chars_per_s_64"], r["speedup_vs_naive"]) for r in rows)


@pytest.mark.slow
def test_throughput(tmp_path: Path) -> None:
    rows = bench("throughput", "--presets", "tiny", "--steps", "2", "--corpus-mb", "1", "--corpus-dir", str(DATA),
                 results=tmp_path)  # fmt: skip
    assert [r["what"].split()[0] for r in rows] == ["train"] * 3 + ["encode"] * 2
    assert all(finite(r["peak_rss_mib"]) for r in rows)


@pytest.mark.slow
def test_load(tmp_path: Path, base: Path) -> None:
    rows = bench("load", "--run", str(base), "--clients", "2", "--duration", "1", "--length", "20",
                 "--requests", "40", results=tmp_path)  # fmt: skip
    streaming, churn = rows
    assert streaming["requests"] > 0 and streaming["errors"] == 0 and churn["errors"] == 0


@pytest.mark.slow
def test_web(tmp_path: Path, base: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (.ci/run does)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    rows = bench("web", str(base), "--length", "20", "--repeats", "1", results=tmp_path)
    assert [r["weights"] for r in rows] == ["fp32", "fp16", "int8"]
    assert all(finite(r["model_mb"], r["page_load_s"], r["chars_per_s"]) for r in rows)


@pytest.mark.slow
def test_page_training(tmp_path: Path, base: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (.ci/run does)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    rows = bench("page_training", "--base", str(base), "--text", str(SHAKESPEARE), "--budgets", "0.5",
                 results=tmp_path)  # fmt: skip
    (row,) = rows
    assert row["budget_min"] == 0.5 and row["steps"] > 0
    assert finite(row["val_before"], row["val_after"], row["page_tokens_per_s"], row["page_vs_pytorch"])


# Figures in the docs that are not measurements
NOT_MEASURED = {"0.693": "ln 2, nats to bits", "1.412": "an example of a chart's accessible name"}


def test_every_precise_figure_in_the_docs_is_in_a_results_file() -> None:
    """A loss, ratio or speed quoted with three or more decimals in README.md or docs/ is one of
    bench/results/'s figures (rounded as quoted). Percentages are left out: they are derived."""
    known: set[str] = set()

    def collect(value: Any) -> None:
        if isinstance(value, dict | list):
            for item in value.values() if isinstance(value, dict) else value:
                collect(item)
        elif isinstance(value, int | float) and not isinstance(value, bool):
            known.update(f"{value:.{places}f}" for places in range(3, 6))
        elif isinstance(value, str):  # a choice's reasons, a name
            known.update(re.findall(r"\d+\.\d+", value))

    results = ROOT / "bench" / "results"
    for path in results.glob("*.json"):
        collect(json.loads(path.read_text()))
    for path in results.glob("*.md"):
        known.update(m.replace(",", "") for m in re.findall(r"\d[\d,]*\.\d+", path.read_text()))
    unbacked = [
        f"{doc.relative_to(ROOT)}:{n}: {figure}"
        for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for n, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
        for figure in re.findall(r"(?<![\w.])\d+\.\d{3,}(?![\w.%])", line)
        if figure not in known and figure not in NOT_MEASURED
    ]
    assert not unbacked, "figures no file under bench/results/ holds:\n" + "\n".join(unbacked)


def test_every_from_scratch_arm_opts_out_of_the_default_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """English or Chinese prose starts from a base by default (finetune.default_source): a benchmark arm that
    measures training from scratch must say --init-from none, or it measures a base that may have seen the
    corpus. Each module's training commands are recorded instead of run."""
    import bench.bpe_vs_char
    import bench.finetune_gain
    import bench.time_to_quality

    calls: list[list[str]] = []

    def record(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, '{"bits_per_char": 1.0, "chars": 1, "tokens": 1}', "")

    monkeypatch.setattr(bench.time_to_quality, "run_command", record)
    monkeypatch.setattr(bench.time_to_quality, "evaluations", lambda run: [{"val_loss": 1.0}])
    bench.time_to_quality.run(SHAKESPEARE, "1m", tmp_path / "ttq", 100, [])
    monkeypatch.setattr(bench.bpe_vs_char, "run_command", record)
    monkeypatch.setattr(bench.bpe_vs_char, "evaluations", lambda run: [{"step": 1}])
    (tmp_path / "char" / "last").mkdir(parents=True)
    (tmp_path / "char" / "last" / "config.json").write_text('{"model": {"vocab_size": 1}}')
    bench.bpe_vs_char.train_and_score(tmp_path, "char", "1m", [])
    trains = [cmd for cmd in calls if "train" in cmd]
    assert len(trains) == 2
    for cmd in trains:
        assert cmd[cmd.index("--init-from") + 1] == "none", cmd

    arms: dict[str, list[str]] = {}

    def train_arm(work: Path, wall: float, extra: list[str], name: str) -> dict[str, Any]:
        arms[name] = extra
        return {"val": 1.0, "model": "m", "chose": ""}

    monkeypatch.setattr(bench.finetune_gain, "textweaver", train_arm)
    monkeypatch.setattr(bench.finetune_gain, "nanogpt", lambda *a: (60.0, 2.0))
    monkeypatch.setattr(bench.finetune_gain, "trained_on", lambda base: set())
    (tmp_path / "nanogpt").mkdir()
    (tmp_path / "nanogpt" / "run.sh").write_text("")
    monkeypatch.setattr(sys, "argv", ["finetune_gain", "--base-en", "BASE", "--english", SHAKESPEARE.name,
                                      "--corpus-dir", str(DATA), "--nanogpt", str(tmp_path / "nanogpt"), "--iters",
                                      "260", "--minutes", "1", "--results", str(tmp_path)])  # fmt: skip
    bench.finetune_gain.main()
    assert arms["scratch"][:2] == ["--init-from", "none"] and arms["tuned"] == ["--init-from", "BASE"]
