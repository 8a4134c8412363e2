"""Language models: the classic char-rnn recurrent nets and a small causal transformer.

Every model maps token ids ``(B, T)`` and an optional generation state to logits
``(B, T, vocab)`` and the new state, so the trainer, evaluator and generator treat them alike:

- RNN state: the hidden (and cell) tensors; passing it back continues the sequence, O(1) per token.
- Transformer state: a per-layer key/value cache; passing it back attends to everything cached.

Models know nothing about training, files or the CLI.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from textweaver.config import ModelConfig
from textweaver.models.heads import AdaptiveHead
from textweaver.models.rnn import RNNLanguageModel
from textweaver.models.transformer import CausalSelfAttention, TransformerLanguageModel

LanguageModel = RNNLanguageModel | TransformerLanguageModel


def build_model(config: ModelConfig) -> LanguageModel:
    config.validate()
    if config.kind == "transformer":
        return TransformerLanguageModel(config)
    return RNNLanguageModel(config)


def num_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied embedding/head matrix counts once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def detach_state(state: Any) -> Any:
    """The same state cut from the autograd graph (truncated BPTT between windows)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    return type(state)(detach_state(s) for s in state)


__all__ = ["LanguageModel", "build_model", "detach_state", "num_parameters", "set_dropout", "set_unigram_prior"]


def set_dropout(model: LanguageModel, p: float) -> None:
    """Change the dropout of a built model in place (it holds no weights; the config records it)."""
    model.config.dropout = p
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p
        elif isinstance(module, nn.RNNBase):
            module.dropout = p if module.num_layers > 1 else 0.0
        elif isinstance(module, CausalSelfAttention):  # its dropout_p
            module.dropout = p


def set_unigram_prior(model: LanguageModel, counts: np.ndarray) -> None:
    """Start the output layer's bias at the corpus's log unigram frequencies (add-one smoothed).

    A fresh model then predicts each token's overall frequency instead of a uniform guess: its first
    loss is the unigram entropy rather than log(vocabulary), which saves the first few hundred steps
    of a short run (most with a large vocabulary: measured in docs/training.md). The transformer's
    head has no bias and is left as it is.
    """
    smoothed = counts.astype(np.float64) + 1.0
    log_p = torch.from_numpy(np.log(smoothed / smoothed.sum())).float()
    if isinstance(model.head, AdaptiveHead):
        model.head.set_prior(log_p)
    elif model.head.bias is not None:
        with torch.no_grad():
            model.head.bias.copy_(log_p)
