"""The training recipe chosen from what a run can know: a pure function of facts, no training.

``textweaver train FILES --max-time T`` with no model option asks :func:`choose_model` and
:func:`choose_schedule` for the model, its size, output layer, context, batch, learning rate,
warmup and precision. The facts are the corpus (training tokens, vocabulary size and how many
frequent tokens cover most of it), the budget, the device, and the device's measured speed for the
chosen model in float32 and bfloat16 (:func:`textweaver.training.calibrate.measure`, a few training steps). Each
decision carries its reason, printed at the start and stored in the checkpoint so ``--resume``
keeps it. The measurements behind every constant are in docs/training.md ("How the defaults are
chosen"); they were taken on English prose, Chinese novels and C source, side by side with
nanoGPT's CPU recipe (bench/versus_nanogpt.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from textweaver.config import ADAPTIVE_FROM_VOCAB, BF16_MIN_SPEEDUP, ModelConfig

# Why each constant has its value, with the measurements: docs/training.md, "How the defaults are chosen".
# The model, and its width by the tokens the budget buys: (tokens from, width, its peak-rate cap)
MODEL = "lstm"
LAYERS = 2
WIDTHS = ((0.0, 256, math.inf), (6e6, 384, 1e-2), (40e6, 512, 2e-3))
MIN_BATCH_TOKENS_WIDE = 2048  # the wider models' smallest step: their matrices (and bf16) use the CPU better
CONTEXT = 64  # truncated-BPTT length (the state still carries over between windows)
# the batch gives about TARGET_STEPS steps: a short budget is limited by its updates, not its tokens. Fine-tuning
# takes MAX_BATCH_TOKENS whatever the budget: a trained model gains from fewer, less noisy steps (and the CPU runs
# the larger batch faster), measured on four held-out novels (docs/finetuning.md)
TARGET_STEPS = 8000
MIN_BATCH_TOKENS, MAX_BATCH_TOKENS = 1024, 4096
# --softmax auto: the adaptive softmax from ADAPTIVE_FROM_VOCAB (config.py, stated in --softmax's help); its
# shortlist is the most frequent tokens covering SHORTLIST_COVERAGE of the text, rounded up to a multiple of 64,
# and a second boundary at twice that
SHORTLIST_COVERAGE = 0.9
# AdamW peak rate: larger for a large vocabulary (its rows are updated rarely); beyond FEW_PASSES passes over
# the corpus it falls as 1/sqrt(passes), never below LR; the wider models cap it (WIDTHS)
LR = 6e-3
LR_LARGE_VOCAB = 2e-2
LARGE_VOCAB = 1000
FEW_PASSES = 6.0
# fine-tuning (--init-from): smaller steps for trained weights, larger for a large vocabulary
# (measured: docs/finetuning.md, "The defaults, measured"; the large-vocabulary rate on the 40M-character
# Chinese base: 2e-3 and 5e-3 within 0.3% of each other, 1e-2 2% worse)
FINETUNE_LR = 1e-3
# a fine-tuning run whose time budget buys more passes over the corpus than FINETUNE_MAX_PASSES trains that many
# and stops (the base overfits the new text past them), when they still make FINETUNE_MIN_STEPS steps of
# MAX_BATCH_TOKENS (a short corpus gets the time budget, with smaller steps and dropout, instead): measured in
# docs/finetuning.md, "How long to fine-tune"
FINETUNE_MAX_PASSES, FINETUNE_MIN_STEPS = 3.0, 200
FINETUNE_LR_LARGE_VOCAB = 3e-3
WARMUP_FRACTION, MIN_WARMUP, MAX_WARMUP = 0.05, 10, 100  # warmup: 5% of the expected steps, 10 to 100
# bf16 autocast from BF16_MIN_SPEEDUP faster (config.py, where --precision's help states it)


@dataclass(frozen=True)
class Facts:
    """What a run knows before it starts training."""

    train_tokens: int
    vocab_size: int
    shortlist: int  # the most frequent tokens that cover SHORTLIST_COVERAGE of the training tokens
    budget_s: float | None  # --max-time; None when a step or epoch budget limits the run
    device: str  # cpu | cuda | mps
    world_size: int = 1
    softmax: str = "auto"  # the user's --softmax: auto | full | adaptive


@dataclass(frozen=True)
class Speed:
    """Measured training tokens per second of the chosen model, per precision (0: not available)."""

    fp32: float
    bf16: float = 0.0


@dataclass
class Recipe:
    model: str
    layers: int
    width: int
    context: int
    cutoffs: list[int] = field(default_factory=list)
    batch_size: int = 32
    lr: float = LR
    warmup_steps: int = MAX_WARMUP
    precision: str = "fp32"
    finetune: bool = False  # the weights come from a trained model (--init-from)
    reasons: list[str] = field(default_factory=list)

    def summary(self) -> str:
        head = f", adaptive softmax {self.cutoffs}" if self.cutoffs else ""
        return (
            f"{self.model} {self.layers}x{self.width}{head}, batch {self.batch_size} x {self.context}, "
            f"lr {self.lr:g}, warmup {self.warmup_steps}, {self.precision}"
        )


def choose_model(facts: Facts, speed: Speed | None = None) -> Recipe:
    """The architecture: model type, depth, width and context; ``speed`` (of the smallest width) lets
    the width grow with the tokens the budget buys."""
    bought = 0.0
    if facts.budget_s is not None and speed is not None:
        bought = max(speed.fp32, speed.bf16) * facts.budget_s * facts.world_size
    _, width, cap = max(w for w in WIDTHS if bought >= w[0])
    reason = f"{LAYERS}x{width}: the size that learns fastest in minutes"
    if width != WIDTHS[0][1]:
        reason = f"{LAYERS}x{width}: the budget buys ~{bought / 1e6:.0f}M tokens, enough for a wider model"
    large_vocab = facts.vocab_size >= LARGE_VOCAB
    lr = min(LR_LARGE_VOCAB if large_vocab else LR, cap)
    recipe = Recipe(MODEL, LAYERS, width, CONTEXT, lr=lr, reasons=[reason])
    if lr == cap:
        recipe.reasons.append(f"lr {lr:g}: the {LAYERS}x{width} takes smaller steps")
    elif large_vocab:
        recipe.reasons.append(f"lr {lr:g}: {facts.vocab_size:,} tokens, each embedding row is updated rarely")
    recipe.cutoffs, head_reason = choose_head(facts, MODEL)
    recipe.reasons += [head_reason] if head_reason else []
    return recipe


def finetune_model(source: ModelConfig, vocab_size: int) -> Recipe:
    """Fine-tuning (``--init-from``): the source's model, the fine-tuning rate for the run's vocabulary
    (the source's and the appended tokens); batch, warmup and precision then come from
    :func:`choose_schedule` as for any run."""
    large_vocab = vocab_size >= LARGE_VOCAB
    lr = FINETUNE_LR_LARGE_VOCAB if large_vocab else FINETUNE_LR
    recipe = Recipe(source.kind, source.n_layer, source.n_embd, source.context, cutoffs=list(source.cutoffs),
                    lr=lr, finetune=True)  # fmt: skip
    model = f"{source.kind} {source.n_layer}x{source.n_embd}"
    recipe.reasons.append(
        f"lr {lr:g}: fine-tuning a trained {model}"
        + (f"; {vocab_size:,} tokens, each embedding row is updated rarely" if large_vocab else "")
    )
    return recipe


def finetune_passes(facts: Facts, speed: Speed) -> tuple[float | None, str]:
    """The passes a fine-tuning run stops after (None: its time budget buys no more than FINETUNE_MAX_PASSES,
    or the corpus is too short for them to make FINETUNE_MIN_STEPS steps) and the reason."""
    if facts.budget_s is None:
        return None, ""
    passes = max(speed.fp32, speed.bf16) * facts.world_size * facts.budget_s / max(facts.train_tokens, 1)
    if (
        passes <= FINETUNE_MAX_PASSES
        or FINETUNE_MAX_PASSES * facts.train_tokens < FINETUNE_MIN_STEPS * MAX_BATCH_TOKENS
    ):
        return None, ""
    return FINETUNE_MAX_PASSES, (
        f"{FINETUNE_MAX_PASSES:g} passes: the budget buys ~{passes:.0f} over the corpus, and a base fine-tuned past "
        f"{FINETUNE_MAX_PASSES:g} overfits it (--epochs N for more)"
    )


def choose_head(facts: Facts, kind: str) -> tuple[list[int], str]:
    """The output layer: adaptive-softmax cluster boundaries ([] for the full softmax) and the reason."""
    if kind == "transformer" or facts.softmax == "full":
        return [], ""
    if facts.softmax == "auto" and facts.vocab_size < ADAPTIVE_FROM_VOCAB:
        return [], ""
    first = min(max(64, -(-facts.shortlist // 64) * 64), facts.vocab_size // 2)
    cutoffs = [first, 2 * first] if 2 * first < facts.vocab_size - 64 else [first]
    return cutoffs, (
        f"adaptive softmax: {facts.vocab_size:,} tokens, the {first:,} most frequent cover "
        f"~{SHORTLIST_COVERAGE:.0%} of the text"
    )


def choose_precision(speed: Speed, device: str) -> tuple[str, str]:
    """bf16 autocast when it measured clearly faster than float32 on this device; the reason."""
    faster = speed.bf16 / speed.fp32 if speed.fp32 > 0 else 0.0
    if faster >= BF16_MIN_SPEEDUP:
        return "bf16", f"bf16: {faster:.1f}x the float32 speed on this {device}"
    return "fp32", f"float32: bf16 is not faster on this {device} ({faster:.2f}x)"


def choose_schedule(recipe: Recipe, facts: Facts, speed: Speed, precision: str | None = None) -> Recipe:
    """Precision (unless given), batch and warmup for ``recipe`` given its measured speed."""
    if precision is None:
        precision, reason = choose_precision(speed, facts.device)
        recipe.reasons.append(reason)
    recipe.precision = precision
    tok_s = max(speed.bf16 if precision == "bf16" else speed.fp32, 1.0) * facts.world_size
    per_step = MAX_BATCH_TOKENS
    steps = math.inf
    if facts.budget_s is not None:
        bought = tok_s * facts.budget_s
        if not recipe.finetune:
            per_step = _clamp_pow2(bought / TARGET_STEPS, min_batch_tokens(recipe.width), MAX_BATCH_TOKENS)
        steps = bought / per_step
        why = "fine-tuning takes the largest steps; " if recipe.finetune else ""
        recipe.reasons.append(
            f"batch {per_step // recipe.context} x {recipe.context}: {why}the budget buys ~{bought / 1e6:.1f}M "
            f"tokens, ~{steps:,.0f} steps"
        )
        passes = bought / max(facts.train_tokens, 1)
        slower = math.sqrt(FEW_PASSES / passes) if passes > FEW_PASSES else 1.0
        fewer = float(f"{max(LR, LR_LARGE_VOCAB * slower):.2g}")
        if recipe.finetune and slower < 1:
            recipe.lr = float(f"{recipe.lr * slower:.2g}")
            _reason(recipe, f"lr {recipe.lr:g}: fine-tuning with ~{passes:.0f} passes over the corpus (smaller steps)")
        elif not recipe.finetune and facts.vocab_size >= LARGE_VOCAB and slower < 1 and LR <= fewer < recipe.lr:
            recipe.lr = fewer
            _reason(recipe, f"lr {recipe.lr:g}: {facts.vocab_size:,} tokens, but ~{passes:.0f} passes over the corpus "
                    "update each row often")  # fmt: skip
    world = facts.world_size  # every process takes an equal share of the batch
    recipe.batch_size = -(-per_step // recipe.context // world) * world  # rounded up to a multiple of world
    recipe.warmup_steps = int(min(MAX_WARMUP, max(MIN_WARMUP, WARMUP_FRACTION * steps)))
    return recipe


def _reason(recipe: Recipe, reason: str) -> None:
    """Replace the reason for the learning rate."""
    recipe.reasons = [r for r in recipe.reasons if not r.startswith("lr ")] + [reason]


def min_batch_tokens(width: int) -> int:
    """The fewest tokens a step of a model this wide takes in a timed run; its speed (and whether bf16
    pays, which grows with the batch) is measured at this size."""
    return MIN_BATCH_TOKENS if width <= WIDTHS[0][1] else MIN_BATCH_TOKENS_WIDE


def _clamp_pow2(x: float, low: int, high: int) -> int:
    """The power of two nearest to ``x`` (geometrically), within [low, high]."""
    return int(min(high, max(low, 2 ** round(math.log2(max(x, 1.0))))))
