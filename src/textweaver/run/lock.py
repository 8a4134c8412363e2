"""One writer per folder: an OS file lock held while a run trains or an export is written.

A second writer (a requeued job overlapping its predecessor, a second terminal) is refused at once
with one line naming the holder's pid, instead of both overwriting each other's checkpoints. The
operating system releases the lock when its holder dies, even by ``kill -9``, so a crash never leaves
a folder locked. The lock is ``filelock``'s (flock on POSIX, msvcrt on Windows); the holder's pid is
written beside it for the message. A run keeps its lock in ``RUN/.lock``; an export, whose folder is
replaced whole, in ``.NAME.lock`` beside it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from textweaver.errors import TextweaverError

LOCK = ".lock"
HOLDER = LOCK + ".pid"  # beside the lock: the holder's pid, for the message


@contextlib.contextmanager
def held(lock: Path, what: str) -> Iterator[None]:
    """Hold the lock file ``lock`` for the block, or refuse at once: ``what`` names the folder it guards."""
    holder = lock.with_name(lock.name + ".pid")
    file_lock = FileLock(lock, timeout=0)
    try:
        file_lock.acquire()
    except Timeout:
        try:
            pid = holder.read_text().strip() or "unknown"
        except OSError:
            pid = "unknown"
        raise TextweaverError(
            f"{what} is in use by another textweaver process (pid {pid}): wait for it to end or stop it, "
            "or choose another --out"
        ) from None
    except OSError as e:  # a read-only folder, a full disk
        raise TextweaverError(
            f"{lock}: cannot take the lock ({e.strerror or e}): free disk space or choose another --out"
        ) from None
    try:
        with contextlib.suppress(OSError):  # the pid is only for the message; a full disk must not stop here
            holder.write_text(f"{os.getpid()}\n")
        yield
    finally:
        with contextlib.suppress(OSError):
            holder.unlink(missing_ok=True)  # while still held: the next holder's pid is never removed
        file_lock.release()  # the empty lock file stays: removing it could let two processes hold it


@contextlib.contextmanager
def run_locked(run_dir: Path, enabled: bool = True) -> Iterator[None]:
    """Hold ``run_dir``'s lock while training (``enabled``: this process writes the run). A folder this
    call created is removed again if the run fails before writing anything but the lock."""
    if not enabled:
        yield
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise TextweaverError(f"--out {run_dir}: exists and is not a directory: choose another --out")
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with held(run_dir / LOCK, f"the run {run_dir}"):
            yield
    except BaseException:
        if created and {p.name for p in run_dir.iterdir()} <= {LOCK, HOLDER}:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
