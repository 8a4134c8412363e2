"""Text <-> token ids at character, word or byte-level subword level, saved as JSON in every checkpoint.

A tokenizer owns the whole text-to-ids step: the optional normalisation (``lowercase``,
Unicode ``normalize``) and the split. Id 0 is always ``<unk>``; the rest of the vocabulary is
ordered by frequency in the training corpus, most frequent first.

- ``char``: one token per Unicode code point (CJK, emoji and control characters included).
- ``word``: a regex split into words, single punctuation marks and whitespace runs, so the
  tokens concatenate back to the exact text (unlike word models that lower-case and drop
  punctuation). ``vocab_size`` caps the vocabulary; rarer words become ``<unk>``.
- ``bpe``: byte-level BPE learned from the corpus (``data/bpe.py``); ``vocab_size`` is the vocabulary
  to learn. Generated text is decoded with :meth:`Tokenizer.piece_decoder`, which holds back the bytes
  of a character split between tokens until it is complete.

``data/vocab.py`` counts a corpus's tokens and builds the tokenizer, or rebuilds one from its JSON.

``decode(encode(s)) == s`` for every text made of known tokens (every text at ``bpe`` level);
``<unk>`` decodes as U+FFFD.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from textweaver.config import check_normalize_form
from textweaver.errors import TextweaverError

UNK = "<unk>"
UNK_TEXT = "\ufffd"  # what <unk> prints as
# the newest tokenizer.json this version reads: 2 added level bpe, 3 word tokenizers that segment
# Chinese with jieba (char and the older word tokenizers still write 1)
FORMAT_VERSION = 3
WORD_PATTERN = re.compile(r"\w+|[^\w\s]|\s+")
# word level: Chinese has no spaces, so \w+ takes a whole clause ("混沌未分天地乱"); runs holding Han
# characters are segmented into words by jieba (its Rust port, rjieba), keeping every character
JIEBA = "jieba"
_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
WORD_VOCAB_SIZE = 10000  # --vocab-size default at word level
_MAX_CODEPOINT = 0x110000


class Tokenizer:
    """Base: vocabulary handling shared by all levels. Subclasses define the split."""

    level = ""
    format_version = 1

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

    def piece_decoder(self) -> Callable[[int], str]:
        """A function from each next generated id to the text it adds (``<unk>`` adds nothing)."""
        vocab = self.vocab
        return lambda i: vocab[i] if i else ""

    def token_lengths(self) -> np.ndarray:
        """Characters per token (``<unk>`` counts as one), for bits-per-character."""
        return np.array([1] + [len(t) for t in self.vocab[1:]], dtype=np.int64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
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


def split_words(text: str, segmenter: str | None = JIEBA) -> list[str]:
    """Word-level tokens: words, single punctuation marks and whitespace runs, joining back to ``text``
    exactly; with ``segmenter`` a run holding Han characters is cut into jieba's words."""
    tokens = WORD_PATTERN.findall(text)
    if segmenter is None or not _HAN.search(text):
        return tokens
    import rjieba

    words: list[str] = []
    for token in tokens:
        if _HAN.search(token):
            parts = rjieba.cut(token)
            words.extend(parts if "".join(parts) == token else [token])  # never lose a character
        else:
            words.append(token)
    return words


def segments_chinese(tokenizer: Tokenizer) -> bool:
    """Whether ``tokenizer`` cuts Chinese into jieba's words (which the web page's tokenizer.js cannot)."""
    return (
        isinstance(tokenizer, WordTokenizer)
        and tokenizer.segmenter is not None
        and any(_HAN.search(token) and len(token) > 1 for token in tokenizer.vocab)
    )


class WordTokenizer(Tokenizer):
    level = "word"

    def __init__(
        self, vocab: list[str], lowercase: bool = False, normalize: str | None = None, segmenter: str | None = JIEBA
    ) -> None:
        super().__init__(vocab, lowercase, normalize)
        if segmenter not in (None, JIEBA):
            raise TextweaverError(f"tokenizer.json names an unknown segmenter {segmenter!r}: upgrade textweaver")
        self.segmenter = segmenter  # None: tokenizers written before segmentation (whole clauses)
        self.format_version = 3 if segmenter else 1

    def split(self, text: str) -> list[str]:
        return split_words(text, self.segmenter)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), **({"segmenter": self.segmenter} if self.segmenter else {})}


def preprocess(text: str, lowercase: bool = False, normalize: str | None = None) -> str:
    if normalize is not None:
        text = unicodedata.normalize(normalize, text)  # type: ignore[arg-type]
    if lowercase:
        text = text.lower()
    return text


def codepoints(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as a uint32 array, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)
