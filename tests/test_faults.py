"""Fault injection with real processes: kill -9, SIGTERM and a write limit never lose a run."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from textweaver import load
from textweaver.checkpoint import resolve

from conftest import SHAKESPEARE

TRAIN = [sys.executable, "-m", "textweaver", "train", str(SHAKESPEARE), "--preset", "tiny", "--no-tensorboard",
         "--sample-length", "10", "--seed", "2", "--checkpoint-every", "0.3s", "--eval-every", "40"]  # fmt: skip


def start(out: Path, *extra: str, **popen: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*TRAIN, "--out", str(out), *extra], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env, **popen)  # type: ignore[call-overload]  # fmt: skip


def wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the training process")
        time.sleep(0.001)


def steps_in(run: Path) -> int:
    return int(json.loads((resolve(run / "last") / "config.json").read_text())["metrics"]["step"])


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_a_loadable_run_that_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    kills = 0
    # four kills at varied moments of ordinary training, one in the middle of a checkpoint write
    for delay in (0.4, 1.1, 0.7, 1.6):
        proc = start(out, "--max-steps", "100000", "--resume")
        wait_for(lambda: (out / "last" / "config.json").exists() or (out / ".last.old").exists())
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        model = load(out / "last")  # always loadable
        assert model.generate("a", 5, seed=1)
    proc = start(out, "--max-steps", "100000", "--resume")
    wait_for(lambda: (out / ".last.tmp").exists())  # a checkpoint is being written right now
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills += 1
    assert kills >= 5
    before = steps_in(out)
    assert before > 0 and load(out / "last").generate("a", 5, seed=1)
    # resuming continues from the last checkpoint, not from zero
    resumed = subprocess.run([*TRAIN, "--out", str(out), "--resume", "--max-steps", str(before + 20)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out / 'last'} from step {before}" in resumed.stderr
    assert steps_in(out) == before + 20


@pytest.mark.slow
def test_sigterm_saves_and_exits_cleanly(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(out, "--max-time", "5m")
    assert proc.stderr is not None
    for line in proc.stderr:
        if "parameters" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert "checkpoint saved" in err and "--resume" in err
    assert steps_in(out) > 0


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


@pytest.mark.slow
def test_a_failing_checkpoint_write_is_reported_and_keeps_the_previous_one(tmp_path: Path) -> None:
    """A real write error (file-size limit, as on a full disk): one clear line, exit 2, last/ intact."""
    out = tmp_path / "run"
    small = subprocess.run([*TRAIN, "--out", str(out), "--max-steps", "3"], capture_output=True, text=True)
    assert small.returncode == 0, small.stderr
    before = (out / "last" / "model.safetensors").read_bytes()
    wide = subprocess.run([*TRAIN, "--out", str(out / "wide"), "--max-steps", "3"],
                          capture_output=True, text=True, preexec_fn=_limit_file_size)  # fmt: skip
    assert wide.returncode == 2
    assert "cannot write the checkpoint" in wide.stderr and "Traceback" not in wide.stderr
    assert not (out / "wide" / "last").exists()
    assert (out / "last" / "model.safetensors").read_bytes() == before
