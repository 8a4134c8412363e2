"""Specification of textweaver.data.bpe: byte-level BPE learned from a corpus; every text round-trips, encoded
as the embedded Hugging Face tokenizer encodes it."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import pre_tokenizers

from textweaver.data import corpus
from textweaver.data.bpe import (
    _BYTE_CHARS,
    _SPACES,
    BPE_MIN_VOCAB_SIZE,
    BPE_VOCAB_SIZE,
    BPETokenizer,
    check_vocab_size,
)
from textweaver.data.dataset import DataOptions, prepare
from textweaver.data.tokenizer import FORMAT_VERSION, UNK
from textweaver.data.vocab import VocabCounter, make_tokenizer, tokenizer_from_json
from textweaver.errors import TextweaverError

from conftest import SHAKESPEARE, TRICKY, XIYOUJI, tokenizer_for

BPE_CASES = [
    "西游记：混沌未分天地乱，茫茫渺渺无人见。",
    "\t",
    "\r\n",
    "   ",
    " leading space",
    "trailing tab\t",
    "line one\r\n\r\nline two",
    "emoji 👨‍👩‍👧‍👦🇫🇷👍🏽 and a\u0308",
    "\x1c\x1d\x1e\x1f\u2028\u3000\u00a0 odd spaces",
    "<unk> is just text",
    "every space:" + "".join(f"{c}x.{c}{c}" for c in _SPACES),
]


@functools.cache
def corpus_texts() -> tuple[str, str]:
    return XIYOUJI.read_text(encoding="utf-8"), SHAKESPEARE.read_text(encoding="utf-8")


@functools.cache
def corpus_bpe(vocab_size: int | None = None) -> BPETokenizer:
    """A BPE learned from the Chinese and English excerpts, as prepare() learns it (shared: it takes a moment)."""
    counter = VocabCounter("bpe")
    for text in corpus_texts():
        counter.update(text)
    tok = counter.build(vocab_size)
    assert isinstance(tok, BPETokenizer)
    return tok


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300))
@example(text=BPE_CASES[0])
@example(text="\t")
@example(text="\r\n")
@example(text="   ")
@example(text="a \nb")
def test_bpe_decode_inverts_encode_for_any_text(text: str) -> None:
    tok = corpus_bpe()
    ids = tok.encode(text)
    assert 0 not in ids
    assert tok.decode(ids) == text
    assert tok.unknown(text) == []
    # encoding piece by piece (with its cache) gives exactly what Hugging Face gives for the whole text
    assert (ids - 1).tolist() == tok._hf.encode(text, add_special_tokens=False).ids
    assert int(tok.token_lengths()[ids].sum()) == len(text)  # characters, not bytes


@pytest.mark.parametrize("text", BPE_CASES)
def test_bpe_round_trips_cjk_tabs_crlf_and_space_runs(text: str) -> None:
    tok = corpus_bpe()
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert (ids - 1).tolist() == tok._hf.encode(text, add_special_tokens=False).ids  # Python and HF split alike
    assert tok._hf.decode((ids - 1).tolist()) == text  # the embedded HF tokenizer agrees, for other tools
    assert int(tok.token_lengths()[ids].sum()) == len(text)


def test_bpe_learns_words_and_chinese_characters() -> None:
    tok = corpus_bpe()
    assert len(tok.encode("西游记")) < len("西游记".encode())  # frequent characters are whole tokens
    assert len(tok.encode(" the")) == 1 and tok.decode(tok.encode(" the")) == " the"
    assert len(tok.encode("abc")) <= 3


def test_bpe_vocabulary_is_ordered_by_frequency_in_the_corpus() -> None:
    tok = corpus_bpe()
    counts = sum(np.bincount(tok.encode(text), minlength=len(tok)) for text in corpus_texts())
    assert counts[0] == 0
    assert np.all(np.diff(counts[1:]) <= 0)  # id 1 is the most frequent token, and so on


def test_bpe_vocab_size_is_the_vocabulary_learned_and_defaults_to_a_named_constant() -> None:
    assert len(corpus_bpe(300)) == 300
    assert corpus_bpe(300).vocab[0] == UNK
    assert BPE_MIN_VOCAB_SIZE < len(corpus_bpe()) <= BPE_VOCAB_SIZE  # these excerpts run out of pairs seen twice
    assert len(tokenizer_for("ab", "bpe")) == BPE_MIN_VOCAB_SIZE  # every byte, always


def test_bpe_vocab_size_below_the_byte_alphabet_is_refused() -> None:
    with pytest.raises(TextweaverError, match="--vocab-size must be at least 257 for --level bpe"):
        tokenizer_for("some text", "bpe", vocab_size=256)
    with pytest.raises(TextweaverError, match="at least 257"):
        check_vocab_size("bpe", 100)
    check_vocab_size("word", 100)


def test_bpe_is_reproducible() -> None:
    text = corpus_texts()[1]
    assert tokenizer_for(text, "bpe", 400) == tokenizer_for(text, "bpe", 400)


def test_bpe_saved_and_loaded_encodes_identically() -> None:
    tok = corpus_bpe()
    data = json.loads(tok.to_json())
    assert data["level"] == "bpe" and data["format_version"] == 2 < FORMAT_VERSION
    assert json.loads(tokenizer_for("ab", "char").to_json())["format_version"] == 1  # older versions still read these
    again = tokenizer_from_json(tok.to_json())
    assert isinstance(again, BPETokenizer) and again == tok and again.vocab == tok.vocab
    for text in [*corpus_texts(), *BPE_CASES, *TRICKY]:
        assert again.encode(text).tolist() == tok.encode(text).tolist()
    # the embedded Hugging Face tokenizer loads on its own (ids shifted by the <unk> at 0)
    hf = HFTokenizer.from_str(json.dumps(data["huggingface"]))
    assert hf.encode(BPE_CASES[0]).ids == (tok.encode(BPE_CASES[0]) - 1).tolist()
    # in the form tokenizers 0.15 reads too: "a b" merges, no ignore_merges
    model = data["huggingface"]["model"]
    assert all(isinstance(m, str) and m.count(" ") == 1 for m in model["merges"])
    assert "ignore_merges" not in model


@pytest.mark.parametrize("preprocessing", [{"lowercase": True}, {"normalize": "NFKC"}])
def test_bpe_json_keeps_the_preprocessing(preprocessing: dict[str, Any]) -> None:
    tok = tokenizer_for("Hello ﬁne World", "bpe", **preprocessing)
    again = tokenizer_from_json(tok.to_json())
    assert (again.lowercase, again.normalize) == (tok.lowercase, tok.normalize)
    assert again.decode(again.encode("HELLO ﬁne")) == tok.preprocess("HELLO ﬁne")


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.pop("huggingface"),
        lambda d: d.update(huggingface={"model": "nonsense"}),
        lambda d: d.update(vocab=[UNK, *reversed(d["vocab"][1:])]),
        lambda d: d.update(vocab=[UNK, "not byte-level ✓", *d["vocab"][2:]]),
    ],
)
def test_damaged_bpe_json_is_refused(damage: Any) -> None:
    data = json.loads(tokenizer_for("some text, some more text", "bpe").to_json())
    damage(data)
    with pytest.raises(TextweaverError, match="damaged"):
        make_tokenizer(data)


def test_bpe_refuses_lone_surrogates_clearly() -> None:
    with pytest.raises(TextweaverError, match="lone surrogate"):
        corpus_bpe().encode("a \ud800")


def test_byte_alphabet_is_hugging_faces() -> None:
    assert set(_BYTE_CHARS) == set(pre_tokenizers.ByteLevel.alphabet()) and len(set(_BYTE_CHARS)) == 256
    spell = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    for text in ["".join(map(chr, range(1, 128))), "é西👍\u0085\u00ad"]:
        assert spell.pre_tokenize_str(text)[0][0] == "".join(_BYTE_CHARS[b] for b in text.encode())


def test_the_space_set_is_every_character_python_calls_whitespace() -> None:
    every = "".join(c for c in map(chr, range(0x110000)) if c.isspace())
    assert every == _SPACES


ANY_CHAR = st.characters(exclude_categories=["Cs"])  # anything UTF-8 can hold

TEXT = st.text(alphabet=st.sampled_from(list("ab.,西 \t\n\r\x1c\u3000👍")) | ANY_CHAR, max_size=80)


@settings(max_examples=200, deadline=None)
@given(left=TEXT, last=ANY_CHAR.filter(lambda c: not c.isspace()), space=st.sampled_from(list(_SPACES)), right=TEXT)
@example(left="a", last=".", space="\x1c", right="\n b")  # \x1c: whitespace to Python, not to GPT-2's regex
@example(left="", last="西", space="\u3000", right="游")
@example(left="foo", last="o", space=" ", right="\n bar")
def test_bpe_text_cut_where_corpus_cuts_chunks_encodes_like_the_whole(
    left: str, last: str, space: str, right: str
) -> None:
    """data/corpus.py cuts chunks just after a non-space character that whitespace follows."""
    head, tail = left + last, space + right
    tok = corpus_bpe()
    assert np.concatenate([tok.encode(head), tok.encode(tail)]).tolist() == tok.encode(head + tail).tolist()


def test_bpe_dataset_in_small_chunks_equals_the_whole_and_counts_characters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 1024)  # dozens of chunks per file (no run of 4096 without spaces)
    paths = [XIYOUJI, SHAKESPEARE]
    data = prepare(paths, tmp_path / "cache", DataOptions(level="bpe", val_fraction=0.2))
    tok = data.tokenizer
    assert tok == corpus_bpe()  # the same text, so the same merges and ids
    train, val = [], []
    for text in corpus_texts():
        ids = tok.encode(text)
        n_val = round(len(ids) * 0.2)
        train.append(ids[: len(ids) - n_val])
        val.append(ids[len(ids) - n_val :])
    assert np.array_equal(data.train, np.concatenate(train))
    assert np.array_equal(data.val, np.concatenate(val))
    texts = corpus_texts()
    assert data.train_chars + data.val_chars == sum(map(len, texts)) < sum(len(t.encode()) for t in texts)
    # a character cut by the split counts where it starts: at most one per file differs from decoding val
    assert abs(data.val_chars - sum(len(tok.decode(v)) for v in val)) <= len(paths)


def test_bpe_piece_decoder_holds_back_partial_characters() -> None:
    tok = tokenizer_for("ab", "bpe")  # bytes only: every non-ASCII character is split over tokens
    text = "西游记 👍🏽 é"
    ids = tok.encode(text)
    assert len(ids) == len(text.encode())
    decode = tok.piece_decoder()
    pieces = [decode(int(i)) for i in ids]
    assert "".join(pieces) == text
    assert all(p == "" or p in text for p in pieces) and "\ufffd" not in "".join(pieces)
    assert pieces[:3] == ["", "", "西"]
    # an ill-formed sequence (a lead byte, then ASCII) is left out, not shown as U+FFFD
    broken = [*tok.encode("西")[:2].tolist(), *tok.encode("ab").tolist()]
    assert tok.decode(broken) == "ab"
    decode = tok.piece_decoder()
    assert "".join(decode(i) for i in broken) == "ab"
    assert decode(0) == ""  # <unk> adds nothing to generated text, as at the other levels
