"""The training loop: corpus -> ids -> batches -> model -> checkpoints, read top to bottom.

AdamW with linear warmup and cosine decay over the run's progress, gradient-norm clipping,
truncated BPTT for RNNs (hidden state carried across consecutive windows of each stream, reset
when the streams wrap), periodic evaluation with samples, atomic checkpoints, and a clean stop
on Ctrl-C / SIGTERM that saves first. ``resume=True`` continues ``RUN_DIR/last`` exactly
(weights, optimizer, schedule position, RNG and data position) when it exists.

Under ``torchrun`` the same loop runs in every process with DistributedDataParallel (see
``training/distributed.py``): ranks agree on every decision each step, and only rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.nn.parallel import DistributedDataParallel

from textweaver.config import (
    AUTO_DROPOUT,
    AUTO_DROPOUT_AFTER_STEPS,
    DEFAULT_MODEL,
    DEFAULT_PRESET,
    EVAL_SHARE,
    EVALS_PER_BUDGET,
    NO_SOURCE,
    ModelConfig,
    TrainConfig,
    dropout_passes,
)
from textweaver.data.batches import make_batches
from textweaver.data.corpus import (
    AUTO_ENCODING,
    STORED_FILES,
    CorpusOptions,
    file_encoding,
    resolve_paths,
    summarize_files,
)
from textweaver.data.dataset import DataOptions, EncodedCorpus, prepare
from textweaver.device import autocast_for, select_device, set_threads
from textweaver.errors import TextweaverError
from textweaver.generation.generator import GenerationRequest, Generator
from textweaver.generation.sampling import SamplingOptions
from textweaver.models import build_model, detach_state, num_parameters, set_dropout, set_unigram_prior
from textweaver.run import checkpoint
from textweaver.run import lock as runlock
from textweaver.run.log import PROGRESS_EVERY_S, RunLog
from textweaver.training import calibrate, distributed, finetune
from textweaver.training import recipe as autoconfig
from textweaver.training.evaluate import score
from textweaver.training.schedule import learning_rate
from textweaver.training.state import RunState, StopFlag

DEFAULT_MAX_TIME = 300.0
DEFAULT_WARMUP_STEPS = 100  # with explicit model options; the automatic recipe scales it to the budget
PRIOR_TOKENS = 1 << 24  # training tokens counted for the output layer's starting unigram prior
MIN_IMPROVEMENT = 1e-3  # nats/token a validation loss must drop by to reset --patience
# evaluation by time (EVALS_PER_BUDGET, EVAL_SHARE: config.py); before the first, its cost is estimated from the
# training speed: scoring runs the forward pass alone, ~EVAL_SPEEDUP times a training step's tokens per second
EVAL_SPEEDUP = 3.0
# Options that may change between a run and its resumption; all others come from the checkpoint.
RESUMABLE_OVERRIDES = (
    "max_time", "max_steps", "epochs", "patience", "eval_every", "eval_tokens", "sample_length",
    "sample_temperatures", "checkpoint_every", "device", "compile", "threads", "tensorboard",
)  # fmt: skip


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
            result = _train(corpus, Path(out), config, resume, progress and ranks.is_main, console, ranks,
                            device_name, set(given), finished)  # fmt: skip
        ranks.barrier()  # leave together: no rank tears the group down while rank 0 still writes
        return result
    finally:
        distributed.shutdown()


def _train(
    corpus: Sequence[str | Path],
    run_dir: Path,
    config: TrainConfig,
    resume: bool,
    progress: bool,
    console: Console,
    ranks: distributed.Dist,
    device_name: str,
    given: set[str],
    finished: Callable[[Path, Console], None] | None,
) -> TrainResult:
    last_dir = run_dir / "last"

    # ---- resume or start fresh
    saved = None
    previous = config  # the settings the run had before this command (a resumed run: its checkpoint's)
    checkpoint.recover(last_dir)  # a crash mid-swap left .last.old: restore it before looking for last/
    found = resume and (last_dir / checkpoint.CONFIG).is_file()
    _agree_on_checkpoint(found, _saved_step(last_dir) if found else -1, run_dir, ranks)
    if (last_dir / checkpoint.CONFIG).is_file():
        if not resume:
            raise TextweaverError(
                f"{run_dir} already holds a training run: pass --resume to continue it, or choose another --out"
            )
        saved = checkpoint.load(last_dir)
        trainer_state = checkpoint.load_trainer_state(saved.directory)
        previous = TrainConfig.from_dict(saved.train_config)
        changed = {k: getattr(config, k) for k in RESUMABLE_OVERRIDES if k in given}
        changed = {k: v for k, v in changed.items() if v != getattr(previous, k)}
        config = dataclasses.replace(previous, **changed)
        console.print(f"resuming {last_dir} from step {trainer_state['step']}")
        for name, value in changed.items():
            console.print(f"--{name.replace('_', '-')}: {_shown(getattr(previous, name))} -> {_shown(value)}")
        if changed.keys() & {"max_time", "max_steps", "epochs"}:
            console.print(
                "the budget counts the whole run (earlier segments included); the learning rate goes on "
                "decaying from where it is to the new end"
            )
    elif resume:
        console.print(f"no checkpoint in {last_dir}: starting a fresh run")
    paths = resolve_paths(corpus, config.glob)
    chosen = ""  # why the run starts from a base nobody named
    if config.init_from == NO_SOURCE:
        config = dataclasses.replace(config, init_from=None)
    elif saved is None:
        default, why = finetune.default_source(paths, config, given, _data_options(config).corpus)
        if default is not None:  # said once the run starts (a refusal below stays one line)
            chosen = f"starting from {default}: {why} (--init-from none starts from random weights)"
            config = dataclasses.replace(config, init_from=default)
    source = None  # fine-tuning: the model a fresh run starts from (a resumed one has its own weights)
    if saved is None and config.init_from:
        source = finetune.load_source(config.init_from, config, given)
        config = finetune.adopt(config, source)
    config.validate()
    if config.max_time is None and config.max_steps is None and config.epochs is None:
        config.max_time = DEFAULT_MAX_TIME
    # evaluate every --eval-every steps when the user set it (now or when the run began; a run from before
    # evaluation by time counts as set), else by time when the budget is time alone
    every_given = "eval_every" in given or bool(config.extra.get("eval_every_given", saved is not None))
    config.extra = {**config.extra, "eval_every_given": every_given}
    by_time = config.max_time is not None and config.max_steps is None and config.epochs is None and not every_given
    set_threads(config.threads)
    device = select_device(device_name)
    torch.manual_seed(config.seed)
    random.seed(config.seed)

    # ---- data
    if config.encoding == AUTO_ENCODING:
        options = _data_options(config).corpus
        for path in paths:
            console.print(f"--encoding auto: {path} reads as {file_encoding(path, options)}")
    # a fine-tuning run's vocabulary extends its source's (on resume: its own, which the corpus leaves as it is)
    base = source.checkpoint.tokenizer if source else saved.tokenizer if saved and config.init_from else None
    data = _prepare_once(paths, run_dir, dataclasses.replace(_data_options(config), base=base), config.seed, ranks)
    if saved is not None and data.tokenizer != saved.tokenizer:
        raise TextweaverError(
            f"the corpus now gives a different vocabulary than the one {run_dir} was trained with: "
            "resume with the original corpus, or start a new run with another --out"
        )

    # ---- the recipe: chosen from the corpus, budget and device for a fresh run, kept by a resumed one
    # token frequencies (of the first PRIOR_TOKENS): the recipe's shortlist and the output layer's prior
    counts = np.bincount(data.train[:PRIOR_TOKENS], minlength=len(data.tokenizer)) if saved is None else None
    if counts is not None:
        choosing = time.monotonic()
        config = _resolve_recipe(config, data, counts, paths, device, ranks, source)
        choosing = time.monotonic() - choosing  # the calibration counts against --max-time
    assert config.batch_size is not None and config.lr is not None and config.warmup_steps is not None
    if "recipe" in config.extra:
        reasons = config.extra["recipe"]["reasons"]
        console.print(f"auto: {config.extra['recipe']['summary']}" + (f" ({'; '.join(reasons)})" if reasons else ""))
    if config.batch_size % ranks.world_size:
        raise TextweaverError(
            f"--batch-size {config.batch_size} must divide by the {ranks.world_size} processes: "
            "choose a multiple of --nproc-per-node x --nnodes"
        )
    autocast = autocast_for(device, config.precision == "bf16")
    model_config = saved.model_config if saved else config.model_config(len(data.tokenizer))
    _check_sizes(data, model_config.context, paths)
    _check_memory(model_config, config.batch_size // ranks.world_size, device)

    # ---- model, optimizer, batches
    model = saved.build_model(device) if saved else build_model(model_config)
    if source is not None and counts is not None:  # counts: a fresh run has them
        added = finetune.load_weights(model, source, counts)
        config.extra["init_from"]["added_tokens"] = added
        if chosen:
            console.print(chosen)
        console.print(finetune.describe(source, data.tokenizer.vocab, added))
    elif counts is not None:  # a fresh model
        set_unigram_prior(model, counts)
    model.to(device)
    model.train()
    step_model: Any = model
    if ranks.enabled:
        step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        step_model = torch.compile(step_model)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.95), fused=device.type in ("cuda", "cpu"),  # one kernel: ~2x faster steps
    )  # fmt: skip
    batches = make_batches(model_config.kind, data.train, config.batch_size, model_config.context, config.seed + 1,
                           ranks.rank, ranks.world_size)  # fmt: skip
    n_params = num_parameters(model)
    s = RunState()
    if saved is None:
        s.elapsed_before = choosing
        if config.max_time is not None and choosing >= config.max_time:
            raise TextweaverError(
                f"the --max-time of {config.max_time:g} s was used up before the first step: choosing the recipe "
                f"(measuring this machine's speed) took {choosing:.1f} s: give a longer --max-time, or --preset and "
                "--precision, which need no measuring"
            )
    else:
        optimizer.load_state_dict(trainer_state["optimizer"])
        batches.load_state_dict(trainer_state["batches"])
        s.load(trainer_state, device, batches.rows)
    log = RunLog(run_dir, config.tensorboard) if ranks.is_main else None
    generator = Generator(model, data.tokenizer, data.prompts, device)
    files = [{**f, "bytes": _file_size(f["path"])} for f in data.files]
    corpus_info = {
        "files": summarize_files(files, STORED_FILES), "train_tokens": len(data.train), "val_tokens": len(data.val),
        "train_chars": data.train_chars, "val_chars": data.val_chars, "cache_key": data.key,
    }  # fmt: skip
    console.print(
        f"{model_config.kind} {n_params:,} parameters | vocab {len(data.tokenizer):,} ({config.level}) | "
        f"{len(data.train):,} train / {len(data.val):,} val tokens | batch {batches.batch} x {model_config.context}"
        f" | lr {config.lr:g} | {device.type} {config.precision}"
    )
    if by_time and config.max_time is not None:
        console.print(
            f"evaluating every {eval_gap(config.max_time, 0.0):.3g} s or more, at most {EVAL_SHARE:.0%} of the time "
            "(--eval-every N: every N steps)"
        )

    def save(best: bool = False) -> None:
        trainer_state = s.dump(optimizer, batches, ranks)  # a collective: every rank takes part
        s.last_save = time.monotonic()
        if not ranks.is_main:
            return
        metrics = s.metrics()
        common: dict[str, Any] = {
            "model_config": model_config, "tokenizer": data.tokenizer, "prompts": data.prompts,
            "train_config": config.to_dict(), "metrics": metrics, "corpus": corpus_info,
        }  # fmt: skip
        checkpoint.save(last_dir, model, trainer_state=trainer_state, **common)
        if best:
            checkpoint.save(run_dir / "best", model, **common)

    def evaluate() -> None:
        result = score(model, data.val, batches.batch, config.eval_tokens, device, autocast, ranks)
        s.val_loss = result.nats_per_token
        s.val_bpc = result.bits_per_char(data.chars_per_token)
        improved = s.best_val_loss is None or s.val_loss < s.best_val_loss
        # for --patience only gains of at least MIN_IMPROVEMENT count: tiny drifts do not keep a run alive
        if s.best_val_loss is None or s.val_loss < s.best_val_loss - MIN_IMPROVEMENT:
            s.bad_evals = 0
        else:
            s.bad_evals += 1
        if improved:
            s.best_val_loss = s.val_loss
        s.last_eval_step = s.step
        save(best=improved)  # first: if the disk is full, the checkpoint is what matters
        if log is not None:
            log.metrics(s.step, s.metrics())
            console.print(
                f"step {s.step:>6} | train {s.train_loss:.4f} | val {s.val_loss:.4f} nats/token, "
                f"{s.val_bpc:.4f} bits/char | {s.tokens_per_s():,.0f} tok/s | {_fmt_time(s.elapsed())}"
                + ("" if improved else " (no improvement)")
            )
            _write_samples(generator, data, config, s.step, log, console)
        model.train()

    # ---- the loop
    stop = StopFlag()
    stopped = ""
    last_progress = time.monotonic()
    columns = (TextColumn("[bold]train"), BarColumn(), TextColumn("{task.fields[info]}"),
               TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
    with stop.installed(), Progress(*columns, console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task("train", total=1000, info="")
        s.start_clock()
        if _budget(previous) != _budget(config):
            s.rebudget(previous, config, len(data.train))
        rnn_state = s.rnn_state
        since_eval, eval_cost = s.elapsed(), None  # by time: when the last evaluation ended, and what it took
        scored = min(config.eval_tokens, len(data.val))
        while True:
            progress_frac = s.progress(config, len(data.train))
            stopped = s.stop_reason(config, len(data.train), stop.requested)
            checkpoint_due = time.monotonic() - s.last_save >= config.checkpoint_every
            if by_time and config.max_time:
                cost = scored / (EVAL_SPEEDUP * max(s.tokens_per_s(), 1e-9)) if eval_cost is None else eval_cost
                eval_due = s.step > 0 and s.elapsed() - since_eval >= eval_gap(config.max_time, cost)
            else:
                eval_due = (s.step + 1) % config.eval_every == 0
            if ranks.enabled:  # one collective: every rank takes the same decisions
                progress_frac, stop_any, due_any, eval_any = ranks.max(
                    [progress_frac, float(bool(stopped)), float(checkpoint_due), float(eval_due)]
                )
                stopped = stopped or ("interrupted" if stop_any else "")
                checkpoint_due, eval_due = bool(due_any), bool(eval_any)
            if stopped:
                break
            lr = learning_rate(s.step, s.schedule_progress(progress_frac), config.lr, config.warmup_steps,
                               config.min_lr_ratio)  # fmt: skip
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y, reset = batches.next()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if reset:
                rnn_state = None
            with autocast:
                loss, new_state = step_model(x, rnn_state, y)
            rnn_state = detach_state(new_state) if model_config.kind != "transformer" else None
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip or float("inf"))
            loss_value = loss.item()
            diverged = not (math.isfinite(loss_value) and torch.isfinite(norm))
            if ranks.enabled:  # the loss of the global batch, and divergence on any rank
                loss_sum, diverged_ranks = ranks.sum([loss_value, float(diverged)])
                loss_value, diverged = loss_sum / ranks.world_size, diverged_ranks > 0
            if diverged:
                optimizer.zero_grad(set_to_none=True)
                raise TextweaverError(_diverged_message(run_dir, s.step, loss_value, config.lr))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            s.after_step(loss_value, x.numel() * ranks.world_size, lr)
            if log is not None and time.monotonic() - last_progress >= PROGRESS_EVERY_S:
                log.metrics(s.step, s.live_metrics())  # live charts (studio, TensorBoard) between evaluations
                last_progress = time.monotonic()
            if config.dropout is None and s.step >= AUTO_DROPOUT_AFTER_STEPS:
                config.dropout = _budget_dropout(config, s, len(data.train), model_config.n_embd, ranks, console)
                set_dropout(model, config.dropout)
            s.rnn_state = rnn_state
            bar.update(task, completed=1000 * s.progress(config, len(data.train)),
                       info=f"step {s.step} | loss {s.train_loss:.3f} | {s.tokens_per_s():,.0f} tok/s")  # fmt: skip
            if eval_due:
                started = time.monotonic()
                evaluate()
                since_eval, eval_cost = s.elapsed(), time.monotonic() - started
            elif checkpoint_due:
                save()
        if stopped != "already-complete":
            if s.last_eval_step != s.step:
                evaluate()
            else:
                save()
    if log is not None:
        log.close()
        if finished is not None:
            finished(run_dir, console)
    if ranks.enabled:
        print(f"rank {ranks.rank}/{ranks.world_size} finished {s.step} steps", file=sys.stderr, flush=True)
    if stopped == "interrupted":
        console.print(
            f"stopped at step {s.step}; checkpoint saved. Resume with: textweaver train ... --out {run_dir} --resume"
        )
    elif stopped == "already-complete":
        why = (
            f"--patience {config.patience} ran out"
            if config.patience and s.bad_evals >= config.patience
            else "it already reached its budget"
        )
        console.print(
            f"{run_dir}: {why} at step {s.step}: nothing to do (raise --max-time, --max-steps or --patience to go on)"
        )
    else:
        console.print(
            f"done ({stopped}) at step {s.step}: best val {s.best_val_loss:.4f} nats/token; model in {run_dir}"
        )
    return TrainResult(
        run_dir=run_dir, steps=s.step, tokens=s.tokens, elapsed=s.elapsed(), val_loss=s.val_loss, val_bpc=s.val_bpc,
        best_val_loss=s.best_val_loss, stopped=stopped, resumed=saved is not None, parameters=n_params,
    )  # fmt: skip


def eval_gap(max_time: float, cost: float) -> float:
    """Seconds of a time-budgeted run from one evaluation to the next: the budget in EVALS_PER_BUDGET parts,
    stretched so that evaluations taking ``cost`` seconds each fill at most EVAL_SHARE of the time."""
    return max(max_time / EVALS_PER_BUDGET, cost * (1 - EVAL_SHARE) / EVAL_SHARE)


def _resolve_recipe(
    config: TrainConfig,
    data: EncodedCorpus,
    counts: np.ndarray,
    paths: list[Path],
    device: torch.device,
    ranks: distributed.Dist,
    source: finetune.Source | None = None,
) -> TrainConfig:
    """Fill in what the user left open: with no model option, the recipe of ``training/recipe.py``; when
    fine-tuning, its schedule for the source's model; a model named alone (no size, no batch) with a
    time budget, its default size with the recipe's batch and warmup; else the preset's values. Then
    the precision. Options given explicitly always win."""
    vocab = len(data.tokenizer)
    ranked = np.sort(counts)[::-1]
    shortlist = int(np.searchsorted(np.cumsum(ranked), autoconfig.SHORTLIST_COVERAGE * ranked.sum()) + 1)
    facts = autoconfig.Facts(
        train_tokens=len(data.train), vocab_size=vocab, shortlist=shortlist, device=device.type,
        world_size=ranks.world_size, softmax=config.softmax,
        budget_s=config.max_time if config.max_steps is None and config.epochs is None else None,
    )  # fmt: skip

    def speed_of(candidate: TrainConfig) -> autoconfig.Speed:
        model_config = candidate.model_config(vocab)
        batch = max(1, autoconfig.min_batch_tokens(model_config.n_embd) // model_config.context)
        _check_sizes(data, model_config.context, paths)  # refuse impossible sizes before building anything
        _check_memory(model_config, max(batch, candidate.batch_size or 0), device)
        measured = calibrate.measure(model_config, batch, device)
        fp32, bf16 = ranks.max([measured.fp32, measured.bf16])  # every rank takes the same decisions
        return autoconfig.Speed(fp32=fp32, bf16=bf16)

    def sized(recipe: autoconfig.Recipe) -> TrainConfig:
        return dataclasses.replace(config, model=recipe.model, layers=recipe.layers, width=recipe.width,
                                   context=config.context or recipe.context, cutoffs=recipe.cutoffs)  # fmt: skip

    precision = None if config.precision == "auto" else config.precision
    if source is not None:
        recipe = autoconfig.finetune_model(source.checkpoint.model_config, facts.vocab_size)
        speed = speed_of(config)
        passes, why = autoconfig.finetune_passes(facts, speed)
        if passes is not None:  # an epoch budget from here on: its schedule and batch (the time budget still caps it)
            config, facts = dataclasses.replace(config, epochs=passes), dataclasses.replace(facts, budget_s=None)
            recipe.reasons.append(why)
        recipe = autoconfig.choose_schedule(recipe, facts, speed, precision)
        return _apply(config, recipe)
    if not config.automatic:
        preset = config.resolved_preset()
        kind = config.model or DEFAULT_MODEL
        cutoffs, head_reason = autoconfig.choose_head(facts, kind)
        warmup = DEFAULT_WARMUP_STEPS if config.warmup_steps is None else config.warmup_steps
        resolved = dataclasses.replace(
            config, model=kind, batch_size=preset.batch_size, lr=preset.lr, context=preset.context,
            warmup_steps=warmup, cutoffs=cutoffs,
            preset=config.preset or (None if config.layers or config.width or config.heads else DEFAULT_PRESET),
        )  # fmt: skip
        sized_by_user = config.preset or config.layers or config.width or config.heads or config.batch_size
        if facts.budget_s is not None and not sized_by_user:
            # only the model named: its default size, but the batch (so the number of steps) and the warmup
            # sized for the time budget as the recipe sizes its own model's; the preset's rate
            reasons = [f"{kind} {DEFAULT_PRESET}: --model {kind} alone (--preset or --layers/--width size it)"]
            reasons += [head_reason] if head_reason else []
            recipe = autoconfig.Recipe(kind, preset.n_layer, preset.n_embd, preset.context, cutoffs=cutoffs,
                                       lr=preset.lr, reasons=reasons)  # fmt: skip
            recipe = autoconfig.choose_schedule(recipe, facts, speed_of(resolved), precision)
            left_open = dataclasses.replace(resolved, batch_size=None, lr=config.lr, warmup_steps=config.warmup_steps)
            return _apply(left_open, recipe)
        if resolved.precision == "auto":
            resolved.precision = autoconfig.choose_precision(speed_of(resolved), device.type)[0]
        return resolved
    recipe = autoconfig.choose_model(facts)
    recipe.context = config.context or recipe.context  # options given explicitly win
    speed = speed_of(sized(recipe))
    wider = autoconfig.choose_model(facts, speed)
    if wider.width != recipe.width:
        wider.context = recipe.context
        recipe, speed = wider, speed_of(sized(wider))
    recipe = autoconfig.choose_schedule(recipe, facts, speed, precision)
    return _apply(sized(recipe), recipe)


def _apply(config: TrainConfig, recipe: autoconfig.Recipe) -> TrainConfig:
    """``config`` with the recipe's batch, rate, warmup and precision where the user left them open."""
    recipe.batch_size = config.batch_size or recipe.batch_size
    if config.lr:  # the user's rate: the recipe's reason for its own no longer applies
        recipe.lr, recipe.reasons = config.lr, [r for r in recipe.reasons if not r.startswith("lr ")]
    recipe.warmup_steps = recipe.warmup_steps if config.warmup_steps is None else config.warmup_steps
    resolved = dataclasses.replace(
        config, batch_size=recipe.batch_size, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
        precision=recipe.precision,
    )  # fmt: skip
    resolved.extra = {**config.extra, "recipe": {"summary": recipe.summary(), "reasons": recipe.reasons}}
    return resolved


