"""Text <-> token ids, character-level or word-level, saved as JSON in every checkpoint.

A tokenizer owns the whole text-to-ids step: the optional normalisation (``lowercase``,
Unicode ``normalize``) and the split. Id 0 is always ``<unk>``; the rest of the vocabulary is
ordered by frequency in the training corpus, most frequent first.

- ``char``: one token per Unicode code point (CJK, emoji and control characters included).
- ``word``: a regex split into words, single punctuation marks and whitespace runs, so the
  tokens concatenate back to the exact text (unlike word models that lower-case and drop
  punctuation). ``vocab_size`` caps the vocabulary; rarer words become ``<unk>``.

``decode(encode(s)) == s`` for every text made of known tokens; ``<unk>`` decodes as U+FFFD.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from typing import Any

import numpy as np

from textweaver.errors import TextweaverError

UNK = "<unk>"
UNK_TEXT = "\ufffd"  # what <unk> prints as
FORMAT_VERSION = 1
WORD_PATTERN = re.compile(r"\w+|[^\w\s]|\s+")
_MAX_CODEPOINT = 0x110000


class Tokenizer:
    """Base: vocabulary handling shared by both levels. Subclasses define the split."""

    level = ""

    def __init__(self, vocab: list[str], lowercase: bool = False, normalize: str | None = None) -> None:
        if not all(isinstance(t, str) for t in vocab):
            raise TextweaverError("tokenizer vocabulary holds non-text entries: the tokenizer.json is damaged")
        if not vocab or vocab[0] != UNK:
            raise TextweaverError("tokenizer vocabulary must start with <unk>: the tokenizer.json is damaged")
        self.vocab = vocab
        self.lowercase = lowercase
        self.normalize = normalize
        self.index = {tok: i for i, tok in enumerate(vocab)}
        if normalize is not None:
            check_normalize_form(normalize)

    def __len__(self) -> int:
        return len(self.vocab)

    @property
    def id_dtype(self) -> type[np.unsignedinteger[Any]]:
        return np.uint16 if len(self.vocab) <= np.iinfo(np.uint16).max + 1 else np.uint32

    def preprocess(self, text: str) -> str:
        """The opt-in normalisation applied to corpus and prompts alike (none by default)."""
        return preprocess(text, self.lowercase, self.normalize)

    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    def encode(self, text: str) -> np.ndarray:
        """Ids of ``text`` (after preprocessing); unknown tokens become 0 (<unk>)."""
        return self.encode_preprocessed(self.preprocess(text))

    def encode_preprocessed(self, text: str) -> np.ndarray:
        return self.ids_of(self.split(text))

    def ids_of(self, tokens: list[str]) -> np.ndarray:
        get = self.index.get
        return np.fromiter((get(t, 0) for t in tokens), dtype=np.int64, count=len(tokens))

    def unknown(self, text: str) -> list[str]:
        """The distinct tokens of ``text`` that are not in the vocabulary, in order of appearance."""
        seen = dict.fromkeys(t for t in self.split(self.preprocess(text)) if t not in self.index)
        return list(seen)

    def decode(self, ids: Iterable[int]) -> str:
        vocab = self.vocab
        return "".join(UNK_TEXT if i == 0 else vocab[i] for i in ids)

    def token_lengths(self) -> np.ndarray:
        """Characters per token (``<unk>`` counts as one), for bits-per-character."""
        return np.array([1] + [len(t) for t in self.vocab[1:]], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "level": self.level,
            "lowercase": self.lowercase,
            "normalize": self.normalize,
            "vocab": self.vocab,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(self.to_json())


class CharTokenizer(Tokenizer):
    level = "char"

    def __init__(self, vocab: list[str], lowercase: bool = False, normalize: str | None = None) -> None:
        super().__init__(vocab, lowercase, normalize)
        if any(len(t) != 1 for t in vocab[1:]):
            raise TextweaverError("char tokenizer vocabulary holds multi-character tokens: tokenizer.json is damaged")
        self._table: np.ndarray | None = None

    def split(self, text: str) -> list[str]:
        return list(text)

    def encode_preprocessed(self, text: str) -> np.ndarray:
        # A code-point lookup table encodes ~100 MB/s, which matters for big corpora.
        if self._table is None:
            table = np.zeros(_MAX_CODEPOINT, dtype=np.int64)
            for i, ch in enumerate(self.vocab[1:], start=1):
                table[ord(ch)] = i
            self._table = table
        return self._table[codepoints(text)]

    def unknown(self, text: str) -> list[str]:
        return [ch for ch in dict.fromkeys(self.preprocess(text)) if ch not in self.index]


class WordTokenizer(Tokenizer):
    level = "word"

    def split(self, text: str) -> list[str]:
        return WORD_PATTERN.findall(text)


def preprocess(text: str, lowercase: bool = False, normalize: str | None = None) -> str:
    if normalize is not None:
        text = unicodedata.normalize(normalize, text)  # type: ignore[arg-type]
    if lowercase:
        text = text.lower()
    return text


def codepoints(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as a uint32 array, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)


def check_normalize_form(form: str) -> None:
    if form not in ("NFC", "NFD", "NFKC", "NFKD"):
        raise TextweaverError(f"unknown --normalize {form!r}: use NFC, NFD, NFKC or NFKD")


class VocabCounter:
    """Counts tokens over a corpus fed in chunks, then builds the tokenizer."""

    def __init__(self, level: str, lowercase: bool = False, normalize: str | None = None) -> None:
        self.level, self.lowercase, self.normalize = level, lowercase, normalize
        self._char_counts = np.zeros(_MAX_CODEPOINT, dtype=np.int64)
        self._word_counts: Counter[str] = Counter()

    def update(self, preprocessed_text: str) -> int:
        """Count the tokens of one chunk; returns how many there were."""
        if self.level == "char":
            self._char_counts += np.bincount(codepoints(preprocessed_text), minlength=_MAX_CODEPOINT)
            return len(preprocessed_text)
        words = WORD_PATTERN.findall(preprocessed_text)
        self._word_counts.update(words)
        return len(words)

    def build(self, vocab_size: int | None = None) -> Tokenizer:
        if self.level == "char":
            seen = np.nonzero(self._char_counts)[0]
            # most frequent first; ties by code point so the order is reproducible
            order = seen[np.lexsort((seen, -self._char_counts[seen]))]
            chars = [chr(c) for c in order]
            return CharTokenizer([UNK, *chars], self.lowercase, self.normalize)
        ranked = sorted(self._word_counts.items(), key=lambda kv: (-kv[1], kv[0]))
        limit = (vocab_size or 10000) - 1
        return WordTokenizer([UNK, *(w for w, _ in ranked[:limit])], self.lowercase, self.normalize)


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
    cls = {"char": CharTokenizer, "word": WordTokenizer}.get(level)
    if cls is None:
        raise TextweaverError(f"tokenizer.json has unknown level {level!r}: retrain or restore the checkpoint")
    return cls(vocab, bool(data.get("lowercase", False)), data.get("normalize"))


def tokenizer_from_json(text: str) -> Tokenizer:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TextweaverError(f"tokenizer.json is not valid JSON ({e}): retrain or restore the checkpoint") from None
    return make_tokenizer(data)
