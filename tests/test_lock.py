"""Specification of textweaver.run.lock: one writer per run folder, released by the OS even on kill -9, and no
folder left behind by a run refused before it wrote anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from textweaver import train
from textweaver.errors import TextweaverError
from textweaver.run import lock

from conftest import SHAKESPEARE, TINY, one_line_error, run_cli


def test_a_second_writer_of_a_run_is_refused_until_the_first_dies_even_by_kill_9(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two `train --resume` on one --out (a requeued job overlapping its predecessor) would overwrite each
    other's checkpoints: the second gets one line naming the first's pid; the OS frees the lock on kill -9."""
    run = tmp_path / "r"
    train([SHAKESPEARE], run, max_steps=2, **TINY)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from textweaver.run import lock\n"
         "with lock.held(Path(sys.argv[1]), 'x'):\n    print('held', flush=True); time.sleep(600)",
         str(run / lock.LOCK)], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = (run / "last" / "config.json").read_bytes()
        capsys.readouterr()
        code, out, err = run_cli(["train", str(SHAKESPEARE), "--out", str(run), "--resume", "--max-steps", "4"], capsys)
        one_line_error(code, out, err, f"in use by another textweaver process \\(pid {holder.pid}\\)")
        assert (run / "last" / "config.json").read_bytes() == before  # nothing was touched
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
    assert train([SHAKESPEARE], run, resume=True, max_steps=4).steps == 4
    assert not (run / lock.HOLDER).exists()  # released with the run


def test_a_refused_fresh_run_leaves_no_folder_behind(tmp_path: Path) -> None:
    with pytest.raises(TextweaverError, match="--max-steps must be positive"):
        train([SHAKESPEARE], tmp_path / "new", max_steps=-1, **TINY)
    assert not (tmp_path / "new").exists()
