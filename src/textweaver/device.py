"""Where tensors run: device choice, CPU threads, mixed precision."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from textweaver.errors import TextweaverError


def select_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TextweaverError(f"--device {name}: CUDA is not available on this machine: use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise TextweaverError("--device mps: Apple MPS is not available on this machine: use --device auto or cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise TextweaverError(f"unknown --device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None


def autocast_for(device: torch.device, bf16: bool = True) -> AbstractContextManager[object]:
    """bf16 autocast where asked for and supported (weights stay float32); plain float32 otherwise."""
    if bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if bf16 and device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
