"""What a training run records beside its checkpoints: ``metrics.jsonl``, ``samples.txt`` and
TensorBoard scalars (``RUN_DIR/tensorboard``); and how they are read back (by the report and the
studio, also while the run is still writing them)."""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textweaver.errors import TextweaverError

METRICS, SAMPLES = "metrics.jsonl", "samples.txt"
# a record without validation figures this often, between evaluations: the studio's live chart and
# TensorBoard follow the training loss (and speed) as it falls, not only at each evaluation
PROGRESS_EVERY_S = 2.0
SAMPLE_HEADER = re.compile(r"===== step (\d+) \| prompt (.*)")  # as RunLog.samples writes them
SAMPLE_TEMPERATURE = re.compile(r"--- temperature (\S+)")


class RunLog:
    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when asked for

            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def metrics(self, step: int, values: dict[str, float | int | str]) -> None:
        record = {"step": step, "time": round(time.time(), 3), **values}
        _append(self.run_dir / METRICS, json.dumps(record) + "\n")
        if self._writer is not None:
            for name, value in values.items():
                if isinstance(value, int | float):
                    self._writer.add_scalar(name, value, step)
            self._writer.flush()

    def samples(self, step: int, prompt: str, texts: dict[float, str]) -> None:
        entry = f"===== step {step} | prompt {prompt!r}\n" + "".join(
            f"--- temperature {temperature}\n{text}\n" for temperature, text in texts.items()
        )
        _append(self.run_dir / SAMPLES, entry)
        if self._writer is not None:
            for temperature, text in texts.items():
                self._writer.add_text(f"sample/t{temperature}", text, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


@dataclass
class Evaluation:
    """The samples one evaluation wrote: a prompt and one text per temperature."""

    step: int
    prompt: str
    texts: list[tuple[str, list[str]]] = field(default_factory=list)  # (temperature, lines)


def read_metrics(run_dir: Path, start: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The records of ``metrics.jsonl`` from byte ``start`` and where the next read begins; a line still
    being written waits for the next read. Raises OSError when the file exists but cannot be read."""
    try:
        with (run_dir / METRICS).open("rb") as f:
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return [], start
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records, start + end


def read_samples(run_dir: Path) -> list[Evaluation]:
    """The evaluations' samples in ``samples.txt`` (none if it is missing); a half-written last one as it is.
    Raises OSError when the file exists but cannot be read."""
    try:
        lines = (run_dir / SAMPLES).read_text(encoding="utf-8", errors="replace").split("\n")
    except FileNotFoundError:
        return []
    if lines[-1] == "":
        lines.pop()  # each text ends with a newline of the format's own
    evaluations: list[Evaluation] = []
    for line in lines:
        if header := SAMPLE_HEADER.fullmatch(line):
            evaluations.append(Evaluation(int(header[1]), _unquote(header[2])))
        elif evaluations and (temperature := SAMPLE_TEMPERATURE.fullmatch(line)):
            evaluations[-1].texts.append((temperature[1], []))
        elif evaluations and evaluations[-1].texts:
            evaluations[-1].texts[-1][1].append(line)
    return evaluations


def _unquote(prompt: str) -> str:
    """The prompt as ``samples`` wrote it with ``!r``, back to plain text."""
    try:
        value = ast.literal_eval(prompt)
    except (ValueError, SyntaxError):
        return prompt
    return value if isinstance(value, str) else prompt


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all: into a new sibling file, synced, then renamed over
    ``path``, so a reader sees the old file or the whole new one, and a failure or Ctrl-C leaves no
    temporary file. The umask decides the permissions, as for any new file. Raises OSError."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def _append(path: Path, text: str) -> None:
    """Append whole records only: a failed write (disk full) is undone and reported in one line."""
    data = memoryview(text.encode("utf-8"))
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as e:
        raise _cannot_write(path, e) from None
    try:
        size = os.fstat(fd).st_size
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError as e:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise _cannot_write(path, e) from None
    finally:
        os.close(fd)


def _cannot_write(path: Path, e: OSError) -> TextweaverError:
    return TextweaverError(
        f"{path}: cannot write ({e.strerror or e}); the last checkpoint is saved: free some disk space, "
        "then rerun the same command with --resume"
    )
