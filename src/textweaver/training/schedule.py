"""Learning-rate schedule: linear warmup, then cosine decay over the run's progress.

``progress`` is the fraction of the budget used (steps, epochs or wall time, whichever is
furthest along), so the same schedule fits runs limited by ``--max-time`` and by ``--max-steps``.
"""

from __future__ import annotations

import math


def learning_rate(step: int, progress: float, peak: float, warmup_steps: int, min_ratio: float) -> float:
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = min(max(progress, 0.0), 1.0)
    floor = peak * min_ratio
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
