"""What a training run records beside its checkpoints: ``metrics.jsonl``, ``samples.txt`` and
TensorBoard scalars (``RUN_DIR/tensorboard``)."""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any

from textweaver.errors import TextweaverError


class RunLog:
    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when asked for

            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def metrics(self, step: int, values: dict[str, float | int | str]) -> None:
        record = {"step": step, "time": round(time.time(), 3), **values}
        _append(self.run_dir / "metrics.jsonl", json.dumps(record) + "\n")
        if self._writer is not None:
            for name, value in values.items():
                if isinstance(value, int | float):
                    self._writer.add_scalar(name, value, step)
            self._writer.flush()

    def samples(self, step: int, prompt: str, texts: dict[float, str]) -> None:
        entry = f"===== step {step} | prompt {prompt!r}\n" + "".join(
            f"--- temperature {temperature}\n{text}\n" for temperature, text in texts.items()
        )
        _append(self.run_dir / "samples.txt", entry)
        if self._writer is not None:
            for temperature, text in texts.items():
                self._writer.add_text(f"sample/t{temperature}", text, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


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
