"""Everything the training loop needs before its first step, in the order it is needed: the run
(resumed or fresh, and the model it starts from), the data, the recipe, the model, its optimizer
and the batches. :func:`open_run` and :func:`build` are the two steps; :class:`Trainer` is what
they hand the loop (``training/loop.py``) and its hooks (``training/hooks.py``)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch.nn.parallel import DistributedDataParallel

from textweaver.config import DEFAULT_MAX_TIME, NO_SOURCE, ModelConfig, TrainConfig
from textweaver.data.batches import RandomWindows, StreamWindows, make_batches
from textweaver.data.corpus import AUTO_ENCODING, STORED_FILES, file_encoding, resolve_paths, summarize_files
from textweaver.data.dataset import DataOptions, EncodedCorpus, prepare
from textweaver.device import autocast_for, select_device, set_threads
from textweaver.errors import TextweaverError
from textweaver.generation.generator import Generator
from textweaver.models import LanguageModel, build_model, set_unigram_prior
from textweaver.run import checkpoint
from textweaver.run.log import RunLog
from textweaver.training import distributed, finetune
from textweaver.training.choose import check_memory, check_sizes, data_options, resolve_recipe
from textweaver.training.state import RunState

ADAM_BETAS = (0.9, 0.95)  # AdamW's betas (nanoGPT's; also the page's training step)
ADAM_EPS = 1e-8
PRIOR_TOKENS = 1 << 24  # training tokens counted for the output layer's starting unigram prior
# Options that may change between a run and its resumption; all others come from the checkpoint.
RESUMABLE_OVERRIDES = (
    "max_time", "max_steps", "epochs", "patience", "eval_every", "eval_tokens", "sample_length",
    "sample_temperatures", "checkpoint_every", "device", "compile", "threads", "tensorboard",
)  # fmt: skip

Hook = Callable[["Trainer"], None]


@dataclass
class Opened:
    """A run folder before its data is read: the settings it trains with, and what it starts from."""

    config: TrainConfig
    previous: TrainConfig  # the settings the run had before this command (a resumed run: its checkpoint's)
    paths: list[Path]
    saved: checkpoint.Checkpoint | None = None  # a resumed run's last checkpoint
    trainer_state: dict[str, Any] = field(default_factory=dict)
    source: finetune.Source | None = None  # fine-tuning: the model a fresh run starts from
    chosen: str = ""  # why the run starts from a base nobody named


@dataclass
class Trainer:
    """What the loop and its hooks share: the run, its data and model, the optimizer and the counters."""

    run_dir: Path
    config: TrainConfig
    previous: TrainConfig
    model_config: ModelConfig
    data: EncodedCorpus
    device: torch.device
    ranks: distributed.Dist
    console: Console
    model: LanguageModel
    step_model: Any  # the model as stepped: wrapped by DistributedDataParallel and/or torch.compile
    optimizer: torch.optim.Optimizer
    batches: RandomWindows | StreamWindows
    autocast: Any
    state: RunState
    log: RunLog | None  # rank 0 only
    generator: Generator
    corpus_info: dict[str, Any]
    by_time: bool  # evaluate by time (a --max-time run without --eval-every), not every --eval-every steps
    resumed: bool
    hooks: dict[str, list[Hook]] = field(default_factory=dict)
    improved: bool = False  # the last evaluation set a new best validation loss

    def on(self, event: str, hook: Hook) -> None:
        self.hooks.setdefault(event, []).append(hook)

    def trigger(self, event: str) -> None:
        for hook in self.hooks.get(event, []):
            hook(self)


def open_run(
    corpus: Sequence[str | Path],
    run_dir: Path,
    config: TrainConfig,
    resume: bool,
    given: set[str],
    console: Console,
    ranks: distributed.Dist,
) -> Opened:
    """Resume ``run_dir/last`` (its settings, with the ``RESUMABLE_OVERRIDES`` the user gave) or start
    fresh, from random weights or a source model (named, or the default base for the corpus)."""
    last_dir = run_dir / "last"
    checkpoint.recover(last_dir)  # a crash mid-swap left .last.old: restore it before looking for last/
    found = resume and (last_dir / checkpoint.CONFIG).is_file()
    agree_on_checkpoint(found, _saved_step(last_dir) if found else -1, run_dir, ranks)
    opened = Opened(config=config, previous=config, paths=[])
    if (last_dir / checkpoint.CONFIG).is_file():
        if not resume:
            raise TextweaverError(
                f"{run_dir} already holds a training run: pass --resume to continue it, or choose another --out"
            )
        _resume(opened, last_dir, given, console)
    elif resume:
        console.print(f"no checkpoint in {last_dir}: starting a fresh run")
    config = opened.config
    opened.paths = resolve_paths(corpus, config.glob)
    if config.init_from == NO_SOURCE:
        config = dataclasses.replace(config, init_from=None)
    elif opened.saved is None:
        default, why = finetune.default_source(opened.paths, config, given, data_options(config).corpus)
        if default is not None:  # said once the run starts (a refusal below stays one line)
            opened.chosen = f"starting from {default}: {why} (--init-from none starts from random weights)"
            config = dataclasses.replace(config, init_from=default)
    if opened.saved is None and config.init_from:
        opened.source = finetune.load_source(config.init_from, config, given)
        config = finetune.adopt(config, opened.source)
    config.validate()
    if config.max_time is None and config.max_steps is None and config.epochs is None:
        config.max_time = DEFAULT_MAX_TIME
    # evaluate every --eval-every steps when the user set it (now or when the run began; a run from before
    # evaluation by time counts as set), else by time when the budget is time alone
    every_given = "eval_every" in given or bool(config.extra.get("eval_every_given", opened.saved is not None))
    config.extra = {**config.extra, "eval_every_given": every_given}
    opened.config = config
    return opened


def _resume(opened: Opened, last_dir: Path, given: set[str], console: Console) -> None:
    saved = opened.saved = checkpoint.load(last_dir)
    opened.trainer_state = checkpoint.load_trainer_state(saved.directory)
    previous = opened.previous = TrainConfig.from_dict(saved.train_config)
    changed = {k: getattr(opened.config, k) for k in RESUMABLE_OVERRIDES if k in given}
    changed = {k: v for k, v in changed.items() if v != getattr(previous, k)}
    opened.config = dataclasses.replace(previous, **changed)
    console.print(f"resuming {last_dir} from step {opened.trainer_state['step']}")
    for name, value in changed.items():
        console.print(f"--{name.replace('_', '-')}: {_shown(getattr(previous, name))} -> {_shown(value)}")
    if changed.keys() & {"max_time", "max_steps", "epochs"}:
        console.print(
            "the budget counts the whole run (earlier segments included); the learning rate goes on "
            "decaying from where it is to the new end"
        )


def build(opened: Opened, run_dir: Path, device_name: str, console: Console, ranks: distributed.Dist) -> Trainer:
    """Read the corpus, choose the recipe (a fresh run), build the model, its optimizer and batches."""
    config, saved, source = opened.config, opened.saved, opened.source
    set_threads(config.threads)
    device = select_device(device_name)
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    data = _read_corpus(opened, run_dir, console, ranks)

    # the recipe: chosen from the corpus, budget and device for a fresh run, kept by a resumed one; the token
    # frequencies (of the first PRIOR_TOKENS) give the recipe's shortlist and the output layer's prior
    counts = np.bincount(data.train[:PRIOR_TOKENS], minlength=len(data.tokenizer)) if saved is None else None
    choosing = time.monotonic()
    if counts is not None:
        config = resolve_recipe(config, data, counts, opened.paths, device, ranks, source)
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
    model_config = saved.model_config if saved else config.model_config(len(data.tokenizer))
    check_sizes(data, model_config.context, opened.paths)
    check_memory(model_config, config.batch_size // ranks.world_size, device)

    model = saved.build_model(device) if saved else build_model(model_config)
    if source is not None and counts is not None:  # counts: a fresh run has them
        added = finetune.load_weights(model, source, counts)
        config.extra["init_from"]["added_tokens"] = added
        if opened.chosen:
            console.print(opened.chosen)
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
    optimizer = _optimizer(model, config.weight_decay, config.lr, device)
    batches = make_batches(model_config.kind, data.train, config.batch_size, model_config.context, config.seed + 1,
                           ranks.rank, ranks.world_size)  # fmt: skip
    state = RunState()
    if saved is None:
        state.elapsed_before = choosing
        if config.max_time is not None and choosing >= config.max_time:
            raise TextweaverError(
                f"the --max-time of {config.max_time:g} s was used up before the first step: choosing the recipe "
                f"(measuring this machine's speed) took {choosing:.1f} s: give a longer --max-time, or --preset and "
                "--precision, which need no measuring"
            )
    else:
        optimizer.load_state_dict(opened.trainer_state["optimizer"])
        batches.load_state_dict(opened.trainer_state["batches"])
        state.load(opened.trainer_state, device, batches.rows)
    files = [{**f, "bytes": _file_size(f["path"])} for f in data.files]
    corpus_info = {
        "files": summarize_files(files, STORED_FILES), "train_tokens": len(data.train), "val_tokens": len(data.val),
        "train_chars": data.train_chars, "val_chars": data.val_chars, "cache_key": data.key,
    }  # fmt: skip
    by_time = config.max_time is not None and config.max_steps is None and config.epochs is None
    return Trainer(
        run_dir=run_dir, config=config, previous=opened.previous, model_config=model_config, data=data,
        device=device, ranks=ranks, console=console, model=model, step_model=step_model, optimizer=optimizer,
        batches=batches, autocast=autocast_for(device, config.precision == "bf16"), state=state,
        log=RunLog(run_dir, config.tensorboard) if ranks.is_main else None,
        generator=Generator(model, data.tokenizer, data.prompts, device), corpus_info=corpus_info,
        by_time=by_time and not config.extra["eval_every_given"], resumed=saved is not None,
    )  # fmt: skip


def _read_corpus(opened: Opened, run_dir: Path, console: Console, ranks: distributed.Dist) -> EncodedCorpus:
    """The corpus as ids (cached in the run folder); a fine-tuning run's vocabulary extends its source's (on
    resume: its own, which the corpus must still give)."""
    config, saved, source = opened.config, opened.saved, opened.source
    if config.encoding == AUTO_ENCODING:
        for path in opened.paths:
            console.print(f"--encoding auto: {path} reads as {file_encoding(path, data_options(config).corpus)}")
    base = source.checkpoint.tokenizer if source else saved.tokenizer if saved and config.init_from else None
    data = prepare_once(opened.paths, run_dir, dataclasses.replace(data_options(config), base=base), config.seed,
                        ranks)  # fmt: skip
    if saved is not None and data.tokenizer != saved.tokenizer:
        raise TextweaverError(
            f"the corpus now gives a different vocabulary than the one {run_dir} was trained with: "
            "resume with the original corpus, or start a new run with another --out"
        )
    return data


def decays(p: torch.Tensor) -> bool:
    """Whether AdamW decays this tensor: weight matrices (and the embedding) do, biases and norms do not."""
    return p.dim() >= 2


def _optimizer(model: LanguageModel, weight_decay: float, lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW, decaying the weight matrices only (the page's training step does the same: export/train_step.py)."""
    decay = [p for p in model.parameters() if decays(p)]
    no_decay = [p for p in model.parameters() if not decays(p)]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=ADAM_BETAS, eps=ADAM_EPS, fused=device.type in ("cuda", "cpu"),  # one kernel: ~2x faster steps
    )  # fmt: skip


def prepare_once(
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


def agree_on_checkpoint(found: bool, step: int, run_dir: Path, ranks: distributed.Dist) -> None:
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


def _shown(value: object) -> str:
    return "off" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
