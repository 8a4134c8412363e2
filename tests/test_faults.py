"""Fault injection with real processes: kill -9, SIGTERM and a write limit never lose a run."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from textweaver import load
from textweaver.errors import TextweaverError
from textweaver.run.checkpoint import resolve

from conftest import SHAKESPEARE

# float32: runs compared with each other must not depend on a speed measurement
TRAIN = [sys.executable, "-m", "textweaver", "train", str(SHAKESPEARE), "--preset", "tiny", "--no-tensorboard",
         "--sample-length", "10", "--seed", "2", "--checkpoint-every", "0.3s", "--eval-every", "40",
         "--precision", "fp32"]  # fmt: skip


# The training command with the checkpoint writer paused at one point of a write (argv: POINT MARKER, then the
# CLI's arguments): it creates MARKER and sleeps there, so a kill -9 lands exactly in that step. The pause is
# patched into this child process only; textweaver itself has no test hook.
PAUSED = r"""
import os, sys, time
from pathlib import Path

from textweaver.run import checkpoint
from textweaver.app.cli import main

point, marker = sys.argv[1], Path(sys.argv[2])
save_file, replace = checkpoint.save_file, os.replace


def pause() -> None:
    marker.touch()
    time.sleep(3600)


def save_file_then_pause(*args, **kwargs):  # "write": the weights are in the temporary folder, config.json is not
    save_file(*args, **kwargs)
    pause()


def replace_then_pause(src, dst):  # "swap": last/ moved aside to .last.old, the new checkpoint not yet in place
    replace(src, dst)
    if Path(dst).name == ".last.old":
        pause()


if point == "write":
    checkpoint.save_file = save_file_then_pause
else:
    os.replace = replace_then_pause
