"""Fine-tuning: a run that starts from another model's weights (``train --init-from SOURCE``).

SOURCE is any run or checkpoint folder or ``builtin:NAME``. The new run takes SOURCE's architecture
and tokenizer; the tokens of the new corpus that SOURCE lacks are appended to its vocabulary (every
old id keeps its meaning, see :meth:`textweaver.data.vocab.VocabCounter.build`) and their rows are
initialised by :func:`load_weights`. Tokens of SOURCE that the new corpus never uses are kept: the
model learns to give them little probability within the first steps, and keeping them lets the
fine-tuned model still write them (the measurement is in docs/finetuning.md). The optimizer and the
schedule start fresh, with the fine-tuning rate of :mod:`textweaver.training.recipe`.

With no ``--init-from`` and no model option, a character-level run on prose mostly in a script a
shipped base knows starts from that base (:func:`default_source`; ``--init-from none`` opts out):
the rule and its measurements are in docs/finetuning.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from textweaver.config import TrainConfig
from textweaver.data.corpus import CorpusOptions, iter_text
from textweaver.errors import TextweaverError
from textweaver.models import LanguageModel
from textweaver.run import checkpoint

# options that describe the model: SOURCE fixes them, so giving one is a contradiction
ARCHITECTURE_OPTIONS = ("model", "preset", "layers", "width", "heads", "context", "positional", "softmax")
# options of the text-to-ids step: SOURCE's apply; giving a different one is a contradiction
TOKENIZER_OPTIONS = ("level", "lowercase", "normalize")
SOURCE_OPTIONS = ARCHITECTURE_OPTIONS + TOKENIZER_OPTIONS + ("vocab_size",)
# how the rows of appended tokens start (measured against "random" in docs/finetuning.md)
NEW_ROWS = "mean"
# the shipped base a corpus starts from by default, by the script its text is mostly written in
DEFAULT_BASES = {"chinese": "builtin:chinese", "english": "builtin:english"}
SCRIPT_SAMPLE = 1 << 20  # characters read to tell the script, shared among the files
# Measured on ../shared/corpora (docs/finetuning.md): Chinese prose and verse are 82-86% Han characters
# (of the non-space ones), English prose >= 94% letters, all Latin; C source is 9% of the symbols below, prose < 0.6%
MIN_HAN = 0.5
MIN_LATIN_LETTERS = 0.75
MAX_CODE_SYMBOLS = 0.02
# below this --max-time a fresh run keeps random weights: the base's speed probe alone takes seconds, and
# docs/finetuning.md measures the rule from 1 minute up
MIN_BASE_BUDGET_S = 60.0
CODE_SYMBOLS = frozenset("{}[]<>=;#*/\\|_$@&%^~`+")


@dataclass
class Source:
    spec: str  # as the user gave it
    checkpoint: checkpoint.Checkpoint

    @property
    def record(self) -> dict[str, object]:
        """What the fine-tuned run stores about where it started."""
        c = self.checkpoint
        return {
            "source": self.spec, "weights_sha256": checkpoint.weights_digest(c.directory),
            "model": f"{c.model_config.kind} {c.model_config.n_layer}x{c.model_config.n_embd}",
            "vocab_size": len(c.tokenizer), "val_loss": c.metrics.get("best_val_loss"),
        }  # fmt: skip


def load_source(spec: str, config: TrainConfig, given: set[str]) -> Source:
    """Read SOURCE and check that the options given agree with it (one line and nothing written if not)."""
    clash = [name for name in ARCHITECTURE_OPTIONS if name in given]
    if clash:
        flag = "--" + clash[0].replace("_", "-")
        raise TextweaverError(
            f"{flag} was given with --init-from {spec}, which fixes the model: drop {flag} "
            "(the run takes its architecture from the source)"
        )
    source = Source(spec, checkpoint.load(spec))
    tokenizer = source.checkpoint.tokenizer
    wanted = {"level": tokenizer.level, "lowercase": tokenizer.lowercase, "normalize": tokenizer.normalize}
    for name, value in wanted.items():
        if name in given and getattr(config, name) != value:
            flag = "--" + name.replace("_", "-")
            raise TextweaverError(
                f"{flag} {getattr(config, name)} differs from --init-from {spec}, which was trained with "
                f"{flag} {value}: drop {flag}, or start from a {flag} {getattr(config, name)} model"
            )
    if "vocab_size" in given and tokenizer.level != "word":
        raise TextweaverError(
            f"--vocab-size is for word-level fine-tuning; --init-from {spec} is {tokenizer.level} level and keeps "
            "its vocabulary: drop --vocab-size"
        )
    return source


def adopt(config: TrainConfig, source: Source) -> TrainConfig:
    """``config`` with SOURCE's architecture and tokenizer options."""
    m, t = source.checkpoint.model_config, source.checkpoint.tokenizer
    return dataclasses.replace(
        config, model=m.kind, preset=None, layers=m.n_layer, width=m.n_embd,
        heads=m.n_head if m.kind == "transformer" else None, context=m.context, positional=m.positional,
        cutoffs=list(m.cutoffs), softmax="adaptive" if m.cutoffs else "full",
        level=t.level, lowercase=t.lowercase, normalize=t.normalize,
        extra={**config.extra, "init_from": source.record},
    )  # fmt: skip


