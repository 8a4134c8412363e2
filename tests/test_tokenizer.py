"""Specification of textweaver.data.tokenizer: text <-> ids at char, word and bpe level, saved as JSON.

The vocabulary counted over a corpus and tokenizer.json read back: test_vocab.py; the byte-level BPE
itself: test_bpe.py."""

from __future__ import annotations

import math
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from textweaver import load, train
from textweaver.data.tokenizer import UNK, UNK_TEXT, CharTokenizer, WordTokenizer
from textweaver.data.vocab import make_tokenizer, tokenizer_from_json
from textweaver.errors import TextweaverError
from textweaver.export.site import export

from conftest import ALL_LEVELS, TINY, TRICKY, XIYOUJI, one_line_error, run_cli, tokenizer_for

LEVELS = ["char", "word"]


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


# --- bpe models (the bpe tokenizer itself: test_bpe.py) ---------------------------------------


def test_cli_refuses_a_bpe_vocab_size_below_the_bytes_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train", str(XIYOUJI), "-o", str(tmp_path / "r"), "--level", "bpe", "--vocab-size", "100"]
    one_line_error(*run_cli(args, capsys), "--vocab-size must be at least 257 for --level bpe")
    one_line_error(*run_cli([*args[:4], "--level", "bytes"], capsys), "unknown --level 'bytes': use char, word or bpe")


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
