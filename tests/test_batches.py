"""Specification of textweaver.data.batches: training windows, the global batch split evenly between processes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textweaver.data.batches import StreamWindows
from textweaver.errors import TextweaverError


@pytest.mark.parametrize("world", [2, 3])
def test_stream_windows_of_several_processes_are_one_processs_batch_or_refused(world: int) -> None:
    """Each rank keeps its share of the global batch; on a corpus too short for the batch the streams
    shrink, and a share that no longer divides evenly is refused instead of dropping rows."""
    ids = np.arange(6 * 16 + 1) % 50  # 6 windows of 16
    one = StreamWindows(ids, batch=6, context=16, seed=0)
    ranks = [StreamWindows(ids, batch=6, context=16, seed=0, rank=r, world=world) for r in range(world)]
    for _ in range(3):
        x, y, _ = one.next()
        parts = [w.next() for w in ranks]
        assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    short = np.arange(5 * 16 + 1) % 50  # 5 windows: a batch of 6 shrinks to 5, which 2 or 3 processes cannot share
    with pytest.raises(TextweaverError, match=rf"only 5 windows of --context 16 .* over {world} processes: use "):
        StreamWindows(short, batch=6, context=16, seed=0, rank=0, world=world)
    assert StreamWindows(short, batch=6, context=16, seed=0).batch == 5  # one process still shrinks
