"""What a training run records beside its checkpoints: ``metrics.jsonl``, ``samples.jsonl`` and
TensorBoard scalars (``RUN_DIR/tensorboard``); and how they are read back (by the report and the
studio, also while the run is still writing them). Both logs hold one JSON object per line, so no
text a model writes can be mistaken for the format's own markers."""

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

METRICS, SAMPLES = "metrics.jsonl", "samples.jsonl"
LEGACY_SAMPLES = "samples.txt"  # runs written before samples.jsonl: read, never written
# a record without validation figures this often, between evaluations: the studio's live chart and
# TensorBoard follow the training loss (and speed) as it falls, not only at each evaluation
PROGRESS_EVERY_S = 2.0
_LEGACY_HEADER = re.compile(r"===== step (\d+) \| prompt (.*)")  # as samples.txt was written
_LEGACY_TEMPERATURE = re.compile(r"--- temperature (\S+)")


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
        record = {"step": step, "prompt": prompt, "samples": {str(t): text for t, text in texts.items()}}
        _append(self.run_dir / SAMPLES, json.dumps(record, ensure_ascii=False) + "\n")
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
    texts: list[tuple[str, str]] = field(default_factory=list)  # (temperature, text)


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
    """The evaluations' samples, oldest first (none if there are none yet); a line still being written
    waits for the next read. A run begun before samples.jsonl keeps its ``samples.txt``, read first.
    Raises OSError when a file exists but cannot be read."""
    evaluations = _read_legacy(run_dir / LEGACY_SAMPLES)
    try:
        data = (run_dir / SAMPLES).read_bytes()
    except FileNotFoundError:
        return evaluations
    for line in data[: data.rfind(b"\n") + 1].splitlines():
        with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
            record = json.loads(line)
            texts = [(str(t), str(text)) for t, text in record["samples"].items()]
            evaluations.append(Evaluation(int(record["step"]), str(record["prompt"]), texts))
    return evaluations


def _read_legacy(path: Path) -> list[Evaluation]:
    """``samples.txt`` as textweaver wrote it before samples.jsonl: a header line per evaluation and one
    per temperature (in-band markers, which a generated line could imitate: hence JSON lines now)."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    except FileNotFoundError:
        return []
    if lines[-1] == "":
        lines.pop()  # each text ended with a newline of the format's own
    found: list[tuple[int, str, list[tuple[str, list[str]]]]] = []  # (step, prompt, [(temperature, lines)])
    for line in lines:
        if header := _LEGACY_HEADER.fullmatch(line):
            found.append((int(header[1]), _unquote(header[2]), []))
        elif found and (temperature := _LEGACY_TEMPERATURE.fullmatch(line)):
            found[-1][2].append((temperature[1], []))
        elif found and found[-1][2]:
            found[-1][2][-1][1].append(line)
    return [Evaluation(step, prompt, [(t, "\n".join(text)) for t, text in texts]) for step, prompt, texts in found]


def _unquote(prompt: str) -> str:
    """The prompt as samples.txt wrote it with ``!r``, back to plain text."""
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
