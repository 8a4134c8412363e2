"""What a training run records beside its checkpoints: ``metrics.jsonl``, ``samples.txt`` and
TensorBoard scalars (``RUN_DIR/tensorboard``)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class RunLog:
    def __init__(self, run_dir: Path, tensorboard: bool = True) -> None:
        self.run_dir = run_dir
        self._writer: Any = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when asked for

            self._writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def metrics(self, step: int, values: dict[str, float | int | str]) -> None:
        record = {"step": step, "time": round(time.time(), 3), **values}
        with (self.run_dir / "metrics.jsonl").open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for name, value in values.items():
                if isinstance(value, int | float):
                    self._writer.add_scalar(name, value, step)
            self._writer.flush()

    def samples(self, step: int, prompt: str, texts: dict[float, str]) -> None:
        with (self.run_dir / "samples.txt").open("a", encoding="utf-8") as f:
            f.write(f"===== step {step} | prompt {prompt!r}\n")
            for temperature, text in texts.items():
                f.write(f"--- temperature {temperature}\n{text}\n")
        if self._writer is not None:
            for temperature, text in texts.items():
                self._writer.add_text(f"sample/t{temperature}", text, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
