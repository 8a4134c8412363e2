"""What a fresh run trains with: the automatic recipe (``training/recipe.py``) applied to this corpus
and this machine's measured speed (``training/calibrate.py``), with the user's explicit options always
winning; and the checks that refuse sizes that cannot work before anything is built."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from textweaver.config import DEFAULT_MODEL, DEFAULT_PRESET, ModelConfig, TrainConfig
from textweaver.data.corpus import CorpusOptions
from textweaver.data.dataset import DataOptions, EncodedCorpus
from textweaver.errors import TextweaverError
from textweaver.models import build_model, num_parameters
from textweaver.training import calibrate, distributed, finetune
from textweaver.training import recipe as autoconfig

DEFAULT_WARMUP_STEPS = 100  # with explicit model options; the automatic recipe scales it to the budget


def resolve_recipe(
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
        check_sizes(data, model_config.context, paths)  # refuse impossible sizes before building anything
        check_memory(model_config, max(batch, candidate.batch_size or 0), device)
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


def data_options(config: TrainConfig) -> DataOptions:
    return DataOptions(
        level=config.level, vocab_size=config.vocab_size, lowercase=config.lowercase, normalize=config.normalize,
        val_fraction=config.val_fraction,
        corpus=CorpusOptions(encoding=config.encoding, errors=config.errors, glob=config.glob),
    )  # fmt: skip


def check_sizes(data: EncodedCorpus, context: int, paths: list[Path]) -> None:
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


def check_memory(cfg: ModelConfig, batch: int, device: torch.device) -> None:
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
