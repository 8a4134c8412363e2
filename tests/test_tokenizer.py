"""Specification of textweaver.data.tokenizer: text <-> ids at char, word and bpe level, saved as JSON."""

from __future__ import annotations

import functools
import json
import math
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import pre_tokenizers

from textweaver import load, train
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
from textweaver.data.tokenizer import (
    FORMAT_VERSION,
    UNK,
    UNK_TEXT,
    WORD_VOCAB_SIZE,
    CharTokenizer,
    Tokenizer,
    WordTokenizer,
    preprocess,
)
from textweaver.data.vocab import VocabCounter, make_tokenizer, tokenizer_from_json
from textweaver.errors import TextweaverError
from textweaver.export.site import export

from conftest import SHAKESPEARE, TINY, XIYOUJI, one_line_error, run_cli

LEVELS = ["char", "word"]
ALL_LEVELS = [*LEVELS, "bpe"]

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


@pytest.mark.parametrize("level", ALL_LEVELS)
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


CHINESE_CHARS = st.text(alphabet=st.sampled_from("混沌未分天地乱，茫茫渺渺无人见孙悟空行者道 a1\n。“”"), max_size=80)


def test_chinese_is_cut_into_words_not_whole_clauses() -> None:
    """`\\w+` alone made "混沌未分天地乱" one token; jieba cuts it into words."""
    tok = WordTokenizer([UNK])
    clause = tok.split("混沌未分天地乱，茫茫渺渺无人见。")
    assert "混沌未分天地乱" not in clause and clause[-1] == "。" and "，" in clause
    assert 2 <= clause.index("，") <= 5 and all(len(t) <= 4 for t in clause)
    assert tok.split("孙悟空道：“Hello world”")[:2] == ["孙悟空", "道"]
    legacy = WordTokenizer([UNK], segmenter=None)  # tokenizers written before segmentation keep their split
    assert legacy.split("混沌未分天地乱，") == ["混沌未分天地乱", "，"]
    assert make_tokenizer(legacy.to_dict()).split("混沌未分天地乱") == ["混沌未分天地乱"]


def test_a_chinese_word_vocabulary_round_trips_the_novel_exactly_and_is_stored() -> None:
    text = XIYOUJI.read_text(encoding="utf-8")
    tok = tokenizer_for(text, "word")
    ids = tok.encode(text)
    assert tok.decode(ids) == text and 0 not in ids.tolist()
    words = [t for t in tok.vocab if len(t) > 1 and "\u4e00" <= t[0] <= "\u9fff"]
    assert {"悟空", "师父", "猴王", "美猴王"} <= set(words)
    assert max(map(len, words)) <= 8  # words, not clauses
    assert len(ids) < 0.8 * len(text)  # and fewer tokens than characters
    again = tokenizer_from_json(tok.to_json())
    assert again == tok and again.segmenter == "jieba" and again.to_dict()["format_version"] == 3


@settings(max_examples=75, deadline=None)
@given(text=CHINESE_CHARS)
def test_segmented_chinese_tokens_concatenate_to_the_exact_text(text: str) -> None:
    tokens = WordTokenizer([UNK]).split(text)
    assert "".join(tokens) == text and all(tokens)


def test_the_web_page_refuses_a_chinese_word_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train([XIYOUJI], tmp_path / "w", max_steps=1, level="word", **TINY)
    capsys.readouterr()
    code, out, err = run_cli(["export", str(tmp_path / "w"), "--out", str(tmp_path / "site"), "--format", "web"],
                             capsys)  # fmt: skip
    one_line_error(code, out, err, "cannot segment Chinese into the words of this --level word model")
    assert not (tmp_path / "site").exists()


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


# --- preprocessing ----------------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_lowercase_applies_to_corpus_and_to_encoded_text(level: str) -> None:
    tok = tokenizer_for("Hello HELLO hello", level, lowercase=True)
    assert all(t == t.lower() for t in tok.vocab[1:])
    assert tok.unknown("HeLLo") == []
    assert tok.decode(tok.encode("HeLLo")) == "hello"


