"""Specification of textweaver.tokenizer: text <-> ids at char and word level, saved as JSON."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from textweaver.errors import TextweaverError
from textweaver.tokenizer import (
    FORMAT_VERSION,
    UNK,
    UNK_TEXT,
    CharTokenizer,
    Tokenizer,
    VocabCounter,
    WordTokenizer,
    make_tokenizer,
    preprocess,
    tokenizer_from_json,
)

LEVELS = ["char", "word"]

# Hand-picked texts that tokenizers commonly get wrong.
TRICKY = [
    "",
    "西游记：混沌未分天地乱，茫茫渺渺无人见。",
    "family 👨‍👩‍👧‍👦, flags 🇫🇷🇯🇵, skin tone 👍🏽",
    "col1\tcol2\t\tcol3\n",
    "line one\r\nline two\r\n\r\n",
    "cafe\u0301 vs caf\u00e9, a\u0308\u0304, \u0301 leading mark",
    "   leading and trailing whitespace   ",
    "\x00\x07\x1b control chars \u2028 line sep \u00a0 nbsp",
]


def tokenizer_for(
    text: str, level: str, vocab_size: int | None = None, lowercase: bool = False, normalize: str | None = None
) -> Tokenizer:
    """A tokenizer built from ``text`` itself, as prepare() builds one from a corpus."""
    counter = VocabCounter(level, lowercase, normalize)
    counter.update(preprocess(text, lowercase, normalize))
    return counter.build(vocab_size)


# --- round trip -------------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
@settings(max_examples=75, deadline=None)
@given(text=st.text(max_size=200))
@example(text=TRICKY[0])
@example(text=TRICKY[1])
@example(text=TRICKY[2])
@example(text=TRICKY[3])
@example(text=TRICKY[4])
@example(text=TRICKY[5])
@example(text=TRICKY[6])
@example(text=TRICKY[7])
def test_decode_inverts_encode_for_text_the_tokenizer_was_built_from(level: str, text: str) -> None:
    tok = tokenizer_for(text, level)
    ids = tok.encode(text)
    assert 0 not in ids
    assert tok.decode(ids) == text
    assert tok.unknown(text) == []


@settings(max_examples=75, deadline=None)
@given(text=st.text(max_size=200))
def test_char_tokens_are_code_points(text: str) -> None:
    tok = tokenizer_for(text, "char")
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert [tok.vocab[i] for i in ids] == list(text)


@settings(max_examples=75, deadline=None)
@given(text=st.text(max_size=200))
def test_word_tokens_concatenate_to_the_exact_text(text: str) -> None:
    tok = tokenizer_for(text, "word")
    tokens = tok.split(text)
    assert "".join(tokens) == text
    assert all(tokens)


def test_word_split_keeps_punctuation_and_whitespace_runs() -> None:
    tok = WordTokenizer([UNK])
    assert tok.split("Hello,  world!\r\n\tBye") == ["Hello", ",", "  ", "world", "!", "\r\n\t", "Bye"]


# --- unknown tokens ---------------------------------------------------------------------------


def test_unknown_chars_map_to_id_zero_and_are_named_in_order_of_appearance() -> None:
    tok = tokenizer_for("abc", "char")
    ids = tok.encode("abxcyx")
    assert ids.tolist() == [tok.index["a"], tok.index["b"], 0, tok.index["c"], 0, 0]
    assert tok.unknown("abxcyx z") == ["x", "y", " ", "z"]


def test_unknown_words_map_to_id_zero_and_are_named_in_order_of_appearance() -> None:
    tok = tokenizer_for("the cat sat", "word")
    ids = tok.encode("the dog sat, the emu")
    assert ids.tolist() == [
        tok.index["the"], tok.index[" "], 0, tok.index[" "], tok.index["sat"], 0,
        tok.index[" "], tok.index["the"], tok.index[" "], 0,
    ]  # fmt: skip
    assert tok.unknown("the dog sat, the emu") == ["dog", ",", "emu"]


@pytest.mark.parametrize("level", LEVELS)
def test_unknown_decodes_as_replacement_character(level: str) -> None:
    tok = tokenizer_for("ab", level)
    assert tok.decode([0]) == UNK_TEXT == "\ufffd"
    assert tok.decode(tok.encode("zz" if level == "word" else "z")) == "\ufffd"


# --- vocabulary -------------------------------------------------------------------------------


def test_char_vocabulary_is_ordered_by_frequency_then_code_point() -> None:
    tok = tokenizer_for("cbbaadde" + "zzzz" + "é", "char")
    # z:4; a, b, d: 2 each (ties by code point); c, e, é: 1 each
    assert tok.vocab == [UNK, "z", "a", "b", "d", "c", "e", "é"]


def test_word_vocabulary_is_ordered_by_frequency_most_frequent_first() -> None:
    tok = tokenizer_for("b a b c b a", "word")
    assert tok.vocab[:4] == [UNK, " ", "b", "a"]  # " ": 5, b: 3, a: 2
    assert tok.vocab[4:] == ["c"]


def test_word_vocabulary_ties_are_broken_reproducibly() -> None:
    assert tokenizer_for("pear apple fig", "word").vocab == tokenizer_for("fig pear apple", "word").vocab
    assert tokenizer_for("pear apple fig", "word").vocab == [UNK, " ", "apple", "fig", "pear"]


def test_vocabulary_starts_with_unk_at_id_zero() -> None:
    for level in LEVELS:
        tok = tokenizer_for("some text", level)
        assert tok.vocab[0] == UNK
        assert tok.index[UNK] == 0


def test_word_vocab_size_caps_the_vocabulary_and_rarer_words_become_unk() -> None:
    text = "a a a a b b b c c d"
    tok = tokenizer_for(text, "word", vocab_size=4)
    assert len(tok) == 4
    assert tok.vocab == [UNK, " ", "a", "b"]
    ids = tok.encode(text)
    assert tok.decode(ids) == "a a a a b b b \ufffd \ufffd \ufffd"
    assert tok.unknown(text) == ["c", "d"]


def test_word_vocab_size_larger_than_the_corpus_keeps_every_word() -> None:
    tok = tokenizer_for("one two three", "word", vocab_size=1000)
    assert sorted(tok.vocab) == sorted([UNK, " ", "one", "two", "three"])


# --- preprocessing ----------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_lowercase_applies_to_corpus_and_to_encoded_text(level: str) -> None:
    tok = tokenizer_for("Hello HELLO hello", level, lowercase=True)
    assert all(t == t.lower() for t in tok.vocab[1:])
    assert tok.unknown("HeLLo") == []
    assert tok.decode(tok.encode("HeLLo")) == "hello"


@pytest.mark.parametrize("level", LEVELS)
def test_normalize_applies_before_splitting(level: str) -> None:
    decomposed = "cafe\u0301"
    tok = tokenizer_for("café", level, normalize="NFC")
    assert tok.encode(decomposed).tolist() == tok.encode("café").tolist()
    assert tok.decode(tok.encode(decomposed)) == "café"
    assert tok.unknown(decomposed) == []


def test_nfkc_folds_compatibility_characters() -> None:
    tok = tokenizer_for("ﬁne １２", "char", normalize="NFKC")
    assert "ﬁ" not in tok.vocab
    assert tok.decode(tok.encode("ﬁne １２")) == "fine 12"


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=100), form=st.sampled_from(["NFC", "NFD", "NFKC", "NFKD"]), lowercase=st.booleans())
def test_round_trip_with_preprocessing_gives_the_preprocessed_text(text: str, form: str, lowercase: bool) -> None:
    expected = unicodedata.normalize(form, text)
    if lowercase:
        expected = expected.lower()
    for level in LEVELS:
        tok = tokenizer_for(text, level, lowercase=lowercase, normalize=form)
        assert tok.preprocess(text) == expected
        assert tok.decode(tok.encode(text)) == expected


def test_unknown_normalize_form_is_refused() -> None:
    with pytest.raises(TextweaverError, match="NFC, NFD, NFKC or NFKD"):
        CharTokenizer([UNK, "a"], normalize="NFX")


# --- JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("preprocessing", [{}, {"lowercase": True, "normalize": "NFKC"}])
def test_json_round_trip_equals_the_original(level: str, preprocessing: dict[str, Any]) -> None:
    text = TRICKY[1] + TRICKY[2] + TRICKY[4]
    tok = tokenizer_for(text, level, **preprocessing)
    again = tokenizer_from_json(tok.to_json())
    assert again == tok
    assert type(again) is type(tok)
    assert again.vocab == tok.vocab
    assert (again.lowercase, again.normalize) == (tok.lowercase, tok.normalize)
    assert again.encode(text).tolist() == tok.encode(text).tolist()


def test_json_keeps_non_ascii_readable() -> None:
    tok = tokenizer_for("西游记", "char")
    assert "西" in tok.to_json()


def test_tokenizers_differing_in_vocabulary_or_preprocessing_are_not_equal() -> None:
    assert tokenizer_for("ab", "char") != tokenizer_for("abc", "char")
    assert tokenizer_for("ab", "char") != tokenizer_for("ab", "word")
    assert tokenizer_for("ab", "char") != tokenizer_for("ab", "char", lowercase=True)


def _tokenizer_dict() -> dict[str, Any]:
    return json.loads(tokenizer_for("abc", "char").to_json())


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ('{"level": "char"}', "damaged"),
        ('{"vocab": ["<unk>", "a"]}', "damaged"),
        ('{"level": "char", "vocab": ["<unk>"], "format_version": "one"}', "damaged"),
        ('{"level": "char", "vocab": ["a", "b"]}', "must start with <unk>"),
        ('{"level": "char", "vocab": []}', "must start with <unk>"),
        ('{"level": "char", "vocab": ["<unk>", "ab"]}', "multi-character"),
        ('{"level": "char", "vocab": ["<unk>", "a"], "normalize": "NFQ"}', "--normalize"),
    ],
)
def test_damaged_json_is_refused_with_a_clear_message(document: str, message: str) -> None:
    with pytest.raises(TextweaverError, match=message):
        tokenizer_from_json(document)


@pytest.mark.parametrize("document", ["[1, 2]", "null", '"tokenizer"', "42"])
def test_json_that_is_not_an_object_is_refused_as_damaged(document: str) -> None:
    with pytest.raises(TextweaverError, match="damaged"):
        tokenizer_from_json(document)


def test_vocabulary_entries_that_are_not_strings_are_refused_as_damaged() -> None:
    with pytest.raises(TextweaverError, match="damaged"):
        tokenizer_from_json('{"level": "char", "vocab": ["<unk>", 5]}')


def test_unknown_level_is_refused() -> None:
    data = _tokenizer_dict() | {"level": "byte"}
    with pytest.raises(TextweaverError, match="unknown level 'byte'"):
        make_tokenizer(data)
    with pytest.raises(TextweaverError, match="unknown level 'byte'"):
        tokenizer_from_json(json.dumps(data))


def test_newer_format_version_is_refused_with_upgrade_advice() -> None:
    data = _tokenizer_dict()
    data["format_version"] = FORMAT_VERSION + 1
    with pytest.raises(TextweaverError, match=rf"tokenizer format {FORMAT_VERSION + 1} is newer.*upgrade textweaver"):
        tokenizer_from_json(json.dumps(data))


def test_missing_format_version_is_read_as_the_oldest_format() -> None:
    data = _tokenizer_dict()
    del data["format_version"]
    assert make_tokenizer(data) == tokenizer_for("abc", "char")


# --- id dtype ---------------------------------------------------------------------------------


def test_id_dtype_is_uint16_for_small_vocabularies() -> None:
    assert tokenizer_for(TRICKY[1], "char").id_dtype is np.uint16
    assert tokenizer_for(TRICKY[1], "word").id_dtype is np.uint16


def test_id_dtype_switches_to_uint32_above_65536_tokens() -> None:
    words = [str(i) for i in range(65536)]
    assert WordTokenizer([UNK, *words[:-1]]).id_dtype is np.uint16  # 65536 tokens: ids 0..65535 fit
    big = WordTokenizer([UNK, *words])  # 65537 tokens
    assert big.id_dtype is np.uint32
    ids = big.encode("65535").astype(big.id_dtype)
    assert ids.tolist() == [65536]


def test_char_id_dtype_above_65536_tokens() -> None:
    chars = [chr(c) for c in range(0x10000, 0x10000 + 65536)]
    assert CharTokenizer([UNK, *chars]).id_dtype is np.uint32
    assert CharTokenizer([UNK, *chars[:100]]).id_dtype is np.uint16
