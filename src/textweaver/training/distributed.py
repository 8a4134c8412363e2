"""Several processes, one run: PyTorch DistributedDataParallel under ``torchrun``.

``textweaver train`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR...)
and needs no option of its own. ``--batch-size`` is the *global* batch: every rank draws the same
random windows (same seed) and keeps its own rows, so N processes see exactly the batch one
process would, and the same learning rate applies. NCCL on CUDA, gloo on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from textweaver.errors import TextweaverError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over all ranks (float64: exact enough for loss totals)."""
        return self._all_reduce(values, dist.ReduceOp.SUM)

    def max(self, values: list[float]) -> list[float]:
        """Element-wise maximum over all ranks: how ranks agree on the schedule's progress and on
        flags (stop, checkpoint due, diverged), so they always take the same decisions."""
        return self._all_reduce(values, dist.ReduceOp.MAX)

    def _all_reduce(self, values: list[float], op: dist.ReduceOp.RedOpType) -> list[float]:
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        dist.all_reduce(t, op=op)
        return t.tolist()

    def gather_rows(self, tensor: torch.Tensor, dim: int) -> torch.Tensor:
        """Concatenate every rank's ``tensor`` along ``dim`` (for the RNN's carried state)."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=dim)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _collective_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def from_environment(device: str) -> tuple[Dist, str]:
    """Join the process group torchrun set up (if any); returns the ranks and the device to use."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if not dist.is_initialized():
        try:
            dist.init_process_group("nccl" if use_cuda else "gloo")
        except (RuntimeError, ValueError) as e:
            raise TextweaverError(f"cannot join the torchrun process group ({e}): check --rdzv-endpoint") from None
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    elif device == "auto":
        device = "cpu"
    return Dist(rank, world, local_rank), device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
