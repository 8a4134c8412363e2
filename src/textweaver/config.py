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


DEFAULT_MAX_TIME = 300.0  # seconds of training when no budget at all (--max-time, --max-steps, --epochs) is given
# the recipe's thresholds that the options' help states (training/recipe.py applies them)
BF16_MIN_SPEEDUP = 1.1  # precision auto: bf16 autocast when calibration measures it at least this much faster
ADAPTIVE_FROM_VOCAB = 8192  # softmax auto: an RNN's output layer is an adaptive softmax from this vocabulary size
BUILTINS = ", ".join("builtin:" + name for name in PRETRAINED)


@dataclass(frozen=True)
class Option:
    """How a :class:`TrainConfig` field appears on the command line: ``textweaver train`` builds one
    option per field that has one (app/cli.py), its default the field's."""

    help: str
    flags: tuple[str, ...] = ()  # default: --the-field-name (a bool: --name/--no-name)
    duration: bool = False  # typed as 90s, 5m or 1h30m (parse_duration), stored in seconds
    show_default: bool = True  # False where the help says what an unset option means


def option(default: Any, help: str, **how: Any) -> Any:
    return field(default=default, metadata={"option": Option(help, **how)})


def format_duration(seconds: float) -> str:
    """A duration as --max-time takes it: 5m, 90s."""
    return f"{seconds / 60:g}m" if seconds % 60 == 0 else f"{seconds:g}s"


AUTOMATIC = "Default: chosen automatically, else the preset's."


