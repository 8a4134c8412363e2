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
) -> Score:
    n = len(ids) if max_tokens is None else min(len(ids), max_tokens + 1)
    if n < 2:
        return Score(0.0, 0)
    context = model.config.context
    streams = max(1, min(batch_size, (n - 1) // context))
    length = (n - 1) // streams
    data = torch.from_numpy(np.asarray(ids[: streams * length + 1]).astype(np.int64)).to(device)
    x_all = data[:-1].view(streams, length)  # (S, L)
    y_all = data[1:].view(streams, length)
    carry = model.config.kind != "transformer"
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=device)
    state = None
    with autocast or nullcontext():
        for j in range(0, length, context):
            logits, new_state = model(x_all[:, j : j + context], state)
            state = new_state if carry else None
            y = y_all[:, j : j + context]
            total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum")
    model.train(was_training)
    return Score(float(total), streams * length)
