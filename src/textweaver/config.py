"""Typed configuration: model architecture, named presets, training options.

Both dataclasses are stored in every checkpoint's ``config.json``, so a checkpoint alone is
enough to generate, evaluate, resume or export.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any

from textweaver.errors import TextweaverError

MODEL_KINDS = ("lstm", "gru", "transformer")
# builtin:NAME models shipped in the package (see assets/pretrained/README.md)
PRETRAINED = ("shakespeare", "english", "chinese")
DEFAULT_MODEL = "lstm"  # the most training tokens per CPU second (docs/training.md, "Why the LSTM ...")
LEVELS = ("char", "word", "bpe")
NORMALIZE_FORMS = ("NFC", "NFD", "NFKC", "NFKD")


def check_normalize_form(form: str) -> None:
    if form not in NORMALIZE_FORMS:
        raise TextweaverError(f"unknown --normalize {form!r}: use NFC, NFD, NFKC or NFKD")


PRECISIONS = ("auto", "fp32", "bf16")
SOFTMAXES = ("auto", "full", "adaptive")


# A --max-time run without --eval-every evaluates by time: about EVALS_PER_BUDGET times over its budget (a 1-minute
# run every 4 s: a curve, not 3 points), but each evaluation is timed and the next one waits until evaluating has
# taken at most EVAL_SHARE of the time (scoring --eval-tokens, the samples and two checkpoints take seconds)
EVALS_PER_BUDGET = 15
EVAL_SHARE = 0.1


NO_SOURCE = "none"  # --init-from none: random weights, even where a base would be the default (training/finetune.py)


@dataclass
class ModelConfig:
    kind: str = DEFAULT_MODEL  # lstm | gru | transformer
    vocab_size: int = 0  # filled in from the tokenizer
    n_layer: int = 4  # recurrent layers or transformer blocks
    n_embd: int = 128  # embedding width = recurrent hidden size = transformer width
    n_head: int = 4  # attention heads (transformer only)
    context: int = 128  # transformer: attention window; RNN: truncated-BPTT length
    dropout: float = 0.0  # between layers; 0 suits short CPU budgets that cannot overfit
    positional: str = "rotary"  # transformer: rotary | learned
    tie_weights: bool = True  # share embedding and output matrix: fewer parameters, same loss
    cutoffs: list[int] = field(default_factory=list)  # RNN: adaptive-softmax clusters start at these ids; [] = full

    def validate(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise TextweaverError(f"unknown model {self.kind!r}: use one of {', '.join(MODEL_KINDS)}")
        for name in ("n_layer", "n_embd", "context"):
            if getattr(self, name) < 1:
                raise TextweaverError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.kind == "transformer":
            if self.n_head < 1 or self.n_embd % self.n_head:
                raise TextweaverError(
                    f"width {self.n_embd} is not divisible by {self.n_head} heads: choose --heads that divides --width"
                )
            if self.positional == "rotary" and (self.n_embd // self.n_head) % 2:
                raise TextweaverError("rotary positions need an even head size: change --width or --heads")
            if self.positional not in ("rotary", "learned"):
                raise TextweaverError(f"unknown positional encoding {self.positional!r}: use rotary or learned")
        if not 0.0 <= self.dropout < 1.0:
            raise TextweaverError(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.cutoffs:
            bounds = [0, *self.cutoffs, self.vocab_size]
            if self.kind == "transformer" or any(a >= b for a, b in itertools.pairwise(bounds)):
                raise TextweaverError(
                    f"adaptive-softmax cutoffs {self.cutoffs} need an RNN and must rise strictly inside the "
                    f"vocabulary of {self.vocab_size}"
                )


@dataclass(frozen=True)
class Preset:
    """A named model size with the batch size and learning rate it trains best with on a CPU."""

    n_layer: int
    n_embd: int
    n_head: int
    context: int
    batch_size: int
    lr: float
    note: str


PRESETS: dict[str, dict[str, Preset]] = {
    "transformer": {
        "tiny": Preset(2, 64, 4, 64, 32, 3e-3, "a few seconds per epoch on 100 KB; tests and smoke runs"),
        "small": Preset(4, 128, 4, 128, 32, 3e-3, "nanoGPT's CPU size; good for a few CPU minutes"),
        "medium": Preset(6, 256, 8, 256, 32, 1e-3, "for an hour of CPU or a GPU"),
        "large": Preset(8, 512, 8, 256, 64, 6e-4, "GPU-sized"),
    },
    "lstm": {
        "tiny": Preset(1, 64, 1, 64, 32, 5e-3, "tests and smoke runs"),
        "small": Preset(2, 256, 1, 128, 32, 3e-3, "char-rnn's classic size, halved"),
        "medium": Preset(2, 512, 1, 128, 64, 2e-3, "char-rnn's default-quality size"),
        "large": Preset(3, 768, 1, 128, 64, 1e-3, "GPU-sized"),
    },
    "gru": {
        "tiny": Preset(1, 64, 1, 64, 32, 5e-3, "tests and smoke runs"),
        "small": Preset(2, 256, 1, 128, 32, 3e-3, "a few CPU minutes"),
        "medium": Preset(2, 512, 1, 128, 64, 2e-3, "an hour of CPU"),
        "large": Preset(3, 768, 1, 128, 64, 1e-3, "GPU-sized"),
    },
}
DEFAULT_PRESET = "small"

# The budget rule (why, measured: docs/training.md, "How the defaults are chosen"): with --max-time and no
# --dropout, a run whose budget buys more than dropout_passes(width) passes over the corpus, judged from its own
# speed after AUTO_DROPOUT_AFTER_STEPS steps, trains with dropout AUTO_DROPOUT
AUTO_DROPOUT, AUTO_DROPOUT_EPOCHS, AUTO_DROPOUT_AFTER_STEPS, AUTO_DROPOUT_WIDTH = 0.2, 10.0, 30, 256


def dropout_passes(width: int) -> float:
    """The passes over the corpus beyond which the budget rule trains a model this wide with dropout."""
    return AUTO_DROPOUT_EPOCHS * min(1.0, (AUTO_DROPOUT_WIDTH / width) ** 2)


@dataclass
class TrainConfig:
    # model
    model: str | None = None  # lstm | gru | transformer; None with no size options: training/recipe.py chooses
    preset: str | None = None  # named size; None with explicit sizes or --model alone means DEFAULT_PRESET
    layers: int | None = None  # explicit size instead of a preset
    width: int | None = None
    heads: int | None = None
    context: int | None = None  # None: the preset's
    dropout: float | None = None  # None: the budget rule (AUTO_DROPOUT) decides once training runs
    positional: str = "rotary"
    softmax: str = "auto"  # RNN output layer: auto (adaptive for large vocabularies) | full | adaptive
    cutoffs: list[int] | None = None  # the adaptive softmax's boundaries, resolved from `softmax` ([] = full)
    init_from: str | None = None  # fine-tuning: a run, checkpoint or builtin:NAME to start from; none: random weights
    # data
    level: str = "char"  # char | word | bpe (byte-level subwords learned from the corpus)
    vocab_size: int | None = None  # word: keep the N most frequent tokens (10000); bpe: learn up to N (4096)
    val_fraction: float = 0.1  # last fraction of every file held out for validation
    lowercase: bool = False
    normalize: str | None = None  # Unicode form such as NFKC; None keeps the text untouched
    encoding: str = "utf-8"
    errors: str = "strict"  # strict | replace | ignore
    glob: str = "*.txt"  # which files to take from a directory
    # optimisation
    batch_size: int | None = None  # None: the preset's
    lr: float | None = None  # peak learning rate; None: the preset's
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * this
    warmup_steps: int | None = None  # None: the recipe's (5% of the expected steps, at most 100)
    weight_decay: float = 0.1  # AdamW, on matrices only
    grad_clip: float = 1.0  # global gradient-norm clip; 0 disables
    # stopping
    max_time: float | None = None  # seconds of training (evaluation included)
    max_steps: int | None = None
    epochs: float | None = None  # passes over the training tokens
    patience: int | None = None  # stop after this many evaluations without a better val loss
    # evaluation, samples, checkpoints
    eval_every: int = 500  # steps between evaluations (each also writes a checkpoint)
    eval_tokens: int = 131072  # validation tokens scored per evaluation (the first ones)
    sample_length: int = 200
    sample_temperatures: tuple[float, ...] = (0.2, 0.5, 1.0)
    checkpoint_every: float = 300.0  # seconds between checkpoints even without evaluation
    # runtime
    seed: int = 1337
    device: str = "auto"  # auto | cpu | cuda | mps
    compile: bool = False
    precision: str = "auto"  # auto: bf16 autocast where it measures faster (weights stay float32) | fp32 | bf16
    threads: int | None = None
    tensorboard: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept with the run

    def validate(self) -> None:
        if self.model is not None and self.model not in MODEL_KINDS:
            raise TextweaverError(f"unknown --model {self.model!r}: use one of {', '.join(MODEL_KINDS)}")
        if self.level not in LEVELS:
            raise TextweaverError(f"unknown --level {self.level!r}: use char, word or bpe")
        explicit = [n for n in ("layers", "width", "heads") if getattr(self, n) is not None]
        if self.preset is not None and explicit:
            raise TextweaverError(
                f"--preset {self.preset} and --{explicit[0]} were both given: use a preset or explicit sizes, not both"
            )
        kind = self.model or DEFAULT_MODEL
        if self.preset is not None and self.preset not in PRESETS[kind]:
            raise TextweaverError(f"unknown --preset {self.preset!r} for {kind}: use one of {', '.join(PRESETS[kind])}")
        if self.softmax not in SOFTMAXES:
            raise TextweaverError(f"unknown --softmax {self.softmax!r}: use {', '.join(SOFTMAXES)}")
        if self.softmax == "adaptive" and self.model == "transformer":
            raise TextweaverError("--softmax adaptive is for the lstm and gru models: use --softmax full or auto")
        if self.precision not in PRECISIONS:
            raise TextweaverError(f"unknown --precision {self.precision!r}: use {', '.join(PRECISIONS)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise TextweaverError(f"--val-fraction must be between 0 and 1, got {self.val_fraction}")
        if self.normalize is not None:
            check_normalize_form(self.normalize)
        if self.errors not in ("strict", "replace", "ignore"):
            raise TextweaverError(f"unknown --errors {self.errors!r}: use strict, replace or ignore")
        positive = {
            "max_time": self.max_time, "max_steps": self.max_steps, "epochs": self.epochs,
            "batch_size": self.batch_size, "lr": self.lr, "context": self.context,
            "vocab_size": self.vocab_size, "patience": self.patience, "eval_every": self.eval_every,
            "eval_tokens": self.eval_tokens, "checkpoint_every": self.checkpoint_every,
            "threads": self.threads,
        }  # fmt: skip
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise TextweaverError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.warmup_steps is not None and self.warmup_steps < 0:
            raise TextweaverError(f"--warmup-steps must be 0 or more, got {self.warmup_steps}")
        if self.context is not None and self.context < 2:
            raise TextweaverError("--context must be at least 2")
        cores = os.cpu_count() or 1
        if self.threads is not None and self.threads > cores:
            raise TextweaverError(f"--threads must be between 1 and {cores} (the CPU cores here), got {self.threads}")

    @property
    def automatic(self) -> bool:
        """No model option was given: the recipe of ``training/recipe.py`` chooses the model and its training."""
        return self.model is None and self.preset is None and not (self.layers or self.width or self.heads)

    def resolved_preset(self) -> Preset:
        base = PRESETS[self.model or DEFAULT_MODEL][self.preset or DEFAULT_PRESET]
        return dataclasses.replace(
            base,
            n_layer=self.layers or base.n_layer,
            n_embd=self.width or base.n_embd,
            n_head=self.heads or base.n_head,
            context=self.context or base.context,
            batch_size=self.batch_size or base.batch_size,
            lr=self.lr or base.lr,
        )

    def model_config(self, vocab_size: int) -> ModelConfig:
        p = self.resolved_preset()
        cfg = ModelConfig(
            kind=self.model or DEFAULT_MODEL, vocab_size=vocab_size, n_layer=p.n_layer, n_embd=p.n_embd,
            n_head=p.n_head, context=p.context, dropout=self.dropout or 0.0, positional=self.positional,
            cutoffs=list(self.cutoffs or []),
        )  # fmt: skip
        cfg.validate()
        return cfg

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sample_temperatures"] = list(self.sample_temperatures)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in known}
        if "sample_temperatures" in kwargs:
            kwargs["sample_temperatures"] = tuple(kwargs["sample_temperatures"])
        return cls(**kwargs)


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|m|s|ms)?", re.IGNORECASE)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, None: 1.0}


def parse_duration(text: str | float | int, option: str = "--max-time") -> float:
    """Seconds from '90', '90s', '5m', '1h30m' or '2.5m'; a bare number means seconds."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        s = text.strip().replace(" ", "")
        pos, seconds = 0, 0.0
        while pos < len(s):
            m = _DURATION_PART.match(s, pos)
            if not m or m.end() == pos:
                raise TextweaverError(f"{option}: cannot read {text!r} as a duration: use e.g. 90s, 5m or 1h30m")
            unit = m.group(2).lower() if m.group(2) else None
            seconds += float(m.group(1)) * _UNIT_SECONDS[unit]
            pos = m.end()
        if not s:
            raise TextweaverError(f"{option}: empty duration: use e.g. 90s, 5m or 1h30m")
    if seconds <= 0:
        raise TextweaverError(f"{option} must be a positive duration, got {text!r}")
    return seconds
