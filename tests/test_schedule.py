"""training/schedule.py: linear warmup to the peak, then cosine decay to peak x min_ratio over the progress.

The page's Train panel mirrors this function in JavaScript (export/train_step.py ships its parameters)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from textweaver.training.schedule import learning_rate


def test_warmup_rises_linearly_to_the_peak_then_cosine_decays_to_the_floor() -> None:
    peak, warmup, ratio = 3e-3, 10, 0.1
    assert [learning_rate(s, 0.0, peak, warmup, ratio) for s in (0, 4, 9)] == pytest.approx([3e-4, 1.5e-3, 3e-3])
    assert learning_rate(10, 0.0, peak, warmup, ratio) == pytest.approx(peak)  # warmup over: progress 0 is the peak
    assert learning_rate(500, 0.5, peak, warmup, ratio) == pytest.approx((peak + peak * ratio) / 2)
    assert learning_rate(900, 1.0, peak, warmup, ratio) == pytest.approx(peak * ratio)
    assert learning_rate(900, 1.7, peak, warmup, ratio) == pytest.approx(peak * ratio)  # past the budget: the floor
    assert learning_rate(900, -0.2, peak, warmup, ratio) == pytest.approx(peak)


@given(st.floats(0, 1), st.floats(0, 1), st.floats(1e-5, 1), st.floats(0, 1))
def test_after_warmup_the_rate_falls_monotonically_between_peak_and_floor(
    a: float, b: float, peak: float, ratio: float
) -> None:
    early, late = sorted((a, b))
    high, low = learning_rate(100, early, peak, 10, ratio), learning_rate(100, late, peak, 10, ratio)
    assert peak * ratio - 1e-12 <= low <= high + 1e-12 <= peak + 2e-12
    assert not math.isnan(high)
