"""Specification of textweaver.config: a model configuration is checked, with the reason, before a model is built."""

from __future__ import annotations

import pytest

from textweaver.config import ModelConfig
from textweaver.errors import TextweaverError
from textweaver.models import build_model


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "cnn"}, "unknown model"),
        ({"kind": "transformer", "n_embd": 30, "n_head": 4}, "not divisible"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_configs_are_refused_with_a_reason(changes: dict[str, object], message: str) -> None:
    cfg = ModelConfig(vocab_size=10, **changes)  # type: ignore[arg-type]
    with pytest.raises(TextweaverError, match=message):
        build_model(cfg)


def test_adaptive_softmax_is_refused_for_the_transformer_and_for_bad_cutoffs() -> None:
    for kind, cutoffs in (("transformer", [10]), ("lstm", [30, 20]), ("lstm", [50]), ("lstm", [0])):
        with pytest.raises(TextweaverError, match="cutoffs"):
            ModelConfig(kind=kind, vocab_size=50, cutoffs=cutoffs).validate()