def _data_options(config: TrainConfig) -> DataOptions:
    return DataOptions(
        level=config.level, vocab_size=config.vocab_size, lowercase=config.lowercase, normalize=config.normalize,
        val_fraction=config.val_fraction,
        corpus=CorpusOptions(encoding=config.encoding, errors=config.errors, glob=config.glob),
    )  # fmt: skip


def _prepare_once(
    paths: list[Path], run_dir: Path, options: DataOptions, seed: int, ranks: distributed.Dist
) -> EncodedCorpus:
    """Rank 0 encodes the corpus into the cache while the others wait; then the first process of every
    other node opens it, or, where --out is node-local storage, encodes its node's copy; then the rest
    open their node's. No two processes ever write one cache."""
    data: EncodedCorpus | None = None
    # rank 0; then the first process of each other node; then everyone else (each takes one turn)
    for mine in (ranks.is_main, not ranks.is_main and ranks.local_rank == 0, ranks.local_rank != 0):
        error: TextweaverError | None = None
        if mine:
            try:
                data = prepare(paths, run_dir / "cache", options, seed=seed)
            except TextweaverError as e:
                error = e
        if ranks.max([float(error is not None)])[0]:
            raise error or TextweaverError("another process could not read the corpus: see rank 0's message")
    assert data is not None
    return data