main(sys.argv[3:])
"""


def start(out: Path, *extra: str, pause: tuple[str, Path] | None = None, **popen: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [*TRAIN, "--out", str(out), *extra]
    if pause is not None:  # the same command, run by PAUSED instead of python -m textweaver
        command = [sys.executable, "-c", PAUSED, pause[0], str(pause[1]), *command[3:]]
    return subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env=env, **popen)  # type: ignore[call-overload]  # fmt: skip


def wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the training process")
        time.sleep(0.001)


def steps_in(run: Path) -> int:
    return int(json.loads((resolve(run / "last") / "config.json").read_text())["metrics"]["step"])


def saved_steps(run: Path) -> int:
    """Steps in the last checkpoint, 0 while there is none (or it is being swapped in)."""
    try:
        return steps_in(run)
    except (OSError, ValueError, KeyError, TextweaverError):
        return 0


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_a_loadable_run_that_resumes(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # kills at varied moments of ordinary training: each must land on a running process
    for delay in (0.4, 1.1, 0.7, 1.6):
        proc = start(out, "--max-steps", "100000", "--resume")
        wait_for(lambda: (out / "last" / "config.json").exists() or (out / ".last.old").exists())
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL  # killed, not already finished
        model = load(out / "last")  # always loadable
        assert model.generate("a", 5, seed=1)
    # and kills inside a checkpoint write, made certain by pausing the writer there (PAUSED)
    for point, caught in [
        ("write", lambda: (out / ".last.tmp" / "model.safetensors").is_file() and (out / "last").is_dir()),
        ("swap", lambda: not (out / "last").exists() and (out / ".last.old" / "config.json").is_file()),
    ]:
        before = steps_in(out)
        marker = tmp_path / f"paused-{point}"
        proc = start(out, "--max-steps", "100000", "--resume", pause=(point, marker))
        wait_for(marker.exists)
        assert caught(), f"not inside the {point} step"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        assert steps_in(out) == before  # the previous checkpoint, whole
        assert load(out / "last").generate("a", 5, seed=1)
    before = steps_in(out)
    assert before > 0
    # resuming continues from the last checkpoint, not from zero
    resumed = subprocess.run([*TRAIN, "--out", str(out), "--resume", "--max-steps", str(before + 20)],
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {out / 'last'} from step {before}" in resumed.stderr
    assert steps_in(out) == before + 20


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_and_sigterm_save_a_checkpoint_exit_0_and_print_the_resume_hint(tmp_path: Path, sig: int) -> None:
    """The checkpoint is written at once, before any evaluation: a stop asked for is answered first (a service
    manager's grace period before SIGKILL can be shorter than an evaluation of a large model)."""
    out = tmp_path / "run"
    proc = start(out, "--max-time", "5m", "--eval-every", "100000")  # no evaluation falls due by itself
    assert proc.stderr is not None
    for line in proc.stderr:  # wait until training has started
        if "parameters" in line:
            break
    time.sleep(1.0)
    proc.send_signal(sig)
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err
    assert "checkpoint saved" in err and "--resume" in err and "Traceback" not in err
    assert steps_in(out) > 0
    metrics = out / "metrics.jsonl"  # progress records every 2 s: none yet if the signal came sooner
    records = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    assert not [r for r in records if r.get("val_loss") is not None], "evaluated before stopping"


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


DISK_FULL_SCRIPT = r"""
set -u
mount -t tmpfs -o size=4m tmpfs "$DISK" || exit 90
cd "$DISK"
train() { "$PY" -m textweaver train "$CORPUS" --out "$DISK/run" --preset tiny --no-tensorboard --no-progress \
          --seed 2 --eval-every 2 "$@"; }
train --max-steps 2 2> "$OUT/first.err" || exit 91
sha256sum "$DISK"/run/last/* > "$OUT/before.sha"
dd if=/dev/zero of="$DISK/filler" bs=4k 2> /dev/null  # fill the disk to the last block
train --resume --max-steps 4 2> "$OUT/full.err"; echo $? > "$OUT/full.rc"
sha256sum "$DISK"/run/last/* > "$OUT/after.sha"
ls -A "$DISK/run" > "$OUT/listing"
tail -c 1 "$DISK/run/metrics.jsonl" | od -c | head -1 > "$OUT/metrics_tail"
rm "$DISK/filler"
train --resume --max-steps 4 2> "$OUT/freed.err"; echo $? > "$OUT/freed.rc"
"""


# Ways to mount the tmpfs, tried in turn: root (CI) in a private mount namespace, then anyone in a
# user namespace that maps them to root (where the kernel allows unprivileged user namespaces).
MOUNT_NAMESPACES = [
    *([["unshare", "--mount"]] if os.geteuid() == 0 else []),
    ["unshare", "--user", "--map-root-user", "--mount"],
]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux) to mount a private tmpfs")
def test_a_full_disk_is_reported_in_one_line_and_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    """A real full file system: a 4 MB tmpfs mounted in a private mount namespace, filled to the brim."""
    disk, out = tmp_path / "disk", tmp_path / "out"
    disk.mkdir()
    out.mkdir()
    env = {**os.environ, "DISK": str(disk), "OUT": str(out), "PY": sys.executable, "CORPUS": str(SHAKESPEARE)}
    refusals = []
    for namespace in MOUNT_NAMESPACES:
        done = subprocess.run([*namespace, "bash", "-c", DISK_FULL_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=300)  # fmt: skip
        if (out / "first.err").exists():  # mounted: the script went on to train
            break
        refusals.append(f"{' '.join(namespace)}: {done.stderr.strip()}")
    else:
        pytest.skip(f"cannot mount a tmpfs here ({'; '.join(refusals)}): run as root, as CI does")
    assert done.returncode == 0, done.stderr + (out / "first.err").read_text()
    full_err = (out / "full.err").read_text()
    assert (out / "full.rc").read_text().strip() == "2", full_err
    assert "Traceback" not in full_err
    error_lines = [line for line in full_err.splitlines() if line.startswith("textweaver: error: ")]
    assert len(error_lines) == 1 and "No space left on device" in error_lines[0], full_err
    assert (out / "after.sha").read_text() == (out / "before.sha").read_text()  # the previous checkpoint intact
    assert not {".last.tmp", ".best.tmp", ".last.old"} & set((out / "listing").read_text().split())
    assert "\\n" in (out / "metrics_tail").read_text()  # metrics.jsonl ends with a whole record
    freed_err = (out / "freed.err").read_text()
    assert (out / "freed.rc").read_text().strip() == "0", freed_err
    assert "from step 2" in freed_err


@pytest.mark.slow
def test_runs_killed_and_resumed_end_with_exactly_the_uninterrupted_loss(tmp_path: Path) -> None:
    """Same seed, same budget: kill -9 twice along the way, resume each time; the final validation
    loss equals the uninterrupted run's bit for bit (on the CPU, with the same thread count)."""
    budget = ["--max-steps", "400", "--threads", "1"]
    whole = subprocess.run([*TRAIN, "--out", str(tmp_path / "whole"), *budget], capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr
    out = tmp_path / "killed"
    for delay in (0.5, 0.9):
        proc = start(out, *budget, "--resume")
        wait_for(lambda: saved_steps(out) > 0)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    lost_upto = steps_in(out)
    assert 0 < lost_upto < 400, "the run finished before it could be killed: raise --max-steps"
    resumed = subprocess.run([*TRAIN, "--out", str(out), "--resume", *budget], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert f"from step {lost_upto}" in resumed.stderr

    def final(run: Path) -> dict[str, float]:
        return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])  # type: ignore[no-any-return]

    assert final(out)["step"] == final(tmp_path / "whole")["step"] == 400
    assert final(out)["val_loss"] == final(tmp_path / "whole")["val_loss"]
