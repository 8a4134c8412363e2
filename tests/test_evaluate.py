"""Specification of textweaver.training.evaluate: scoring token ids in bounded memory."""

from __future__ import annotations

import math
from pathlib import Path


def test_scoring_copies_only_the_window_being_scored() -> None:
    """Bounded memory: scoring a memory-mapped file of a million tokens allocates per window, not an int64
    copy of the whole (8 MB here; 8 GB for a 1 GB corpus)."""
    import tempfile
    import tracemalloc

    import numpy as np

    from textweaver.config import ModelConfig
    from textweaver.models import build_model
    from textweaver.training.evaluate import score

    model = build_model(ModelConfig(kind="lstm", vocab_size=65, n_layer=1, n_embd=16, context=64))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ids.bin"
        np.random.default_rng(0).integers(0, 65, 1_000_000, dtype=np.uint16).tofile(path)
        ids = np.memmap(path, dtype=np.uint16, mode="r")
        tracemalloc.start()
        result = score(model, ids)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del ids
    assert result.tokens > 990_000 and math.isfinite(result.nats)
    assert peak < 1_000_000, f"scoring allocated {peak:,} bytes at its peak"
