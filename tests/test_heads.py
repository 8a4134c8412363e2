"""Specification of textweaver.models.heads: the adaptive softmax, a whole distribution that is cheaper to step."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from textweaver.models import set_unigram_prior
from textweaver.models.heads import AdaptiveHead

from conftest import small


@settings(max_examples=30, deadline=None)
@given(vocab=st.integers(8, 400), data=st.data())
def test_adaptive_softmax_log_probabilities_sum_to_one_and_give_the_training_loss(
    vocab: int, data: st.DataObject
) -> None:
    n_cuts = data.draw(st.integers(1, min(3, vocab - 1)))
    cutoffs = sorted(data.draw(st.sets(st.integers(1, vocab - 1), min_size=n_cuts, max_size=n_cuts)))
    model = small("lstm", vocab=vocab, cutoffs=cutoffs)
    x = torch.randint(0, vocab, (2, 12))
    y = torch.randint(0, vocab, (2, 12))
    log_p, _ = model(x)  # (B, T, V)
    assert log_p.shape == (2, 12, vocab)
    assert torch.allclose(torch.logsumexp(log_p, dim=-1), torch.zeros(2, 12), atol=1e-5)
    loss, _ = model(x, None, y)  # the training path computes each cluster only where needed
    assert loss.item() == pytest.approx(F.cross_entropy(log_p.reshape(-1, vocab), y.reshape(-1)).item(), abs=1e-5)


def test_adaptive_softmax_steps_equal_the_full_forward_pass_and_are_cheaper() -> None:
    model = small("lstm", vocab=4000, cutoffs=[500, 1000])
    full = small("lstm", vocab=4000)
    assert isinstance(model.head, AdaptiveHead) and not isinstance(full.head, AdaptiveHead)
    x = torch.randint(0, 4000, (3, 20))
    logits, _ = model(x)
    state, steps = None, []
    for t in range(20):
        step_logits, state = model.step(x[:, t], state)
        steps.append(step_logits)
    assert torch.allclose(torch.stack(steps, 1), logits, atol=1e-5)
    # the frequent tokens' softmax is 502 columns wide instead of 4,000; the rare ones sit on narrow tails
    assert model.head.head.weight.shape == (502, 32)
    assert sum(p.numel() for p in model.head.parameters()) < 0.5 * full.head.weight.numel()


def test_the_unigram_prior_makes_a_fresh_adaptive_model_predict_the_frequencies() -> None:
    model = small("lstm", vocab=300, cutoffs=[40, 100])
    counts = np.random.default_rng(0).zipf(1.5, 300).astype(np.int64)
    set_unigram_prior(model, counts)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("bias"):
                p.zero_()  # only the biases speak: the distribution is the prior itself
    log_p, _ = model(torch.zeros(1, 1, dtype=torch.long))
    expected = np.log((counts + 1) / (counts + 1).sum())
    assert np.allclose(log_p[0, 0].detach().numpy(), expected, atol=1e-4)