@pytest.mark.parametrize("level", ALL_LEVELS)
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
    for level in ALL_LEVELS:
        tok = tokenizer_for(text, level, lowercase=lowercase, normalize=form)
        assert tok.preprocess(text) == expected
        assert tok.decode(tok.encode(text)) == expected


def test_unknown_normalize_form_is_refused() -> None:
    with pytest.raises(TextweaverError, match="NFC, NFD, NFKC or NFKD"):
        CharTokenizer([UNK, "a"], normalize="NFX")


# --- JSON -------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ALL_LEVELS)
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


# --- bpe level --------------------------------------------------------------------------------

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


def test_cli_refuses_a_bpe_vocab_size_below_the_bytes_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", str(XIYOUJI), "-o", str(tmp_path / "r"), "--level", "bpe", "--vocab-size", "100"]
    one_line_error(*run_cli(args, capsys), "--vocab-size must be at least 257 for --level bpe")
    one_line_error(*run_cli([*args[:4], "--level", "bytes"], capsys), "unknown --level 'bytes': use char, word or bpe")


def test_word_vocab_size_default_is_unchanged() -> None:
    assert WORD_VOCAB_SIZE == 10000
    assert len(tokenizer_for(" ".join(f"w{i}" for i in range(10_500)), "word")) == 10000


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


def test_char_and_word_piece_decoders_give_the_token_text() -> None:
    for level in LEVELS:
        tok = tokenizer_for("ab ba", level)
        decode = tok.piece_decoder()
        assert [decode(int(i)) for i in tok.encode("ab ba")] == tok.split("ab ba")
        assert decode(0) == ""


@pytest.fixture(scope="module")
def bpe_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LSTM trained briefly on the Chinese excerpt at bpe level (shared, read-only)."""
    out = tmp_path_factory.mktemp("bpe") / "run"
    train([XIYOUJI], out, level="bpe", model="lstm", max_steps=30, **TINY)
    return out


def test_bpe_model_generates_whole_characters_of_the_corpus(bpe_run: Path) -> None:
    model = load(bpe_run)
    assert model.tokenizer.level == "bpe"
    # every byte is a token, so bytes may combine into a character the corpus lacks; rarely, though
    allowed = set(XIYOUJI.read_text(encoding="utf-8")) | set(map(chr, range(128)))
    for seed in range(4):
        pieces = list(model.stream("孙悟空", length=60, seed=seed, temperature=1.0))
        text = "".join(pieces)
        text.encode("utf-8")  # valid text: no lone surrogates
        assert text.startswith("孙悟空") and "\ufffd" not in text
        strangers = [ch for ch in text if ch not in allowed]
        assert len(strangers) <= 0.1 * len(text), strangers
        assert sum("\u4e00" <= ch <= "\u9fff" for ch in text[3:]) > 5


def test_bpe_model_reports_bits_per_character(bpe_run: Path) -> None:
    model = load(bpe_run)
    text = XIYOUJI.read_text(encoding="utf-8")
    scores = model.evaluate(XIYOUJI)
    assert scores["chars"] == len(text) < len(text.encode())  # characters, not UTF-8 bytes
    assert scores["unk_rate"] == 0.0
    tokens = len(model.tokenizer.encode(text))
    assert scores["bits_per_char"] == pytest.approx(scores["nats_per_token"] * tokens / len(text) / math.log(2))


def test_web_export_of_a_bpe_model_is_refused_but_onnx_works(
    bpe_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(
        TextweaverError, match=r"the web page cannot tokenize --level bpe models yet: export --format onnx"
    ):
        export(bpe_run, tmp_path / "site", "web")
    assert not (tmp_path / "site").exists()
    one_line_error(
        *run_cli(["export", str(bpe_run), "--out", str(tmp_path / "site"), "--format", "web"], capsys),
        "cannot tokenize --level bpe models yet: export --format onnx, or train with --level char",
    )
    result = export(bpe_run, tmp_path / "onnx", "onnx")
    saved = tokenizer_from_json((result.directory / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved == load(bpe_run).tokenizer
