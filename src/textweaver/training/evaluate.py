"""Scoring a model on held-out ids: nats per token and bits per character.

The ids are laid out as parallel contiguous streams read in windows of ``context`` tokens.
RNNs carry their state from window to window (as they do when generating); transformers start
each window afresh, so early positions in a window see less context (as in nanoGPT's eval).
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from textweaver.models import LanguageModel
from textweaver.training.distributed import Dist


@dataclass(frozen=True)
class Score:
    nats: float  # summed over scored tokens
    tokens: int  # tokens scored (the first token of each stream has no prediction)

    @property
    def nats_per_token(self) -> float:
        return self.nats / max(self.tokens, 1)

    def bits_per_char(self, chars_per_token: float) -> float:
        return self.nats_per_token / max(chars_per_token, 1e-9) / math.log(2)


@torch.inference_mode()
def score(
    model: LanguageModel,
    ids: np.ndarray,
    batch_size: int = 32,
    max_tokens: int | None = None,
    device: torch.device | str = "cpu",
    autocast: AbstractContextManager[object] | None = None,
    ranks: Dist | None = None,
) -> Score:
    """Score ``ids``; with ``ranks`` each process scores its share of the streams and the totals
    are summed, so every rank gets the score of the whole."""
    n = len(ids) if max_tokens is None else min(len(ids), max_tokens + 1)
    if n < 2:
        return Score(0.0, 0)
    context = model.config.context
    streams = max(1, min(batch_size, (n - 1) // context))
    length = (n - 1) // streams
    shard = slice(None) if ranks is None else slice(ranks.rank, None, ranks.world_size)
    # (S, L) views of this rank's streams: ``ids`` may be a memory map of any size, so only the window
    # being scored is ever copied (and widened to int64)
    x_all = np.asarray(ids[: streams * length]).reshape(streams, length)[shard]
    y_all = np.asarray(ids[1 : streams * length + 1]).reshape(streams, length)[shard]
    carry = model.config.kind != "transformer"
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    state = None
    with autocast or nullcontext():
        for j in range(0, length if len(x_all) else 0, context):
            x, y = (torch.from_numpy(a[:, j : j + context].astype(np.int64)).to(device) for a in (x_all, y_all))
            logits, new_state = model(x, state)
            state = new_state if carry else None
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
    model.train(was_training)
    nats, tokens = float(total), float(len(x_all) * length)
    if ranks is not None:
        nats, tokens = ranks.sum([nats, tokens])
    return Score(nats, int(tokens))
