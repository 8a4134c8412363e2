"""Specification of textweaver.training.calibrate: measuring this machine's training speed per precision."""

from __future__ import annotations

import torch

from textweaver.config import ModelConfig
from textweaver.training import calibrate


def test_calibration_measures_both_precisions_without_touching_the_random_stream() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    speed = calibrate.measure(
        ModelConfig(kind="lstm", vocab_size=50, n_layer=1, n_embd=32, context=16), 4, torch.device("cpu")
    )
    assert torch.equal(torch.rand(3), expected)
    assert speed.fp32 > 0 and speed.bf16 > 0
