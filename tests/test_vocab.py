"""Specification of textweaver.data.vocab: the vocabulary counted over a corpus (or appended to a base's), and a
tokenizer read back from its tokenizer.json."""

from __future__ import annotations

import json
from typing import Any

import pytest

from textweaver.data.tokenizer import FORMAT_VERSION, UNK, WORD_VOCAB_SIZE
from textweaver.data.vocab import VocabCounter, make_tokenizer, tokenizer_from_json
from textweaver.errors import TextweaverError

from conftest import ALL_LEVELS, tokenizer_for

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
    for level in ALL_LEVELS:
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


def test_word_vocab_size_default_is_unchanged() -> None:
    assert WORD_VOCAB_SIZE == 10000
    assert len(tokenizer_for(" ".join(f"w{i}" for i in range(10_500)), "word")) == 10000


def test_the_vocabulary_keeps_every_id_of_the_source_and_appends_the_new_tokens_by_frequency() -> None:
    base = VocabCounter("char")
    base.update("aaab")
    base_tok = base.build()
    new = VocabCounter("char")
    new.update("b c d d d")
    extended = new.build(base=base_tok)
    assert extended.vocab == [*base_tok.vocab, " ", "d", "c"]  # 'a' and 'b' keep their ids; ' ' (4) > d (3) > c
    words = VocabCounter("word")
    words.update("the cat the dog")
    word_base = words.build()
    more = VocabCounter("word")
    more.update("a cat, a bird")
    grown = more.build(vocab_size=len(word_base) + 2, base=word_base)
    assert grown.vocab[: len(word_base)] == word_base.vocab and grown.vocab[len(word_base) :] == ["a", ","]


# --- tokenizer.json ---------------------------------------------------------------------------


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
