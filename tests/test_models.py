"""Models: incremental steps equal the full forward pass, and each model learns real text."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from textweaver.config import ModelConfig
from textweaver.data.vocab import VocabCounter
from textweaver.models import build_model, detach_state, num_parameters, set_dropout, set_unigram_prior

from conftest import SHAKESPEARE, XIYOUJI, small

KINDS = ["lstm", "gru", "transformer"]


@pytest.mark.parametrize("kind", KINDS)
def test_step_by_step_logits_equal_the_full_forward_pass(kind: str) -> None:
    model = small(kind)
    x = torch.randint(0, 50, (3, 40))
    full, _ = model(x)
    state, steps = None, []
    for t in range(x.shape[1]):
        logits, state = model.step(x[:, t], state)
        steps.append(logits)
    assert torch.allclose(torch.stack(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_prefill_then_continue_equals_the_full_forward_pass(kind: str) -> None:
    model = small(kind)
    x = torch.randint(0, 50, (2, 30))
    full, _ = model(x)
    first, state = model(x[:, :11])
    second, _ = model(x[:, 11:], state)
    assert torch.allclose(torch.cat([first, second], dim=1), full, atol=1e-5)


def test_tied_weights_share_one_matrix_and_count_once() -> None:
    tied, untied = small("transformer"), small("transformer", tie_weights=False)
    assert tied.head.weight is tied.wte.weight
    assert num_parameters(untied) - num_parameters(tied) == 50 * 32


def test_detach_state_cuts_the_graph_but_keeps_values() -> None:
    model = small("lstm").train()
    _, state = model(torch.randint(0, 50, (2, 5)))
    assert all(s.requires_grad for s in state)
    detached = detach_state(state)
    assert not any(s.requires_grad for s in detached)
    assert all(torch.equal(a, b) for a, b in zip(state, detached, strict=True))


def _ids(path: Path, chars: int) -> tuple[torch.Tensor, int]:
    text = path.read_text(encoding="utf-8")[:chars]
    counter = VocabCounter("char")
    counter.update(text)
    tok = counter.build()
    return torch.from_numpy(tok.encode(text)), len(tok)


@pytest.mark.parametrize(
    ("kind", "corpus"),
    [("lstm", SHAKESPEARE), ("gru", SHAKESPEARE), ("transformer", SHAKESPEARE), ("transformer", XIYOUJI)],
)
def test_each_model_overfits_a_small_real_text(kind: str, corpus: Path) -> None:
    """200 full-batch steps on 1,500 characters memorise them: the loss falls from ln(vocab)
    (~3.9 nats for the Shakespeare excerpt, ~6.2 for the Chinese one) to under 0.5."""
    ids, vocab = _ids(corpus, 1500)
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, vocab_size=vocab, n_layer=2, n_embd=64, n_head=4, context=32)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3 if kind == "transformer" else 1e-2)
    windows = ids[: (len(ids) - 1) // 32 * 32 + 1]
    x, y = windows[:-1].view(-1, 32), windows[1:].view(-1, 32)
    for _ in range(200):
        logits, _ = model(x)
        loss = F.cross_entropy(logits.view(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5


def test_the_unigram_prior_starts_the_loss_at_the_unigram_entropy() -> None:
    ids = np.fromiter((ord(c) % 500 for c in XIYOUJI.read_text(encoding="utf-8")), dtype=np.int64)
    config = ModelConfig(kind="lstm", vocab_size=500, n_layer=2, n_embd=64, context=32)
    torch.manual_seed(0)
    model = build_model(config)
    x = torch.from_numpy(ids[: 32 * 32].reshape(32, 32))
    y = torch.from_numpy(ids[1 : 32 * 32 + 1].reshape(32, 32))

    def loss() -> float:
        with torch.no_grad():
            return float(F.cross_entropy(model(x)[0].reshape(-1, 500), y.reshape(-1)))

    before = loss()
    counts = np.bincount(ids, minlength=500)
    set_unigram_prior(model, counts)
    p = (counts + 1) / (counts + 1).sum()
    entropy = float(-(np.bincount(y.reshape(-1).numpy(), minlength=500) * np.log(p)).sum() / y.numel())
    assert before > math.log(500) - 0.1  # a fresh model guesses uniformly
    assert loss() == pytest.approx(entropy, abs=0.1)  # with the prior it starts at the unigram cross-entropy
    assert loss() < before - 0.5


def test_set_dropout_reaches_every_dropout_of_a_built_model() -> None:
    for kind in ("lstm", "transformer"):
        model = build_model(ModelConfig(kind=kind, vocab_size=10, n_layer=2, n_embd=16, n_head=2, context=8))
        set_dropout(model, 0.3)
        assert model.config.dropout == 0.3
        rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
        rates += [m.dropout for m in model.modules() if hasattr(m, "dropout") and isinstance(m.dropout, float)]
        assert rates and all(r == 0.3 for r in rates)
