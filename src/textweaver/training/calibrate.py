"""How fast this device trains a model, in float32 and in bfloat16 autocast: the facts the recipe
needs about the hardware. A few training steps on a synthetic batch, a second or two on a CPU.

bf16 is measured rather than assumed: CPUs with AMX or AVX512-BF16 run an LSTM's matrix products
~2x faster with it, CPUs without emulate it slowly, and a small transformer on the CPU can lose.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from textweaver.config import ModelConfig
from textweaver.device import autocast_for
from textweaver.models import build_model
from textweaver.training.recipe import Speed

# A 2x512 LSTM at 2,048 tokens a step, bf16/float32 over 5 runs: 2 + 5 steps gave 0.97-1.25x, 3 + 8
# steps 1.23-1.34x (training itself: 1.24x)
WARMUP_STEPS, TIMED_STEPS = 3, 8


def bf16_possible(device: torch.device) -> bool:
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu"


def measure(config: ModelConfig, batch: int, device: torch.device) -> Speed:
    """Training tokens per second of ``config`` at ``batch`` x context, per precision.

    The two precisions take turns step by step and each keeps its median step time, so a passing
    load on the machine slows both alike instead of deciding the comparison.
    """
    state = torch.random.get_rng_state()  # calibration must not change the run's random stream
    try:
        precisions = [False, True] if bf16_possible(device) else [False]
        steps = {bf16: _stepper(config, batch, device, bf16) for bf16 in precisions}
        times: dict[bool, list[float]] = {bf16: [] for bf16 in precisions}
        for i in range(WARMUP_STEPS + TIMED_STEPS):
            for bf16, step in steps.items():
                elapsed = step()
                if i >= WARMUP_STEPS:
                    times[bf16].append(elapsed)
        tokens = batch * config.context
        speed = {bf16: tokens / max(statistics.median(t), 1e-9) for bf16, t in times.items()}
        return Speed(fp32=speed[False], bf16=speed.get(True, 0.0))
    finally:
        torch.random.set_rng_state(state)


def _stepper(config: ModelConfig, batch: int, device: torch.device, bf16: bool) -> Callable[[], float]:
    """A function that runs one training step of a fresh model and returns its seconds."""
    model = build_model(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, config.vocab_size, (batch, config.context), device=device)  # (B, T)
    autocast = autocast_for(device, bf16)

    def step() -> float:
        _sync(device)
        start = time.perf_counter()
        with autocast:
            loss, _ = model(x, None, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        return time.perf_counter() - start

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
