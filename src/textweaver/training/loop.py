"""The training loop: corpus -> ids -> batches -> model -> checkpoints, read top to bottom.

AdamW with linear warmup and cosine decay over the run's progress, gradient-norm clipping,
truncated BPTT for RNNs (hidden state carried across consecutive windows of each stream, reset
when the streams wrap), periodic evaluation with samples, atomic checkpoints, and a clean stop
on Ctrl-C / SIGTERM that saves first. ``resume=True`` continues ``RUN_DIR/last`` exactly
(weights, optimizer, schedule position, RNG and data position) when it exists.

``train`` is three steps: set up (``training/setup.py``: the run, data, recipe, model), loop
(here: decide, step), finish; checkpoints, evaluations, samples and the live metrics are hooks
(``training/hooks.py``) the loop triggers, and a caller adds its own (``finished``: the report).

Under ``torchrun`` the same loop runs in every process with DistributedDataParallel (see
``training/distributed.py``): ranks agree on every decision each step, and only rank 0 writes.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from textweaver.config import EVAL_SHARE, EVALS_PER_BUDGET, TrainConfig
from textweaver.errors import TextweaverError
from textweaver.models import detach_state, num_parameters
from textweaver.run import lock as runlock
from textweaver.training import distributed, finetune, hooks
from textweaver.training.schedule import learning_rate
from textweaver.training.setup import RESUMABLE_OVERRIDES, Trainer, build, open_run
from textweaver.training.state import StopFlag

__all__ = ["RESUMABLE_OVERRIDES", "TrainResult", "eval_gap", "train"]

# evaluation by time (EVALS_PER_BUDGET, EVAL_SHARE: config.py); before the first, its cost is estimated from the
# training speed: scoring runs the forward pass alone, ~EVAL_SPEEDUP times a training step's tokens per second
EVAL_SPEEDUP = 3.0


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    tokens: int
    elapsed: float  # seconds of training, resumed segments included
    val_loss: float | None  # nats per token, at the end
    val_bpc: float | None
    best_val_loss: float | None
    stopped: str  # max-time | max-steps | epochs | patience | interrupted | already-complete
    resumed: bool
    parameters: int


def train(
    corpus: Sequence[str | Path],
    out: str | Path,
    config: TrainConfig | None = None,
    resume: bool = False,
    progress: bool = True,
    console: Console | None = None,
    given: Collection[str] | None = None,
    finished: Callable[[Path, Console], None] | None = None,
) -> TrainResult:
    """Train on ``corpus`` into ``out``. On ``resume`` the run keeps its stored settings except the
    ``RESUMABLE_OVERRIDES`` named in ``given`` (the options the user set; the CLI knows them), which
    take ``config``'s values; ``given=None`` counts those that differ from ``TrainConfig()``'s.
    ``finished(run_dir, console)`` runs on the main process after the last checkpoint (the CLI and the
    API write the run's report there)."""
    config = config or TrainConfig()
    if given is None:
        defaults = TrainConfig()
        given = [k for k in RESUMABLE_OVERRIDES + finetune.SOURCE_OPTIONS if getattr(config, k) != getattr(defaults, k)]
    ranks, device_name = distributed.from_environment(config.device)
    console = console or Console(stderr=True, soft_wrap=True, quiet=not ranks.is_main)
    try:
        with runlock.run_locked(Path(out), enabled=ranks.is_main):
            opened = open_run(corpus, Path(out), config, resume, set(given), console, ranks)
            t = build(opened, Path(out), device_name, console, ranks)
            hooks.install(t)
            if finished is not None and t.log is not None:
                t.on("finished", lambda t: finished(t.run_dir, t.console))
            _announce(t)
            stopped = _loop(t, progress and ranks.is_main)
            result = _finish(t, stopped)
        ranks.barrier()  # leave together: no rank tears the group down while rank 0 still writes
        return result
    finally:
        distributed.shutdown()


def _loop(t: Trainer, progress: bool) -> str:
    """Step until a budget, --patience or a signal stops the run; then evaluate (or save) once more, or on a
    signal only save (a stop asked for is answered first). Returns why it stopped."""
    s, config, train_tokens = t.state, t.config, len(t.data.train)
    assert config.lr is not None and config.warmup_steps is not None  # set up by the recipe
    stop = StopFlag()
    columns = (TextColumn("[bold]train"), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    with stop.installed(), Progress(*columns, console=t.console, disable=not progress, transient=True) as bar:
        task = bar.add_task("train", total=1000, info="")
        s.start_clock()
        if _budget(t.previous) != _budget(config):
            s.rebudget(t.previous, config, train_tokens)
        since_eval, eval_cost = s.elapsed(), None  # by time: when the last evaluation ended, and what it took
        while True:
            stopped, eval_due, checkpoint_due, progress_frac = _decide(t, stop.requested, since_eval, eval_cost)
            if stopped:
                break
            _step(t, learning_rate(s.step, s.schedule_progress(progress_frac), config.lr, config.warmup_steps,
                                   config.min_lr_ratio))  # fmt: skip
            t.trigger("step")
            bar.update(task, completed=1000 * s.progress(config, train_tokens),
                       info=f"step {s.step} | loss {s.train_loss:.3f} | {s.tokens_per_s():,.0f} tok/s")  # fmt: skip
            if eval_due:
                started = time.monotonic()
                _evaluate(t)
                since_eval, eval_cost = s.elapsed(), time.monotonic() - started
            elif checkpoint_due:
                t.trigger("checkpoint")
        if stopped != "already-complete":
            if stopped != "interrupted" and s.last_eval_step != s.step:
                _evaluate(t)  # scores and saves
            else:  # evaluated at this step already, or interrupted: saved at once, the resumed run evaluates next
                t.trigger("checkpoint")
    return stopped


def _decide(t: Trainer, interrupted: bool, since_eval: float, eval_cost: float | None) -> tuple[str, bool, bool, float]:
    """Before each step: whether the run stops, whether an evaluation or a checkpoint is due after it,
    and the budget's progress; every rank takes the same decisions (one collective)."""
    s, config = t.state, t.config
    progress = s.progress(config, len(t.data.train))
    stopped = s.stop_reason(config, len(t.data.train), interrupted)
    checkpoint_due = time.monotonic() - s.last_save >= config.checkpoint_every
    if t.by_time and config.max_time:
        scored = min(config.eval_tokens, len(t.data.val))
        cost = scored / (EVAL_SPEEDUP * max(s.tokens_per_s(), 1e-9)) if eval_cost is None else eval_cost
        eval_due = s.step > 0 and s.elapsed() - since_eval >= eval_gap(config.max_time, cost)
    else:
        eval_due = (s.step + 1) % config.eval_every == 0
    if t.ranks.enabled:
        progress, stop_any, due_any, eval_any = t.ranks.max(
            [progress, float(bool(stopped)), float(checkpoint_due), float(eval_due)]
        )
        stopped = stopped or ("interrupted" if stop_any else "")
        checkpoint_due, eval_due = bool(due_any), bool(eval_any)
    return stopped, eval_due, checkpoint_due, progress


def _step(t: Trainer, lr: float) -> None:
    """One optimizer step at rate ``lr``; a non-finite loss or gradient stops the run before the update."""
    s = t.state
    for group in t.optimizer.param_groups:
        group["lr"] = lr
    x, y, reset = t.batches.next()
    x, y = x.to(t.device, non_blocking=True), y.to(t.device, non_blocking=True)
    if reset:
        s.rnn_state = None
    with t.autocast:
        loss, new_state = t.step_model(x, s.rnn_state, y)
    s.rnn_state = detach_state(new_state) if t.model_config.kind != "transformer" else None
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(t.model.parameters(), t.config.grad_clip or float("inf"))
    loss_value = loss.item()
    diverged = not (math.isfinite(loss_value) and torch.isfinite(norm))
    if t.ranks.enabled:  # the loss of the global batch, and divergence on any rank
        loss_sum, diverged_ranks = t.ranks.sum([loss_value, float(diverged)])
        loss_value, diverged = loss_sum / t.ranks.world_size, diverged_ranks > 0
    if diverged:
        t.optimizer.zero_grad(set_to_none=True)
        raise TextweaverError(_diverged_message(t.run_dir, s.step, loss_value, t.config.lr or 0.0))
    t.optimizer.step()
    t.optimizer.zero_grad(set_to_none=True)
    s.after_step(loss_value, x.numel() * t.ranks.world_size, lr)


def _evaluate(t: Trainer) -> None:
    t.trigger("evaluate")
    t.model.train()


def _announce(t: Trainer) -> None:
    config = t.config
    t.console.print(
        f"{t.model_config.kind} {num_parameters(t.model):,} parameters | vocab {len(t.data.tokenizer):,} "
        f"({config.level}) | {len(t.data.train):,} train / {len(t.data.val):,} val tokens | batch {t.batches.batch} "
        f"x {t.model_config.context} | lr {config.lr:g} | {t.device.type} {config.precision}"
    )
    if t.by_time and config.max_time is not None:
        t.console.print(
            f"evaluating every {eval_gap(config.max_time, 0.0):.3g} s or more, at most {EVAL_SHARE:.0%} of the time "
            "(--eval-every N: every N steps)"
        )


def _finish(t: Trainer, stopped: str) -> TrainResult:
    s, config, run_dir = t.state, t.config, t.run_dir
    if t.log is not None:
        t.log.close()
        t.trigger("finished")
    if t.ranks.enabled:
        print(f"rank {t.ranks.rank}/{t.ranks.world_size} finished {s.step} steps", file=sys.stderr, flush=True)
    if stopped == "interrupted":
        t.console.print(
            f"stopped at step {s.step}; checkpoint saved. Resume with: textweaver train ... --out {run_dir} --resume"
        )
    elif stopped == "already-complete":
        why = (
            f"--patience {config.patience} ran out"
            if config.patience and s.bad_evals >= config.patience
            else "it already reached its budget"
        )
        t.console.print(
            f"{run_dir}: {why} at step {s.step}: nothing to do (raise --max-time, --max-steps or --patience to go on)"
        )
    else:
        t.console.print(
            f"done ({stopped}) at step {s.step}: best val {s.best_val_loss:.4f} nats/token; model in {run_dir}"
        )
    return TrainResult(
        run_dir=run_dir, steps=s.step, tokens=s.tokens, elapsed=s.elapsed(), val_loss=s.val_loss, val_bpc=s.val_bpc,
        best_val_loss=s.best_val_loss, stopped=stopped, resumed=t.resumed, parameters=num_parameters(t.model),
    )  # fmt: skip


def eval_gap(max_time: float, cost: float) -> float:
    """Seconds of a time-budgeted run from one evaluation to the next: the budget in EVALS_PER_BUDGET parts,
    stretched so that evaluations taking ``cost`` seconds each fill at most EVAL_SHARE of the time."""
    return max(max_time / EVALS_PER_BUDGET, cost * (1 - EVAL_SHARE) / EVAL_SHARE)


def _diverged_message(run_dir: Path, step: int, loss: float, lr: float) -> str:
    kept = (
        "the last good checkpoint is in " + str(run_dir / "last")
        if (run_dir / "last").is_dir()
        else "no checkpoint was written yet"
    )
    return f"training diverged at step {step + 1} (loss {loss}); {kept}: lower --lr (now {lr:g}) and resume or restart"


def _budget(config: TrainConfig) -> tuple[float | None, ...]:
    return config.max_time, config.max_steps, config.epochs
