"""The queue that trains the studio's runs one at a time, each in its own process.

A training is a separate ``python -m textweaver train ... --resume`` process (the CLI's own code path),
so a crash or an out-of-memory kill ends that process, never the studio; its last error line becomes
the run's message. Closing the studio stops each training (it saves its checkpoint) and marks it
interrupted, for a later studio to resume.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from textweaver.app.studio.workspace import (
    BASES,
    INTERRUPTED,
    LOG_FILE,
    STUDIO_FILE,
    UNFINISHED,
    Conflict,
    NotFound,
    RunRecord,
    Workspace,
)
from textweaver.config import NO_SOURCE, parse_duration
from textweaver.errors import TextweaverError


class Trainer:
    """Trains the queued runs one at a time (``parallel`` at most), each in its own process."""

    def __init__(self, workspace: Workspace, parallel: int = 1) -> None:
        self.workspace = workspace
        self.parallel = parallel
        self.queue: deque[str] = deque()
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping: set[str] = set()
        self.cond = threading.Condition(workspace.lock)
        self.closed = False
        for record in self._records():  # a previous studio ended while these were waiting or training
            if record.status in UNFINISHED:
                record.status, record.message = "interrupted", INTERRUPTED
                workspace.save_record(record)
        self.thread = threading.Thread(target=self._loop, name="textweaver-trainer", daemon=True)
        self.thread.start()

    def submit(self, name: str, budget: str | None = None) -> None:
        """Queue a new run, or resume one (with a new total ``budget`` if given)."""
        with self.cond:
            record = self.workspace.record(name)
            if record.status in UNFINISHED:
                raise Conflict(f"run {name!r} is already {record.status}")
            if budget is not None:
                parse_duration(budget, "time budget")
                record.budget = budget
            record.status, record.message = "queued", ""
            self.workspace.save_record(record)
            self.queue.append(name)
            self.cond.notify_all()

    def stop(self, name: str) -> None:
        """A running training saves a checkpoint and ends (SIGTERM, as Ctrl-C); a queued one leaves the queue."""
        with self.cond:
            record = self.workspace.record(name)
            if name in self.queue:
                self.queue.remove(name)
                record.status, record.message = "stopped", "taken out of the queue"
                self.workspace.save_record(record)
            elif name in self.running:
                self.stopping.add(name)
                self.running[name].send_signal(signal.SIGTERM)
            else:
                raise Conflict(f"run {name!r} is not training (it is {record.status})")

    def position(self, name: str) -> int | None:
        with self.cond:
            return list(self.queue).index(name) + 1 if name in self.queue else None

    def close(self, timeout: float = 30.0) -> None:
        """Stop every training (each saves its checkpoint) and the queue; the runs show as interrupted."""
        with self.cond:
            self.closed = True
            procs = list(self.running.values())
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            self.cond.notify_all()
        for proc in procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.thread.join(timeout)

    def _records(self) -> Iterable[RunRecord]:
        for path in self.workspace.runs_dir.glob(f"*/{STUDIO_FILE}"):
            with contextlib.suppress(OSError, ValueError, TypeError):
                yield RunRecord(**json.loads(path.read_text(encoding="utf-8")))

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.closed and (not self.queue or len(self.running) >= self.parallel):
                    self.cond.wait()
                if self.closed:
                    return
                name = self.queue.popleft()
                try:
                    proc = self._start(name)
                except (OSError, TextweaverError, NotFound) as e:
                    self._finish(name, "failed", f"could not start the training: {e}")
                    continue
                self.running[name] = proc
            threading.Thread(target=self._wait, args=(name, proc), daemon=True).start()

    def _start(self, name: str) -> subprocess.Popen[bytes]:
        record = self.workspace.record(name)
        run_dir = self.workspace.run_dir(name)
        command = train_command(self.workspace, record, run_dir)
        record.status = "running"
        self.workspace.save_record(record)
        log = (run_dir / LOG_FILE).open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # its own session: a Ctrl-C in the studio's terminal reaches the studio, which stops each training
        # (close) and marks it interrupted, instead of each training ending on its own as if it were done
        with log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=run_dir, env=env, start_new_session=True)  # fmt: skip

    def _wait(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        with self.cond:
            self.running.pop(name, None)
            stopped = name in self.stopping
            self.stopping.discard(name)
            if self.closed:
                status, message = "interrupted", INTERRUPTED
            elif stopped and code == -signal.SIGTERM:  # stopped while starting, before it could save anything
                status, message = "stopped", "stopped before its first step: resume starts it"
            elif code == 0:
                status, message = ("stopped", "stopped: resume continues it") if stopped else ("done", "")
                if not stopped and "nothing to do" in last_line(self.workspace.runs_dir / name / LOG_FILE):
                    message = "it already reached its time budget: resume it with a larger one"
            else:
                status, message = "failed", last_error(self.workspace.runs_dir / name / LOG_FILE, code)
                with contextlib.suppress(NotFound, OSError, ValueError):  # the texts by their names, not their files
                    for text in self.workspace.record(name).texts:
                        path, shown = self.workspace.text_path(text)
                        message = message.replace(str(path), shown)
            self._finish(name, status, message)
            self.cond.notify_all()

    def _finish(self, name: str, status: str, message: str) -> None:
        with contextlib.suppress(NotFound, OSError, ValueError):
            record = self.workspace.record(name)
            record.status, record.message = status, message
            self.workspace.save_record(record)


def train_command(workspace: Workspace, record: RunRecord, run_dir: Path) -> list[str]:
    """``textweaver train`` for a run: the same command a user would type (``--resume`` continues a run
    that has a checkpoint and starts one that has none)."""
    command = [sys.executable, "-m", "textweaver", "train"]
    command += [str(workspace.text_path(t)[0]) for t in record.texts]
    command += ["--out", str(run_dir), "--max-time", record.budget, "--resume", "--no-progress"]
    if record.model != "auto":
        kind, preset = record.model.split()
        command += ["--model", kind, "--preset", preset]
    if record.init_from is not None:
        base = record.init_from if record.init_from in (*BASES, NO_SOURCE) else str(workspace.run_dir(record.init_from))
        command += ["--init-from", base]
    if record.eval_every is not None:
        command += ["--eval-every", str(record.eval_every)]
    return command


def _log_lines(log: Path) -> list[str]:
    try:
        return log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def last_line(log: Path, lines: list[str] | None = None) -> str:
    """The last non-empty line of a training's log (``lines``, if already read)."""
    return next((line.strip() for line in reversed(_log_lines(log) if lines is None else lines) if line.strip()), "")


def last_error(log: Path, code: int) -> str:
    """One line for a failed training: its ``textweaver: error:`` line, or what killed it."""
    lines = _log_lines(log)
    for line in reversed(lines):
        if line.startswith("textweaver: error: "):
            return line.removeprefix("textweaver: error: ")
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        why = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"the training process was killed by {name}{why}: resume continues from the last checkpoint"
    tail = last_line(log, lines)
    return f"the training process failed (exit status {code}){': ' + tail[:200] if tail else ''}"