def _agree_on_checkpoint(found: bool, step: int, run_dir: Path, ranks: distributed.Dist) -> None:
    """Every process must resume from the same checkpoint: on node-local storage only rank 0's node
    would see it, and the others would silently start afresh."""
    if not ranks.enabled:
        return
    most_found, least_found, most_step, least_step = ranks.max([float(found), -float(found), step, -step])
    if most_found != -least_found or most_step != -least_step:
        raise TextweaverError(
            f"{run_dir / 'last'}: not every process sees the same checkpoint (--out on node-local storage?): "
            "resuming a multi-node run needs --out on a file system every node shares"
        )


def _check_sizes(data: EncodedCorpus, context: int, paths: list[Path]) -> None:
    names = ", ".join(str(p) for p in paths[:3]) + (" ..." if len(paths) > 3 else "")
    if len(data.train) < context + 2:
        raise TextweaverError(
            f"{names}: the corpus has {len(data.train):,} training tokens, fewer than the context of {context} + 1: "
            "give more text or a smaller --context"
        )
    if len(data.val) < 2:
        raise TextweaverError(
            f"{names}: too little text for a validation split: give more text or a larger --val-fraction"
        )


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # read a moment ago: gone since, the size is only informative


def _saved_step(last_dir: Path) -> int:
    try:
        return int(json.loads((last_dir / checkpoint.CONFIG).read_text(encoding="utf-8"))["metrics"]["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -2  # unreadable here: loading reports it


def _budget(config: TrainConfig) -> tuple[float | None, ...]:
    return config.max_time, config.max_steps, config.epochs


def _shown(value: object) -> str:
    return "off" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _budget_dropout(
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


def _check_memory(cfg: ModelConfig, batch: int, device: torch.device) -> None:
    """Refuse, before allocating anything, a model or batch that cannot fit in the memory left.

    The estimate counts weights, gradients and the two AdamW moments (16 bytes per parameter) and
    the activations one training step keeps for the backward pass; it errs low, so it only stops
    sizes that are certain to fail (e.g. ``--width 100000``) instead of crashing or swapping.
    """
    with torch.device("meta"):
        params = num_parameters(build_model(cfg))
    tokens = batch * cfg.context
    per_token = cfg.n_layer * cfg.n_embd * (8 if cfg.kind != "transformer" else 12) + 3 * cfg.vocab_size
    attention = batch * cfg.n_head * cfg.context**2 * cfg.n_layer if cfg.kind == "transformer" else 0
    need = 16 * params + 4 * (tokens * per_token + attention)
    free = _free_memory(device)
    if free is not None and need > free:
        raise TextweaverError(
            f"training this model needs about {need / 2**30:.1f} GiB ({params:,} parameters, batch {batch} x "
            f"context {cfg.context}) but only {free / 2**30:.1f} GiB is free: choose a smaller --preset, "
            "--width, --layers, --batch-size or --context"
        )


def _free_memory(device: torch.device) -> int | None:
    """Bytes of memory available to a new allocation on ``device``; None if unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def _write_samples(
    generator: Generator, data: EncodedCorpus, config: TrainConfig, step: int, log: RunLog, console: Console
) -> None:
    """The per-evaluation samples of the classic Keras recipe: one random validation prompt, several temperatures."""
    rng = np.random.default_rng(config.seed + step)
    span = 40 if config.level == "char" else 12
    start = int(rng.integers(0, max(1, len(data.val) - span)))
    prompt = data.tokenizer.decode(int(i) for i in data.val[start : start + span]) or "\n"
    texts = {}
    for temperature in config.sample_temperatures:
        request = GenerationRequest(prompt=prompt, length=config.sample_length, seed=config.seed + step,
                                    sampling=SamplingOptions(temperature=temperature))  # fmt: skip
        texts[temperature] = generator.generate(request, warn=False)[0]
    log.samples(step, prompt, texts)
    for temperature, text in texts.items():
        console.print(f"[dim]--- sample, temperature {temperature}:[/dim]", highlight=False)
        console.print(text, markup=False, highlight=False, soft_wrap=True)


def _diverged_message(run_dir: Path, step: int, loss: float, lr: float) -> str:
    kept = (
        "the last good checkpoint is in " + str(run_dir / "last")
        if (run_dir / "last").is_dir()
        else "no checkpoint was written yet"
    )
    return f"training diverged at step {step + 1} (loss {loss}); {kept}: lower --lr (now {lr:g}) and resume or restart"


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"
