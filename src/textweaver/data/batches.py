"""Training batches from a memory-mapped id array: (x, y) pairs of ``context`` tokens.

- :class:`RandomWindows` (transformer): each row is a random contiguous window, i.i.d. across
  steps, like nanoGPT.
- :class:`StreamWindows` (RNNs): the ids are cut into ``batch`` parallel streams read left to
  right, so row b of step s+1 continues row b of step s and the hidden state can be carried
  over (truncated back-propagation through time, as in char-rnn/torch-rnn). The state is reset
  when the streams wrap around.

Both copy only ``batch x (context + 1)`` ids per step; the corpus is never materialised as
windows or one-hot vectors. Under DistributedDataParallel every rank builds the same global
batch layout (same seed) and keeps only its ``rank`` share of the rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from textweaver.errors import TextweaverError


def _share(batch: int, rank: int, world: int) -> slice:
    per_rank = batch // world
    return slice(rank * per_rank, (rank + 1) * per_rank)


class RandomWindows:
    def __init__(self, ids: np.ndarray, batch: int, context: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.ids, self.batch, self.context = ids, batch, context
        self.rows = _share(batch, rank, world)  # this process's rows of the global batch
        self.gen = torch.Generator().manual_seed(seed)
        self._offsets = np.arange(context + 1)

    def next(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Inputs (B, T), targets (B, T), and whether carried state must be reset (always)."""
        starts = torch.randint(0, len(self.ids) - self.context, (self.batch,), generator=self.gen).numpy()[self.rows]
        rows = torch.from_numpy(self.ids[starts[:, None] + self._offsets].astype(np.int64))  # (B, T+1)
        return rows[:, :-1], rows[:, 1:], True

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["rng"])


class StreamWindows:
    def __init__(self, ids: np.ndarray, batch: int, context: int, seed: int, rank: int = 0, world: int = 1) -> None:
        # fewer streams than asked for when the corpus is too short to give each a window; with several
        # processes they must still split evenly, or the rows past the last whole share would be dropped
        # and N processes would no longer see one process's batch
        streams = max(1, (len(ids) - 1) // context)
        self.batch = min(batch, streams)
        if self.batch % world:
            fits = streams // world * world
            advice = f"--batch-size {fits}" if fits else f"at most {streams} processes"
            raise TextweaverError(
                f"the corpus holds only {streams} windows of --context {context} per pass, too few for --batch-size "
                f"{batch} over {world} processes: use {advice}, a smaller --context, or more text"
            )
        self.ids, self.context = ids, context
        self.stream_len = (len(ids) - 1) // self.batch
        self.rows = _share(self.batch, rank, world)
        self._rows = (np.arange(self.batch)[self.rows] * self.stream_len)[:, None] + np.arange(context + 1)
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


def make_batches(
    kind: str, ids: np.ndarray, batch: int, context: int, seed: int, rank: int = 0, world: int = 1
) -> RandomWindows | StreamWindows:
    return (RandomWindows if kind == "transformer" else StreamWindows)(ids, batch, context, seed, rank, world)