@torch.no_grad()
def load_weights(model: LanguageModel, source: Source, counts: np.ndarray, rows: str = NEW_ROWS) -> int:
    """Copy SOURCE's weights into ``model``, whose vocabulary is SOURCE's plus appended tokens; returns how
    many were appended. Their rows start as follows.

    ``mean``: embedding and output rows are the mean of SOURCE's rows (an "average token", which the
    model already knows how to carry forward), and output biases are the new corpus's log frequency of
    each token on the scale of SOURCE's biases (the offset between SOURCE's biases and the new corpus's
    log frequencies, averaged over the tokens both know), so a new token starts as likely as it is in
    the corpus. ``random``: the rows a fresh model would get (the obvious alternative, for measurement).
    """
    base = checkpoint.load_state(source.checkpoint)
    fresh = model.state_dict()
    old_vocab = len(source.checkpoint.tokenizer)
    added = model.config.vocab_size - old_vocab
    log_p = np.log((counts.astype(np.float64) + 1.0) / (counts.sum() + len(counts)))
    state = {}
    for name, tensor in base.items():
        target = fresh[name]
        if tensor.shape == target.shape:
            state[name] = tensor
            continue
        if tensor.shape[1:] != target.shape[1:] or target.shape[0] - tensor.shape[0] != added:
            raise TextweaverError(
                f"{source.spec}: its weight {name} {tuple(tensor.shape)} does not fit the fine-tuned model "
                f"{tuple(target.shape)}: the checkpoint is damaged"
            )
        if rows == "random":
            state[name] = torch.cat([tensor, target[tensor.shape[0] :]])
        elif tensor.dim() > 1:
            state[name] = torch.cat([tensor, tensor.mean(0, keepdim=True).expand(added, *tensor.shape[1:])])
        else:  # an output bias over the vocabulary (or an adaptive cluster's tail of it)
            first = old_vocab - tensor.shape[0]  # the id its first entry stands for
            known = counts[first:old_vocab] > 0
            offset = float(np.mean(tensor.numpy()[known] - log_p[first:old_vocab][known])) if known.any() else 0.0
            new = torch.from_numpy(log_p[old_vocab:] + offset).to(tensor.dtype)
            state[name] = torch.cat([tensor, new])
    checkpoint.fit_weights(model, state, source.spec)
    return added


def describe(source: Source, vocab: list[str], added: int) -> str:
    """The line a fine-tuning run prints when it starts."""
    new = "".join(vocab[len(vocab) - added :][:20]) if added else "none"
    return (
        f"fine-tuning {source.spec} ({source.record['model']}, {len(source.checkpoint.tokenizer):,} tokens; "
        f"the corpus adds {added:,}: {new})"
    )


def script(text: str) -> str | None:
    """``chinese`` or ``english`` (Latin letters) when ``text`` is mostly prose in that script, else None
    (another script, a mix, or code)."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return None
    han = sum(1 for c in chars if "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf")
    latin = sum(1 for c in chars if c.isalpha() and ord(c) < 0x250)
    symbols = sum(1 for c in chars if c in CODE_SYMBOLS)
    if symbols / len(chars) > MAX_CODE_SYMBOLS:
        return None
    if han / len(chars) >= MIN_HAN:
        return "chinese"
    if latin / len(chars) >= MIN_LATIN_LETTERS:
        return "english"
    return None


def sample_text(paths: Sequence[Path], options: CorpusOptions, size: int = SCRIPT_SAMPLE) -> str:
    """Up to ``size`` characters of the corpus: the start of every file, an equal share each."""
    share = max(1, size // max(1, len(paths)))
    parts = []
    for path in paths:
        taken = 0
        for chunk in iter_text(path, options):
            parts.append(chunk[: share - taken])
            taken += len(parts[-1])
            if taken >= share:
                break
    return "".join(parts)


def default_source(
    paths: Sequence[Path], config: TrainConfig, given: set[str], options: CorpusOptions
) -> tuple[str | None, str]:
    """The base a fresh run starts from when the user named none, and why (or why not); ``options`` read the
    corpus as the run will."""
    if config.init_from is not None:
        return None, "--init-from given"
    if given & {*ARCHITECTURE_OPTIONS, "vocab_size"} or not config.automatic:
        return None, "model options given"
    if config.level != "char" or config.lowercase or config.normalize:
        return None, "not a plain character-level run"
    if config.max_time is not None and config.max_time < MIN_BASE_BUDGET_S:
        return None, f"--max-time under {MIN_BASE_BUDGET_S:g} s"
    language = script(sample_text(paths, options))
    if language is None:
        return None, "not mostly prose in a script a base knows"
    return DEFAULT_BASES[language], f"the corpus is mostly {language} prose"
