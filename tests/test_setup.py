"""Specification of textweaver.training.setup: opening a run and building what it trains with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from textweaver.config import ModelConfig
from textweaver.errors import TextweaverError
from textweaver.training import calibrate
from textweaver.training.recipe import Speed

from conftest import SHAKESPEARE, TINY


def test_a_fresh_run_starts_its_output_bias_at_the_corpus_frequencies(tmp_path: Path) -> None:
    from textweaver import load, train

    train([SHAKESPEARE], tmp_path / "r", max_steps=1, lr=1e-9, **{**TINY, "model": "lstm"})
    model = load(tmp_path / "r")
    ids = model.tokenizer.encode(SHAKESPEARE.read_text(encoding="utf-8"))
    counts = np.bincount(ids[: int(0.9 * len(ids))], minlength=len(model.tokenizer)) + 1.0
    bias = model.model.head.bias.detach().numpy()
    assert np.allclose(bias, np.log(counts / counts.sum()), atol=0.02)


def test_a_budget_spent_measuring_before_the_first_step_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy machine can spend a short --max-time on the speed measurement: the run must say so,
    not end 'done' at step 0 without a model."""
    import time

    from textweaver import train
    from textweaver.errors import TextweaverError

    def slow(config: ModelConfig, batch: int, device: torch.device) -> Speed:
        time.sleep(0.6)
        return Speed(fp32=1e4, bf16=1e4)

    monkeypatch.setattr(calibrate, "measure", slow)
    with pytest.raises(TextweaverError, match=r"the --max-time of 0\.5 s was used up before the first step: .* took"):
        train([SHAKESPEARE], tmp_path / "r", max_time=0.5, tensorboard=False)


@pytest.mark.parametrize(("mine", "other", "refused"), [
    ((True, 40), (True, 40), False),  # shared storage: every rank resumes from step 40
    ((False, -1), (False, -1), False),  # a fresh run everywhere
    ((True, 40), (False, -1), True),  # node-local --out: the other node would start afresh
    ((True, 40), (True, 20), True),  # two different checkpoints
])  # fmt: skip
def test_every_process_must_resume_from_the_same_checkpoint(
    tmp_path: Path, mine: tuple[bool, int], other: tuple[bool, int], refused: bool
) -> None:
    from textweaver.training.distributed import Dist
    from textweaver.training.setup import agree_on_checkpoint

    class TwoRanks(Dist):
        def max(self, values: list[float]) -> list[float]:  # the other rank holds `other`
            peer = [float(other[0]), -float(other[0]), float(other[1]), -float(other[1])]
            return [max(a, b) for a, b in zip(values, peer, strict=True)]

    ranks = TwoRanks(rank=0, world_size=2)
    if refused:
        with pytest.raises(TextweaverError, match="not every process sees the same checkpoint.*shares"):
            agree_on_checkpoint(*mine, tmp_path, ranks)
    else:
        agree_on_checkpoint(*mine, tmp_path, ranks)