@dataclass
class TrainConfig:
    # model
    model: str | None = option(
        None, f"Model type: {', '.join(MODEL_KINDS)}. Default: with no model option at all, the model, its size, "
        "context, batch, learning rate and precision are chosen from the corpus, the budget and this machine's "
        f"measured speed (printed as 'auto:'); with size options alone, {DEFAULT_MODEL}.", show_default=False,
    )  # fmt: skip
    preset: str | None = option(
        None, f"Named size: tiny, small, medium, large (see 'textweaver presets'). Default: {DEFAULT_PRESET}, "
        "unless explicit sizes are given.", show_default=False,
    )  # fmt: skip
    layers: int | None = option(None, "Explicit number of layers (instead of --preset).", show_default=False)
    width: int | None = option(None, "Explicit embedding/hidden width (instead of --preset).", show_default=False)
    heads: int | None = option(
        None, "Explicit attention heads, transformer only (instead of --preset).", show_default=False
    )
    context: int | None = option(
        None, "Tokens per training window: the transformer's attention span, the RNN's BPTT length. " + AUTOMATIC,
        show_default=False,
    )  # fmt: skip
    dropout: float | None = option(
        None, f"Dropout between layers, 0-0.9. Default: {AUTO_DROPOUT} when --max-time buys more than "
        f"{AUTO_DROPOUT_EPOCHS:g} passes over the corpus (fewer for models wider than {AUTO_DROPOUT_WIDTH}: "
        f"{dropout_passes(384):.1f} at 384; judged from the run's own speed after {AUTO_DROPOUT_AFTER_STEPS} "
        "steps), else 0.", show_default=False,
    )  # fmt: skip
    positional: str = option("rotary", "Transformer positions: rotary or learned.")
    softmax: str = option(
        "auto", f"RNN output layer: auto (an adaptive softmax from a vocabulary of {ADAPTIVE_FROM_VOCAB:,} tokens, "
        "e.g. Chinese), full, or adaptive.",
    )  # fmt: skip
    cutoffs: list[int] | None = None  # the adaptive softmax's boundaries, resolved from `softmax` ([] = full)
    init_from: str | None = option(
        None, f"Fine-tune: start from this model (a run or checkpoint folder, or {BUILTINS}) instead of random "
        "weights. Its architecture, level and vocabulary are kept; the corpus's new characters or words are added. "
        f"Not with model options. Default: the base of the corpus's language where it measures better; "
        f"{NO_SOURCE}: random weights.", show_default=False,
    )  # fmt: skip
    # data
    level: str = option(
        "char", "Tokens: char (every Unicode character), word (words, punctuation and spaces) or bpe (byte-level "
        "subwords learned from the corpus: shorter sequences, never an unknown token).",
    )  # fmt: skip
    vocab_size: int | None = option(
        None, "Word level: keep this many most frequent tokens, the rest become <unk>. Default 10000. bpe: the "
        "vocabulary to learn (at most; at least 257). Default 4096.", show_default=False,
    )  # fmt: skip
    val_fraction: float = option(0.1, "Fraction at the end of every file held out for validation.")
    lowercase: bool = option(
        False, "Lower-case the text first (prompts too). Off: text is used exactly as written.", flags=("--lowercase",)
    )
    normalize: str | None = option(
        None, "Unicode normalisation of text and prompts: NFC, NFD, NFKC or NFKD. Default: none.", show_default=False
    )
    encoding: str = option(
        "utf-8", "Encoding of the corpus files (utf-8, gb18030, big5, latin-1 ...), or auto: detect each file's "
        "(charset-normalizer) and print what it chose.",
    )  # fmt: skip
    errors: str = option("strict", "On invalid bytes: strict (stop with an error), replace (use U+FFFD) or ignore.")
    glob: str = option("*.txt", "Which files to take from a folder.")
    # optimisation
    batch_size: int | None = option(None, "Windows per step. " + AUTOMATIC, show_default=False)
    lr: float | None = option(None, "Peak learning rate (AdamW). " + AUTOMATIC, show_default=False)
    min_lr_ratio: float = 0.1  # cosine decay ends at lr * this
    warmup_steps: int | None = option(
        None, "Steps of linear learning-rate warmup before the cosine decay. Default: 5% of the expected steps "
        "(10-100) when chosen automatically, else 100.", show_default=False,
    )  # fmt: skip
    weight_decay: float = option(0.1, "AdamW weight decay on weight matrices.")
    grad_clip: float = option(1.0, "Clip the global gradient norm to this (0: off).")
    # stopping
    max_time: float | None = option(
        None, f"Training time budget, e.g. 90s, 5m, 1h30m. Default {format_duration(DEFAULT_MAX_TIME)} when no other "
        "limit is given.", duration=True, show_default=False,
    )  # fmt: skip
    max_steps: int | None = option(None, "Stop after this many optimizer steps.", show_default=False)
    epochs: float | None = option(None, "Stop after this many passes over the training tokens.", show_default=False)
    patience: int | None = option(
        None, "Stop after this many evaluations without a better validation loss.", show_default=False
    )
    # evaluation, samples, checkpoints
    eval_every: int = option(
        500, "Steps between evaluations; each prints samples and writes a checkpoint. Default: with --max-time "
        f"alone, by time instead (~{EVALS_PER_BUDGET} evaluations over the budget, at most {EVAL_SHARE:.0%} of it "
        "spent evaluating); else 500.",
    )  # fmt: skip
    eval_tokens: int = option(131072, "Validation tokens scored per evaluation.")
    sample_length: int = option(200, "Tokens per sample printed at each evaluation.")
    sample_temperatures: tuple[float, ...] = (0.2, 0.5, 1.0)
    checkpoint_every: float = option(300.0, "Also write a checkpoint at least this often, e.g. 5m.", duration=True)
    # runtime
    seed: int = option(1337, "Random seed; the same seed repeats a CPU run exactly.")
    device: str = option("auto", "auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")
    compile: bool = option(
        False, "Compile the model with torch.compile (slower start, may train faster).", flags=("--compile",)
    )
    precision: str = option(
        "auto", f"auto (bf16 autocast when it measures at least {BF16_MIN_SPEEDUP:g}x faster here), fp32 or bf16. "
        "Weights and checkpoints stay float32 either way.",
    )  # fmt: skip
    threads: int | None = option(None, "CPU threads for PyTorch. Default: PyTorch's choice.", show_default=False)
    tensorboard: bool = option(True, "Write TensorBoard scalars to RUN_DIR/tensorboard.")
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
