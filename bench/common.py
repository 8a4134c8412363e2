"""Shared by the benchmarks: machine facts, a run's evaluations, and writing results as JSON + a markdown table."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process: VmHWM, which (unlike ru_maxrss) a process started by fork + exec
    does not inherit from its parent."""
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024


def run_command(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` and capture its output; a failure exits with the command's own last error line, not a traceback."""
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        raise SystemExit(f"{' '.join(cmd[:4])} ... exited {done.returncode}: {lines[-1]}")
    return done


def add_results_option(parser: argparse.ArgumentParser) -> None:
    """``--results DIR``: where ``write`` saves (default bench/results/; the smoke tests write elsewhere)."""
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder for NAME.json and NAME.md")


def add_keep_option(parser: argparse.ArgumentParser) -> None:
    """``--keep DIR``: train in DIR and leave the runs there (to sample them: bench.foreign_names), not in a
    temporary folder."""
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the working folders and runs in this folder (default: a temporary one)")  # fmt: skip


@contextlib.contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    """``keep`` (created), or a temporary folder removed afterwards."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def evaluations(run: Path) -> list[dict[str, Any]]:
    """The evaluation records of ``run``'s metrics.jsonl. Between evaluations training also writes
    progress records (training loss, lr, speed) that carry no validation figures."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if "val_loss" in r]


def write(name: str, rows: list[dict[str, Any]], columns: list[str], notes: str = "", results: Path = RESULTS) -> str:
    """Save rows as RESULTS/NAME.json and NAME.md; return the markdown table."""
    results.mkdir(parents=True, exist_ok=True)
    facts = machine()
    (results / f"{name}.json").write_text(json.dumps({"machine": facts, "rows": rows}, indent=2, ensure_ascii=False))
    lines = [f"| {' | '.join(columns)} |", f"|{'---|' * len(columns)}"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    facts_line = ", ".join(f"{k}: {v}" for k, v in facts.items())
    md = f"# {name}\n\n{facts_line}\n\n" + "\n".join(lines) + ("\n\n" + notes if notes else "") + "\n"
    (results / f"{name}.md").write_text(md)
    return md


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 10 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "" if value is None else str(value)
