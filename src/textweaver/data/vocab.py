"""A vocabulary counted over a corpus fed in chunks, the tokenizer built from it (or a base's
extended by it, for fine-tuning), and a tokenizer rebuilt from its ``tokenizer.json``."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import numpy as np

from textweaver.data.bpe import BPE_PIECE, BPE_VOCAB_SIZE, BPETokenizer, byte_level, train_bpe
from textweaver.data.tokenizer import (
    _MAX_CODEPOINT,
    FORMAT_VERSION,
    UNK,
    WORD_VOCAB_SIZE,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    codepoints,
    split_words,
)
from textweaver.errors import TextweaverError


class VocabCounter:
    """Counts tokens over a corpus fed in chunks, then builds the tokenizer."""

    def __init__(self, level: str, lowercase: bool = False, normalize: str | None = None) -> None:
        self.level, self.lowercase, self.normalize = level, lowercase, normalize
        self._char_counts = np.zeros(_MAX_CODEPOINT, dtype=np.int64)
        self._word_counts: Counter[str] = Counter()  # word: words; bpe: GPT-2 pieces, byte-spelt
        self.byte_level = byte_level() if level == "bpe" else None

    def update(self, preprocessed_text: str) -> int:
        """Count the tokens of one chunk; returns how many there were (bpe: pieces, as its tokens are not
        known until :meth:`build` learns them)."""
        if self.level == "char":
            self._char_counts += np.bincount(codepoints(preprocessed_text), minlength=_MAX_CODEPOINT)
            return len(preprocessed_text)
        if self.byte_level is not None:  # GPT-2's regex runs in Rust once per distinct piece, not per word
            pieces = BPE_PIECE.findall(preprocessed_text)
            for piece, n in Counter(pieces).items():
                for word, _ in self.byte_level.pre_tokenize_str(piece):
                    self._word_counts[word] += n
            return len(pieces)
        words = split_words(preprocessed_text)
        self._word_counts.update(words)
        return len(words)

    def build(self, vocab_size: int | None = None, base: Tokenizer | None = None) -> Tokenizer:
        """The tokenizer of the counted corpus; with ``base`` (fine-tuning), ``base``'s vocabulary with the
        corpus's tokens it lacks appended, most frequent first, so every id of ``base`` keeps its meaning."""
        if base is not None:
            return self._extend(base, vocab_size)
        if self.level == "char":
            seen = np.nonzero(self._char_counts)[0]
            # most frequent first; ties by code point so the order is reproducible
            order = seen[np.lexsort((seen, -self._char_counts[seen]))]
            chars = [chr(c) for c in order]
            return CharTokenizer([UNK, *chars], self.lowercase, self.normalize)
        if self.level == "bpe":
            return train_bpe(self._word_counts, vocab_size or BPE_VOCAB_SIZE, self.lowercase, self.normalize)
        ranked = sorted(self._word_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        limit = (vocab_size or WORD_VOCAB_SIZE) - 1
        return WordTokenizer([UNK, *(w for w, _ in ranked[:limit])], self.lowercase, self.normalize)

    def _extend(self, base: Tokenizer, vocab_size: int | None) -> Tokenizer:
        if isinstance(base, BPETokenizer):  # byte-level: every text already encodes, nothing to add
            return base
        if isinstance(base, CharTokenizer):
            seen = np.nonzero(self._char_counts)[0]
            order = seen[np.lexsort((seen, -self._char_counts[seen]))]
            return CharTokenizer([*base.vocab, *(c for c in map(chr, order) if c not in base.index)],
                                 base.lowercase, base.normalize)  # fmt: skip
        assert isinstance(base, WordTokenizer)
        ranked = sorted(self._word_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        room = max(0, (vocab_size or WORD_VOCAB_SIZE) - len(base))
        new = [w for w, _ in ranked if w not in base.index][:room]
        return WordTokenizer([*base.vocab, *new], base.lowercase, base.normalize, base.segmenter)


def make_tokenizer(data: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from its JSON dict, refusing unknown formats with a clear message."""
    if not isinstance(data, dict):
        raise TextweaverError("tokenizer.json is damaged (not a JSON object): retrain or restore the checkpoint")
    try:
        version = int(data.get("format_version", 0))
        level = data["level"]
        vocab = list(data["vocab"])
    except (KeyError, TypeError, ValueError) as e:
        raise TextweaverError(f"tokenizer.json is damaged ({e}): retrain or restore the checkpoint") from None
    if version > FORMAT_VERSION:
        raise TextweaverError(
            f"tokenizer format {version} is newer than this textweaver reads ({FORMAT_VERSION}): upgrade textweaver"
        )
    lowercase, normalize = bool(data.get("lowercase", False)), data.get("normalize")
    if level == "bpe":
        return BPETokenizer(vocab, lowercase, normalize, data.get("huggingface"))
    if level == "word":
        return WordTokenizer(vocab, lowercase, normalize, data.get("segmenter"))
    if level != "char":
        raise TextweaverError(f"tokenizer.json has unknown level {level!r}: retrain or restore the checkpoint")
    return CharTokenizer(vocab, lowercase, normalize)


def tokenizer_from_json(text: str) -> Tokenizer:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TextweaverError(f"tokenizer.json is not valid JSON ({e}): retrain or restore the checkpoint") from None
    return make_tokenizer(data)
