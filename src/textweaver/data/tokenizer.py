"""Text <-> token ids at character, word or byte-level subword level, saved as JSON in every checkpoint.

A tokenizer owns the whole text-to-ids step: the optional normalisation (``lowercase``,
Unicode ``normalize``) and the split. Id 0 is always ``<unk>``; the rest of the vocabulary is
ordered by frequency in the training corpus, most frequent first.

- ``char``: one token per Unicode code point (CJK, emoji and control characters included).
- ``word``: a regex split into words, single punctuation marks and whitespace runs, so the
  tokens concatenate back to the exact text (unlike word models that lower-case and drop
  punctuation). ``vocab_size`` caps the vocabulary; rarer words become ``<unk>``.
- ``bpe``: byte-level BPE learned from the corpus with Hugging Face ``tokenizers`` (GPT-2's scheme):
  every byte is a token, so no text is ever unknown; ``vocab_size`` is the vocabulary to learn.
  A token may hold part of a UTF-8 character, so generated text is decoded with
  :meth:`Tokenizer.piece_decoder`, which holds such bytes back until their character is complete.

``decode(encode(s)) == s`` for every text made of known tokens (every text at ``bpe`` level);
``<unk>`` decodes as U+FFFD.
"""

from __future__ import annotations

import codecs
import itertools
import json
import re
import unicodedata
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

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
# --vocab-size default at bpe level: ~3 characters per token on Tiny Shakespeare (2.9 on held-out text), with an
# output layer still small enough for CPU training
BPE_VOCAB_SIZE = 4096
BPE_MIN_VOCAB_SIZE = 257  # the 256 bytes and <unk>
BPE_MIN_FREQUENCY = 2  # a pair of tokens seen once is not worth a token: the model could not learn it
_MAX_CODEPOINT = 0x110000
# Every character Python calls whitespace (str.isspace), i.e. where data/corpus.py may cut chunks.
_SPACES = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
# bpe: a whitespace run and the non-space run after it (or whitespace closing the text). The pre-tokenizer
# splits here before GPT-2's regex, so every such piece is tokenised alone exactly as in context: chunks cut
# where whitespace follows a non-space encode like the whole text (GPT-2's regex alone nearly guarantees
# that, but its whitespace is not Python's: U+001C-U+001F), and a piece's ids can be remembered.
_BPE_PIECE = re.compile(r"\s*\S+|\s+")
_BPE_PIECE_HF = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in _SPACES) + "]+"  # non-space runs, in HF's regex syntax
_BPE_CACHE_SIZE, _BPE_CACHE_PIECE = 1 << 16, 32  # pieces (up to this many characters) whose ids are remembered


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


