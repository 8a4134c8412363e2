"""Training batches from a memory-mapped id array: (x, y) pairs of ``context`` tokens.

- :class:`RandomWindows` (transformer): each row is a random contiguous window, i.i.d. across
  steps, like nanoGPT.
- :class:`StreamWindows` (RNNs): the ids are cut into ``batch`` parallel streams read left to
  right, so row b of step s+1 continues row b of step s and the hidden state can be carried
  over (truncated back-propagation through time, as in char-rnn/torch-rnn). The state is reset
  when the streams wrap around.

Both copy only ``batch x (context + 1)`` ids per step; the corpus is never materialised as
windows or one-hot vectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class RandomWindows:
    def __init__(self, ids: np.ndarray, batch: int, context: int, seed: int) -> None:
        self.ids, self.batch, self.context = ids, batch, context
        self.gen = torch.Generator().manual_seed(seed)
        self._offsets = np.arange(context + 1)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs (B, T), targets (B, T), and whether carried state must be reset (always)."""
        starts = torch.randint(0, len(self.ids) - self.context, (self.batch,), generator=self.gen).numpy()
        rows = torch.from_numpy(self.ids[starts[:, None] + self._offsets].astype(np.int64))  # (B, T+1)
        return rows[:, :-1], rows[:, 1:], True

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["rng"])


class StreamWindows:
    def __init__(self, ids: np.ndarray, batch: int, context: int, seed: int) -> None:
        # fewer streams than asked for when the corpus is too short to give each a window
        self.batch = max(1, min(batch, (len(ids) - 1) // context))
        self.ids, self.context = ids, context
        self.stream_len = (len(ids) - 1) // self.batch
        self._rows = (np.arange(self.batch) * self.stream_len)[:, None] + np.arange(context + 1)
        self.pos = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        reset = self.pos == 0
        rows = torch.from_numpy(self.ids[self._rows + self.pos].astype(np.int64))  # (B, T+1)
        self.pos += self.context
        if self.pos + self.context + 1 > self.stream_len:
            self.pos = 0
        return rows[:, :-1], rows[:, 1:], reset

    def state_dict(self) -> dict[str, Any]:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos = int(state["pos"])


def make_batches(kind: str, ids: np.ndarray, batch: int, context: int, seed: int) -> RandomWindows | StreamWindows:
    return (RandomWindows if kind == "transformer" else StreamWindows)(ids, batch, context, seed)
