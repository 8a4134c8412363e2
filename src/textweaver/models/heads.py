"""Output layers: hidden states -> log-probabilities over the vocabulary.

An adaptive softmax (Grave et al. 2017, "Efficient softmax approximation for GPUs") for large
vocabularies: the ``cutoffs[0]`` most frequent tokens (ids are frequency-ordered) plus one entry
per rare cluster form the head; each cluster's own softmax sits on a narrower projection. Training
computes a cluster only for the tokens whose target falls in it, so a 4,500-character Chinese
vocabulary costs ~1,000 output columns per token instead of 4,500 (measured in docs/training.md).
Inference returns the exact full log-distribution, built with concatenations only (no in-place
writes), so ONNX export and the browser worker read it like logits.

Memory: parameters ~ width x (cutoffs[0] + clusters) + sum over clusters of width x width/4^i +
(width/4^i) x cluster size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DIV_VALUE = 4  # each cluster's projection is this many times narrower than the previous one's


class AdaptiveHead(nn.Module):
    def __init__(self, width: int, vocab_size: int, cutoffs: list[int]) -> None:
        super().__init__()
        self.bounds = [*cutoffs, vocab_size]  # cluster i holds ids bounds[i] .. bounds[i+1]-1
        self.shortlist = cutoffs[0]
        self.head = nn.Linear(width, self.shortlist + len(cutoffs))  # (C) -> frequent tokens + one per cluster
        self.tails = nn.ModuleList(
            nn.Sequential(
                nn.Linear(width, max(1, width // DIV_VALUE ** (i + 1)), bias=False),
                nn.Linear(max(1, width // DIV_VALUE ** (i + 1)), self.bounds[i + 1] - self.bounds[i]),
            )
            for i in range(len(cutoffs))
        )

    def log_prob(self, h: torch.Tensor) -> torch.Tensor:
        """Full log-probabilities ``(..., V)`` for hidden states ``(..., C)``."""
        head = F.log_softmax(self.head(h).float(), dim=-1)  # (..., shortlist + clusters)
        parts = [head[..., : self.shortlist]]
        for i, tail in enumerate(self.tails):
            cluster = head[..., self.shortlist + i : self.shortlist + i + 1]  # log P(cluster i)
            parts.append(cluster + F.log_softmax(tail(h).float(), dim=-1))
        return torch.cat(parts, dim=-1)

    def loss(self, h: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean negative log-likelihood of ``targets`` ``(N,)`` given ``h`` ``(N, C)``, computing each
        cluster's softmax only for the rows whose target is in it."""
        head = F.log_softmax(self.head(h).float(), dim=-1)  # (N, shortlist + clusters)
        cluster = torch.bucketize(targets, torch.tensor(self.bounds, device=targets.device), right=True) - 1
        index = torch.where(targets < self.shortlist, targets, self.shortlist + cluster)  # (N,)
        nll = -head.gather(1, index[:, None]).squeeze(1)  # (N,)
        for i, tail in enumerate(self.tails):
            rows = (cluster == i).nonzero().squeeze(1)
            if not rows.numel():  # no target here this time: a zero term keeps every weight in the graph (DDP)
                nll = nll + 0.0 * tail(h[:1]).sum()
                continue
            log_p = F.log_softmax(tail(h[rows]).float(), dim=-1)  # (n_i, cluster size)
            within = (targets[rows] - self.bounds[i])[:, None]
            nll = nll.index_add(0, rows, -log_p.gather(1, within).squeeze(1))
        return nll.mean()

    @torch.no_grad()
    def set_prior(self, log_p: torch.Tensor) -> None:
        """Biases that make the distribution equal ``log_p`` ``(V,)`` before any training."""
        head_bias = [log_p[: self.shortlist]]
        for i, tail in enumerate(self.tails):
            lo, hi = self.bounds[i], self.bounds[i + 1]
            mass = torch.logsumexp(log_p[lo:hi], dim=0)
            head_bias.append(mass[None])
            out: nn.Linear = tail[1]  # type: ignore[index]
            out.bias.copy_(log_p[lo:hi] - mass)
        self.head.bias.copy_(torch.cat(head_bias))