class BPETokenizer(Tokenizer):
    """Byte-level BPE. ``vocab`` spells tokens in GPT-2's byte alphabet (a space is 'Ġ', a newline 'Ċ'),
    as Hugging Face does; ``huggingface`` is the HF tokenizer's own JSON, so tokenizer.json also loads with
    ``tokenizers.Tokenizer.from_str(json.dumps(data["huggingface"]))``. HF's ids are ours minus one:
    our id 0 is <unk>, which bytes never need (a model may still generate it; it decodes as U+FFFD).
    """

    level = "bpe"
    format_version = 2

    def __init__(
        self, vocab: list[str], lowercase: bool = False, normalize: str | None = None, huggingface: Any = None
    ) -> None:
        super().__init__(vocab, lowercase, normalize)
        try:
            self._hf = HFTokenizer.from_str(json.dumps(huggingface))
            token_bytes = [UNK_TEXT.encode()] + [bytes(_BYTE_OF[c] for c in t) for t in vocab[1:]]
        except Exception as e:  # tokenizers raises plain Exception; a byte-level char unknown: KeyError
            raise TextweaverError(
                f"tokenizer.json is damaged or needs a newer tokenizers package (bpe: {e}): "
                "pip install -U tokenizers, or retrain or restore the checkpoint"
            ) from None
        if self._hf.get_vocab() != {t: i for i, t in enumerate(vocab[1:])}:
            raise TextweaverError(
                "tokenizer.json is damaged (bpe vocabularies differ): retrain or restore the checkpoint"
            )
        self.huggingface = huggingface
        self._token_bytes = token_bytes
        # characters that start in each token (UTF-8 lead bytes): they sum to the text's characters
        self._chars = np.array([1] + [sum((b & 0xC0) != 0x80 for b in t) for t in token_bytes[1:]], dtype=np.int64)
        self._cache: dict[str, list[int]] = {}

    def split(self, text: str) -> list[str]:
        vocab = self.vocab
        return [vocab[i] for i in self.encode_preprocessed(text)]

    def encode_preprocessed(self, text: str) -> np.ndarray:
        # piece by piece (see _BPE_PIECE): most pieces are repeated words, encoded once and then remembered
        ids, cache, hf = array("q"), self._cache, self._hf
        for piece in _BPE_PIECE.findall(text):
            piece_ids = cache.get(piece)
            if piece_ids is None:
                try:  # HF takes only text that UTF-8 can encode (older versions silently drop the rest)
                    piece.encode("utf-8")
                except UnicodeEncodeError:
                    raise TextweaverError(
                        "the text holds a lone surrogate, which is not Unicode: pass UTF-8 text"
                    ) from None
                piece_ids = [i + 1 for i in hf.encode(piece, add_special_tokens=False).ids]
                if len(piece) <= _BPE_CACHE_PIECE and len(cache) < _BPE_CACHE_SIZE:
                    cache[piece] = piece_ids
            ids.extend(piece_ids)
        return np.frombuffer(ids, dtype=np.int64)

    def unknown(self, text: str) -> list[str]:
        return []  # every byte is a token

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; bytes that form no whole UTF-8 character (a slice cut inside one, or an
        ill-formed sequence a model generated) are left out rather than shown as U+FFFD."""
        token_bytes = self._token_bytes
        return b"".join(token_bytes[i] for i in ids).decode("utf-8", "ignore")

    def piece_decoder(self) -> Callable[[int], str]:
        """Like :meth:`decode`, one id at a time: the bytes of a character split over tokens are held
        back until it is complete, so no piece ends in half a character."""
        utf8, token_bytes = codecs.getincrementaldecoder("utf-8")("ignore"), self._token_bytes
        return lambda i: utf8.decode(token_bytes[i]) if i else ""

    def token_lengths(self) -> np.ndarray:
        """Characters that start in each token: a character split over tokens counts once, in its first."""
        return self._chars

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "huggingface": self.huggingface}


def _byte_chars() -> list[str]:
    """GPT-2's printable stand-in for every byte (HF's ByteLevel alphabet): byte b is spelt ``[b]``."""
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    others = iter(range(0x100, 0x200))
    return [chr(b) if b in printable else chr(next(others)) for b in range(256)]


_BYTE_CHARS = _byte_chars()
_BYTE_OF = {c: b for b, c in enumerate(_BYTE_CHARS)}


def _byte_level() -> Any:
    """GPT-2's split and byte spelling, without the prefix space HF adds by default (it would break the round trip)."""
    return pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=True)


def train_bpe(
    piece_counts: Counter[str], vocab_size: int, lowercase: bool = False, normalize: str | None = None
) -> BPETokenizer:
    """Learn byte-level BPE merges from counted GPT-2 pieces (byte-spelt), then number the tokens by
    frequency in the corpus, most frequent first, like the other levels (the adaptive softmax relies on it)."""
    check_vocab_size("bpe", vocab_size)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - 1, min_frequency=BPE_MIN_FREQUENCY, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    learner = HFTokenizer(models.BPE())  # no pre-tokenizer: each piece fed is one word, already byte-spelt
    pieces = sorted(piece_counts)
    learner.train_from_iterator(_repeated(pieces, piece_counts), trainer)
    learned = learner.get_vocab()
    frequency = np.zeros(len(learned), dtype=np.int64)
    for start in range(0, len(pieces), 8192):
        batch = pieces[start : start + 8192]
        encodings = learner.encode_batch(batch, add_special_tokens=False)
        ids = np.concatenate([np.asarray(e.ids, dtype=np.int64) for e in encodings] or [np.zeros(0, np.int64)])
        weights = np.repeat([piece_counts[p] for p in batch], [len(e.ids) for e in encodings])
        frequency += np.bincount(ids, weights=weights, minlength=len(learned)).astype(np.int64)
    hf_ids = np.array(sorted(learned.values()))
    order = hf_ids[np.lexsort((hf_ids, -frequency[hf_ids]))]  # ties by HF id, so the order is reproducible
    token_of = {i: t for t, i in learned.items()}
    tokens = [token_of[int(i)] for i in order]
    hf = HFTokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=_merges(learner)))
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(_BPE_PIECE_HF), behavior="merged_with_previous"), _byte_level()]
    )
    hf.decoder = decoders.ByteLevel()
    return BPETokenizer([UNK, *tokens], lowercase, normalize, _portable(json.loads(hf.to_str())))


