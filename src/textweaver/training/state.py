"""The training loop's state: counters, budgets and stop decisions, and the signal handling
that turns Ctrl-C / SIGTERM into a clean stop. Everything here is saved in ``trainer.pt`` so a
resumed run continues exactly where it was."""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from textweaver.config import TrainConfig
from textweaver.training import distributed


@dataclass
class RunState:
    """Counters of the loop, saved in ``trainer.pt`` so a resumed run continues where it was."""

    step: int = 0
    tokens: int = 0
    elapsed_before: float = 0.0  # seconds spent in earlier segments of a resumed run
    train_loss: float = float("nan")  # exponential moving average
    val_loss: float | None = None
    val_bpc: float | None = None
    best_val_loss: float | None = None
    bad_evals: int = 0
    last_eval_step: int = -1
    lr: float = 0.0
    rnn_state: Any = None
    segment_start: float = 0.0
    segment_tokens: int = 0
    last_save: float = 0.0
    # (schedule progress, budget progress) where a resumed run's budget last changed: the learning
    # rate goes on decaying from where it was instead of jumping back up the cosine
    anchor: tuple[float, float] = (0.0, 0.0)

    def start_clock(self) -> None:
        self.segment_start = self.last_save = time.monotonic()

    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.segment_start)

    def tokens_per_s(self) -> float:
        return self.segment_tokens / max(time.monotonic() - self.segment_start, 1e-9)

    def after_step(self, loss: float, tokens: int, lr: float) -> None:
        self.step += 1
        self.tokens += tokens
        self.segment_tokens += tokens
        self.lr = lr
        self.train_loss = loss if math.isnan(self.train_loss) else 0.95 * self.train_loss + 0.05 * loss

    def progress(self, config: TrainConfig, train_tokens: int) -> float:
        parts = [0.0]
        if config.max_steps:
            parts.append(self.step / config.max_steps)
        if config.max_time:
            parts.append(self.elapsed() / config.max_time)
        if config.epochs:
            parts.append(self.tokens / (config.epochs * train_tokens))
        return min(max(parts), 1.0)

    def schedule_progress(self, progress: float) -> float:
        """The learning-rate schedule's progress for the budget's ``progress``: equal to it unless the
        budget changed on a resume, then stretched from the anchor so it still rises to 1 at the end."""
        at, since = self.anchor
        if progress <= since or since >= 1.0:
            return min(at, 1.0)
        return min(at + (1.0 - at) * (progress - since) / (1.0 - since), 1.0)

    def rebudget(self, old: TrainConfig, new: TrainConfig, train_tokens: int) -> None:
        """A resume changed the budget: anchor the schedule where it is now."""
        self.anchor = (self.schedule_progress(self.progress(old, train_tokens)), self.progress(new, train_tokens))

    def stop_reason(self, config: TrainConfig, train_tokens: int, interrupted: bool) -> str:
        if interrupted:
            return "interrupted"
        if config.max_steps and self.step >= config.max_steps:
            return "max-steps" if self.segment_tokens else "already-complete"
        if config.max_time and self.elapsed() >= config.max_time:
            return "max-time" if self.segment_tokens else "already-complete"
        if config.epochs and self.tokens >= config.epochs * train_tokens:
            return "epochs" if self.segment_tokens else "already-complete"
        if config.patience and self.bad_evals >= config.patience:
            return "patience" if self.segment_tokens else "already-complete"
        return ""

    def metrics(self) -> dict[str, Any]:
        return {
            "step": self.step, "tokens": self.tokens, "elapsed_s": round(self.elapsed(), 2),
            "train_loss": self.train_loss, "val_loss": self.val_loss, "val_bpc": self.val_bpc,
            "best_val_loss": self.best_val_loss, "lr": self.lr, "tokens_per_s": round(self.tokens_per_s(), 1),
        }  # fmt: skip

    def live_metrics(self) -> dict[str, Any]:
        """A record between evaluations: no validation figures (they would repeat the last evaluation's)."""
        return {k: v for k, v in self.metrics().items() if k not in ("val_loss", "val_bpc", "best_val_loss")}

    def dump(self, optimizer: torch.optim.Optimizer, batches: Any, ranks: distributed.Dist) -> dict[str, Any]:
        """Everything to resume; the RNN's carried state is gathered from all ranks (a collective)."""
        rnn_state = None
        if self.rnn_state is not None:
            rnn_state = [ranks.gather_rows(t.detach(), dim=1).cpu() for t in self.rnn_state]  # (layers, B, H)
        state: dict[str, Any] = {
            "step": self.step, "tokens": self.tokens, "elapsed": self.elapsed(), "train_loss": self.train_loss,
            "val_loss": self.val_loss, "val_bpc": self.val_bpc, "best_val_loss": self.best_val_loss,
            "bad_evals": self.bad_evals, "last_eval_step": self.last_eval_step,
            "optimizer": optimizer.state_dict(), "batches": batches.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "rnn_state": rnn_state, "anchor": list(self.anchor),
        }  # fmt: skip
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load(self, state: dict[str, Any], device: torch.device, rows: slice) -> None:
        self.step, self.tokens, self.elapsed_before = state["step"], state["tokens"], state["elapsed"]
        self.train_loss, self.val_loss, self.val_bpc = state["train_loss"], state["val_loss"], state["val_bpc"]
        self.best_val_loss, self.bad_evals = state["best_val_loss"], state["bad_evals"]
        self.last_eval_step = state["last_eval_step"]
        at, since = state.get("anchor", (0.0, 0.0))
        self.anchor = (float(at), float(since))
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            with contextlib.suppress(RuntimeError):
                torch.cuda.set_rng_state_all(state["cuda_rng"])
        if state.get("rnn_state") is not None:  # saved for the global batch: keep this rank's rows
            self.rnn_state = tuple(t[:, rows].contiguous().to(device) for t in state["rnn_state"])


class StopFlag:
    """Turns the first Ctrl-C or SIGTERM into a request to save and stop; a second Ctrl-C aborts."""

    def __init__(self) -> None:
        self.requested = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: signals stay with the caller
            pass
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
