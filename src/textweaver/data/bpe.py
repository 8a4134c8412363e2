"""Byte-level BPE, learned from the corpus with Hugging Face ``tokenizers`` (GPT-2's scheme): every
byte is a token, so no text is ever unknown. A token may hold part of a UTF-8 character, so generated
text is decoded with :meth:`BPETokenizer.piece_decoder`, which holds such bytes back until their
character is complete."""

from __future__ import annotations

import codecs
import itertools
import json
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from textweaver.data.tokenizer import UNK, UNK_TEXT, Tokenizer
from textweaver.errors import TextweaverError

# --vocab-size default at bpe level: ~3 characters per token on Tiny Shakespeare (2.9 on held-out text), with an
# output layer still small enough for CPU training
BPE_VOCAB_SIZE = 4096
BPE_MIN_VOCAB_SIZE = 257  # the 256 bytes and <unk>
BPE_MIN_FREQUENCY = 2  # a pair of tokens seen once is not worth a token: the model could not learn it
# Every character Python calls whitespace (str.isspace), i.e. where data/corpus.py may cut chunks.
_SPACES = "".join(c for c in map(chr, range(0x3001)) if c.isspace())
# bpe: a whitespace run and the non-space run after it (or whitespace closing the text). The pre-tokenizer
# splits here before GPT-2's regex, so every such piece is tokenised alone exactly as in context: chunks cut
# where whitespace follows a non-space encode like the whole text (GPT-2's regex alone nearly guarantees
# that, but its whitespace is not Python's: U+001C-U+001F), and a piece's ids can be remembered.
BPE_PIECE = re.compile(r"\s*\S+|\s+")
_BPE_PIECE_HF = "[^" + "".join(f"\\x{{{ord(c):x}}}" for c in _SPACES) + "]+"  # non-space runs, in HF's regex syntax
_BPE_CACHE_SIZE, _BPE_CACHE_PIECE = 1 << 16, 32  # pieces (up to this many characters) whose ids are remembered


def check_vocab_size(level: str, vocab_size: int | None) -> None:
    if level == "bpe" and vocab_size is not None and vocab_size < BPE_MIN_VOCAB_SIZE:
        raise TextweaverError(
            f"--vocab-size must be at least {BPE_MIN_VOCAB_SIZE} for --level bpe (256 bytes and <unk>), "
            f"got {vocab_size}"
        )


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
        # piece by piece (see BPE_PIECE): most pieces are repeated words, encoded once and then remembered
        ids, cache, hf = array("q"), self._cache, self._hf
        for piece in BPE_PIECE.findall(text):
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


def byte_level() -> Any:
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
        [pre_tokenizers.Split(Regex(_BPE_PIECE_HF), behavior="merged_with_previous"), byte_level()]
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
