"""Distributed training: `torchrun --nproc-per-node 2` with gloo on the CPU behaves like one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from textweaver import load

from conftest import SHAKESPEARE

# float32: both sides must compute alike, whatever a speed measurement would pick
ARGS = ["--max-steps", "12", "--batch-size", "8", "--seed", "4", "--eval-every", "6", "--sample-length", "10",
        "--no-tensorboard", "--device", "cpu", "--threads", "1", "--precision", "fp32"]  # fmt: skip
MODELS = {
    "lstm": ["--preset", "tiny", "--model", "lstm"],
    "transformer": ["--preset", "tiny", "--model", "transformer"],
    "lstm-adaptive-softmax": ["--preset", "tiny", "--model", "lstm", "--softmax", "adaptive"],
    "automatic": ["--context", "32"],  # no model option: the recipe chooses, every rank alike
    "fine-tuned": ["--init-from", "builtin:shakespeare"],  # every rank starts from the same weights
}


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess[str]:
    launcher = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    cmd = [launcher, "--standalone", "--nproc-per-node", str(processes), "-m", "textweaver", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def single(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "textweaver", *args], capture_output=True, text=True, timeout=300)


def final_metrics(run: Path) -> dict[str, float]:
    return dict(json.loads((run / "last" / "config.json").read_text())["metrics"])


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_two_gloo_processes_match_one_process_with_the_same_global_batch(tmp_path: Path, model: str) -> None:
    common = ["train", str(SHAKESPEARE), *MODELS[model], *ARGS]
    two = torchrun(*common, "--out", str(tmp_path / "ddp"))
    assert two.returncode == 0, two.stderr[-3000:]
    # both ranks stepped, only rank 0 wrote
    output = two.stdout + two.stderr
    assert "rank 0/2 finished 12 steps" in output and "rank 1/2 finished 12 steps" in output
    written = sorted(p.name for p in (tmp_path / "ddp").iterdir() if not p.name.startswith("."))
    assert written == ["best", "cache", "last", "metrics.jsonl", "report.html", "samples.jsonl"]
    records = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "val_loss" in r]) == 2  # evaluations (progress records come between)

    one = single(*common, "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    ddp, solo = final_metrics(tmp_path / "ddp"), final_metrics(tmp_path / "one")
    assert ddp["step"] == solo["step"] == 12
    assert ddp["val_loss"] == pytest.approx(solo["val_loss"], abs=2e-3)
    assert ddp["train_loss"] == pytest.approx(solo["train_loss"], abs=2e-3)


@pytest.mark.slow
def test_a_single_process_resumes_a_distributed_run(tmp_path: Path) -> None:
    common = ["train", str(SHAKESPEARE), "--preset", "tiny", *ARGS, "--out", str(tmp_path / "r")]
    first = torchrun(*common)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = single(*[a if a != "12" else "20" for a in common], "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr
    assert final_metrics(tmp_path / "r")["step"] == 20
    assert load(tmp_path / "r").generate("a", 5)


@pytest.mark.slow
def test_a_batch_that_does_not_divide_by_the_processes_is_refused(tmp_path: Path) -> None:
    result = torchrun("train", str(SHAKESPEARE), "--preset", "tiny", "--max-steps", "2", "--batch-size", "7",
                      "--no-tensorboard", "--device", "cpu", "--out", str(tmp_path / "r"))  # fmt: skip
    assert result.returncode != 0
    assert "textweaver: error: --batch-size 7 must divide by the 2 processes" in result.stderr
