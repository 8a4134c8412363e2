"""What the training loop calls between steps, as hooks on a :class:`~textweaver.training.setup.Trainer`
(minGPT's callbacks): writing checkpoints, scoring the validation split, printing the line and the
samples of an evaluation, the live metrics between evaluations, and the budget's dropout rule.
``install`` registers them in the order they run; a caller adds its own (the run's report) with
``trainer.on("finished", ...)``."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from rich.console import Console

from textweaver.config import AUTO_DROPOUT, AUTO_DROPOUT_AFTER_STEPS, TrainConfig, dropout_passes
from textweaver.generation.generator import GenerationRequest
from textweaver.generation.sampling import SamplingOptions
from textweaver.models import set_dropout
from textweaver.run import checkpoint
from textweaver.run.log import PROGRESS_EVERY_S
from textweaver.training import distributed
from textweaver.training.evaluate import score
from textweaver.training.setup import Trainer
from textweaver.training.state import RunState

MIN_IMPROVEMENT = 1e-3  # nats/token a validation loss must drop by to reset --patience


def install(t: Trainer) -> None:
    """The loop's own hooks. Events: ``step`` after every optimizer step; ``evaluate`` when an evaluation
    is due (score, checkpoint, report it); ``checkpoint`` when only a checkpoint is due; ``finished``
    after the last checkpoint, on the main process."""
    t.on("step", record_progress(t))
    t.on("step", budget_dropout)
    t.on("evaluate", score_validation)
    t.on("evaluate", lambda t: save_checkpoint(t, best=t.improved))  # first: on a full disk the checkpoint matters
    t.on("evaluate", report_evaluation)
    t.on("checkpoint", save_checkpoint)


def save_checkpoint(t: Trainer, best: bool = False) -> None:
    """``last/`` (with the optimizer and the counters, to resume exactly) and, when ``best``, ``best/``."""
    s = t.state
    trainer_state = s.dump(t.optimizer, t.batches, t.ranks)  # a collective: every rank takes part
    s.last_save = time.monotonic()
    if not t.ranks.is_main:
        return
    common: dict[str, Any] = {
        "model_config": t.model_config, "tokenizer": t.data.tokenizer, "prompts": t.data.prompts,
        "train_config": t.config.to_dict(), "metrics": s.metrics(), "corpus": t.corpus_info,
    }  # fmt: skip
    checkpoint.save(t.run_dir / "last", t.model, trainer_state=trainer_state, **common)
    if best:
        checkpoint.save(t.run_dir / "best", t.model, **common)


def score_validation(t: Trainer) -> None:
    """The validation loss of the first --eval-tokens, the best so far, and --patience's count."""
    s = t.state
    result = score(t.model, t.data.val, t.batches.batch, t.config.eval_tokens, t.device, t.autocast, t.ranks)
    s.val_loss = result.nats_per_token
    s.val_bpc = result.bits_per_char(t.data.chars_per_token)
    t.improved = s.best_val_loss is None or s.val_loss < s.best_val_loss
    # for --patience only gains of at least MIN_IMPROVEMENT count: tiny drifts do not keep a run alive
    if s.best_val_loss is None or s.val_loss < s.best_val_loss - MIN_IMPROVEMENT:
        s.bad_evals = 0
    else:
        s.bad_evals += 1
    if t.improved:
        s.best_val_loss = s.val_loss
    s.last_eval_step = s.step


def report_evaluation(t: Trainer) -> None:
    """The evaluation's line in metrics.jsonl and on the console, then its samples."""
    s = t.state
    if t.log is None:
        return
    assert s.val_loss is not None and s.val_bpc is not None
    t.log.metrics(s.step, s.metrics())
    minutes, seconds = divmod(int(s.elapsed()), 60)
    t.console.print(
        f"step {s.step:>6} | train {s.train_loss:.4f} | val {s.val_loss:.4f} nats/token, {s.val_bpc:.4f} bits/char"
        f" | {s.tokens_per_s():,.0f} tok/s | {minutes}m{seconds:02d}s" + ("" if t.improved else " (no improvement)")
    )
    write_samples(t)


def write_samples(t: Trainer) -> None:
    """The per-evaluation samples of the classic Keras recipe: one random validation prompt, several temperatures."""
    config, data, step = t.config, t.data, t.state.step
    rng = np.random.default_rng(config.seed + step)
    span = 40 if config.level == "char" else 12
    start = int(rng.integers(0, max(1, len(data.val) - span)))
    prompt = data.tokenizer.decode(int(i) for i in data.val[start : start + span]) or "\n"
    texts = {}
    for temperature in config.sample_temperatures:
        request = GenerationRequest(prompt=prompt, length=config.sample_length, seed=config.seed + step,
                                    sampling=SamplingOptions(temperature=temperature))  # fmt: skip
        texts[temperature] = t.generator.generate(request, warn=False)[0]
    assert t.log is not None
    t.log.samples(step, prompt, texts)
    for temperature, text in texts.items():
        t.console.print(f"[dim]--- sample, temperature {temperature}:[/dim]", highlight=False)
        t.console.print(text, markup=False, highlight=False, soft_wrap=True)


def record_progress(t: Trainer) -> Any:
    """Train loss, rate and speed in metrics.jsonl every PROGRESS_EVERY_S: the live charts (studio,
    TensorBoard) between evaluations."""
    last = time.monotonic()

    def hook(t: Trainer) -> None:
        nonlocal last
        if t.log is not None and time.monotonic() - last >= PROGRESS_EVERY_S:
            t.log.metrics(t.state.step, t.state.live_metrics())
            last = time.monotonic()

    return hook


def budget_dropout(t: Trainer) -> None:
    """Decide --dropout, left open, once the run's own speed is known (AUTO_DROPOUT_AFTER_STEPS steps)."""
    if t.config.dropout is None and t.state.step >= AUTO_DROPOUT_AFTER_STEPS:
        t.config.dropout = dropout_for_budget(t.config, t.state, len(t.data.train), t.model_config.n_embd, t.ranks,
                                              t.console)  # fmt: skip
        set_dropout(t.model, t.config.dropout)


def dropout_for_budget(
    config: TrainConfig, s: RunState, train_tokens: int, width: int, ranks: distributed.Dist, console: Console
) -> float:
    """The budget rule: dropout for a run whose --max-time buys many passes over the corpus (fewer for
    a wider model)."""
    if config.max_time is None or config.max_steps is not None or config.epochs is not None:
        return 0.0
    remaining = max(0.0, config.max_time - s.elapsed())
    epochs = (s.tokens + s.tokens_per_s() * remaining) / train_tokens
    (epochs,) = ranks.max([epochs])  # every rank takes the same decision
    if epochs <= dropout_passes(width):
        return 0.0
    console.print(
        f"the budget buys ~{epochs:.0f} passes over the corpus: dropout {AUTO_DROPOUT} against overfitting "
        "(--dropout chooses another)"
    )
    return AUTO_DROPOUT
