"""Specification of textweaver.models.transformer: the key/value cache, and the context it may not exceed."""

from __future__ import annotations

import pytest
import torch

from textweaver.models.transformer import TransformerLanguageModel

from conftest import small


@pytest.mark.parametrize("positional", ["rotary", "learned"])
def test_transformer_kv_cache_matches_for_both_position_kinds(positional: str) -> None:
    model = small("transformer", positional=positional)
    assert isinstance(model, TransformerLanguageModel)
    x = torch.randint(0, 50, (1, 48))
    full, _ = model(x)
    state = None
    for t in range(48):
        logits, state = model.step(x[:, t], state)
    assert torch.allclose(logits, full[:, -1], atol=1e-5)


def test_transformer_refuses_positions_beyond_its_context() -> None:
    model = small("transformer")
    with pytest.raises(ValueError, match="exceed the context"):
        model(torch.zeros(1, 49, dtype=torch.long))