def _merges(hf: HFTokenizer) -> list[tuple[str, str]]:
    """The learned merges, in order: JSON pairs ["a", "b"], or "a b" before tokenizers 0.20 (bytes are spelt
    without spaces, so the split is safe)."""
    merges = json.loads(hf.to_str())["model"]["merges"]
    return [(m.split(" ", 1)[0], m.split(" ", 1)[1]) if isinstance(m, str) else (m[0], m[1]) for m in merges]


def _portable(data: dict[str, Any]) -> dict[str, Any]:
    """HF's JSON in the form every tokenizers from 0.15 on reads: "a b" merges and no ``ignore_merges``
    (0.20 and later write both, which older versions refuse), so a checkpoint loads wherever textweaver installs."""
    model = data["model"]
    model["merges"] = [f"{a} {b}" for a, b in (m.split(" ", 1) if isinstance(m, str) else m for m in model["merges"])]
    if model.get("ignore_merges") is False:
        del model["ignore_merges"]
    return data


def _repeated(pieces: list[str], counts: Counter[str], batch: int = 1 << 16) -> Iterator[list[str]]:
    """Every piece as often as it was counted, in batches: the only way to give HF's trainer counts."""
    out: list[str] = []
    for piece in pieces:
        n = counts[piece]
        while n > 0:
            k = min(n, batch)
            out.extend(itertools.repeat(piece, k))
            n -= k
            if len(out) >= batch:
                yield out
                out = []
    if out:
        yield out


def check_vocab_size(level: str, vocab_size: int | None) -> None:
    if level == "bpe" and vocab_size is not None and vocab_size < BPE_MIN_VOCAB_SIZE:
        raise TextweaverError(
            f"--vocab-size must be at least {BPE_MIN_VOCAB_SIZE} for --level bpe (256 bytes and <unk>), "
            f"got {vocab_size}"
        )


def preprocess(text: str, lowercase: bool = False, normalize: str | None = None) -> str:
    if normalize is not None:
        text = unicodedata.normalize(normalize, text)  # type: ignore[arg-type]
    if lowercase:
        text = text.lower()
    return text


def codepoints(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as a uint32 array, without a Python loop."""
    return np.frombuffer(text.encode("utf-32-le", errors="surrogatepass"), dtype=np.uint32)


class VocabCounter:
    """Counts tokens over a corpus fed in chunks, then builds the tokenizer."""

    def __init__(self, level: str, lowercase: bool = False, normalize: str | None = None) -> None:
        self.level, self.lowercase, self.normalize = level, lowercase, normalize
        self._char_counts = np.zeros(_MAX_CODEPOINT, dtype=np.int64)
        self._word_counts: Counter[str] = Counter()  # word: words; bpe: GPT-2 pieces, byte-spelt
        self._byte_level = _byte_level() if level == "bpe" else None

    def update(self, preprocessed_text: str) -> int:
        """Count the tokens of one chunk; returns how many there were (bpe: pieces, as its tokens are not
        known until :meth:`build` learns them)."""
        if self.level == "char":
            self._char_counts += np.bincount(codepoints(preprocessed_text), minlength=_MAX_CODEPOINT)
            return len(preprocessed_text)
        if self._byte_level is not None:  # GPT-2's regex runs in Rust once per distinct piece, not per word
            pieces = _BPE_PIECE.findall(preprocessed_text)
            for piece, n in Counter(pieces).items():
                for word, _ in self._byte_level.pre_tokenize_str(piece):
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
