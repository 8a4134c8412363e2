"""Specification of textweaver.data.dataset: a corpus encoded once into cached train/val memmaps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import textweaver.data.dataset as dataset
from textweaver.data.corpus import CorpusOptions
from textweaver.data.dataset import DataOptions, EncodedCorpus, encode_file, prepare
from textweaver.errors import TextweaverError

SHAKESPEARE = Path(dataset.__file__).parent.parent / "assets" / "corpora" / "shakespeare.txt"


def shakespeare(n_bytes: int, start: int = 0) -> str:
    with SHAKESPEARE.open("rb") as f:
        f.seek(start)
        return f.read(n_bytes).decode("utf-8")  # Tiny Shakespeare is ASCII, so any cut decodes


@pytest.fixture
def two_files(tmp_path: Path) -> list[Path]:
    """Two excerpts of different lengths, so a split over their concatenation would differ."""
    first = tmp_path / "corpus" / "a.txt"
    second = tmp_path / "corpus" / "b.txt"
    first.parent.mkdir()
    first.write_text(shakespeare(14_000), encoding="utf-8")
    second.write_text(shakespeare(6_000, start=14_000), encoding="utf-8")
    return [first, second]


def texts(paths: list[Path]) -> list[str]:
    return [p.read_text(encoding="utf-8") for p in paths]


def expected_split(corpus: EncodedCorpus, paths: list[Path], val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Train and val ids as specified: the last ``val_fraction`` of EACH file's ids goes to val."""
    train, val = [], []
    for text in texts(paths):
        ids = corpus.tokenizer.encode(text)
        n_val = round(len(ids) * val_fraction)
        train.append(ids[: len(ids) - n_val])
        val.append(ids[len(ids) - n_val :])
    return np.concatenate(train), np.concatenate(val)


@pytest.mark.parametrize("level", ["char", "word"])
def test_train_and_val_hold_the_encoded_text_with_the_last_fraction_of_each_file_in_val(
    tmp_path: Path, two_files: list[Path], level: str
) -> None:
    corpus = prepare(two_files, tmp_path / "cache", DataOptions(level=level, val_fraction=0.2))
    train, val = expected_split(corpus, two_files, 0.2)
    assert np.array_equal(corpus.train, train)
    assert np.array_equal(corpus.val, val)
    assert 0 not in corpus.train and 0 not in corpus.val  # every token of the corpus is in its vocabulary
    assert [f["path"] for f in corpus.files] == [str(p) for p in two_files]
    for meta, text in zip(corpus.files, texts(two_files), strict=True):
        n = len(corpus.tokenizer.encode(text))
        n_val = round(n * 0.2)
        assert (meta["tokens"], meta["train_tokens"], meta["val_tokens"]) == (n, n - n_val, n_val)


def test_decoding_train_and_val_of_one_file_gives_back_the_file(tmp_path: Path, two_files: list[Path]) -> None:
    corpus = prepare(two_files[:1], tmp_path / "cache", DataOptions(val_fraction=0.1))
    text = texts(two_files[:1])[0]
    decoded_train = corpus.tokenizer.decode(corpus.train.tolist())
    decoded_val = corpus.tokenizer.decode(corpus.val.tolist())
    assert decoded_train + decoded_val == text
    assert len(decoded_val) == round(len(text) * 0.1)


def test_a_file_without_whitespace_is_encoded_like_the_whole_text(tmp_path: Path) -> None:
    path = tmp_path / "poem.txt"
    path.write_text("混沌未分天地乱，茫茫渺渺无人见", encoding="utf-8")
    corpus = prepare([path], tmp_path / "cache", DataOptions(level="word", val_fraction=0.0))
    words = ["混沌", "未", "分", "天地", "乱", "，", "茫茫", "渺渺", "无人", "见"]  # jieba's words, not clauses
    assert corpus.tokenizer.split(path.read_text(encoding="utf-8")) == words
    assert np.array_equal(corpus.train, corpus.tokenizer.encode(path.read_text(encoding="utf-8")))
    assert "茫茫" in corpus.tokenizer.vocab


def test_char_level_counts_one_character_per_token(tmp_path: Path, two_files: list[Path]) -> None:
    corpus = prepare(two_files, tmp_path / "cache", DataOptions(level="char"))
    assert corpus.train_chars == len(corpus.train)
    assert corpus.val_chars == len(corpus.val)
    assert corpus.train_chars + corpus.val_chars == sum(map(len, texts(two_files)))
    assert corpus.chars_per_token == 1.0


def test_word_level_counts_the_real_characters_even_of_unknown_words(tmp_path: Path, two_files: list[Path]) -> None:
    corpus = prepare(two_files, tmp_path / "cache", DataOptions(level="word", vocab_size=50, val_fraction=0.25))
    tok = corpus.tokenizer
    assert len(tok) == 50
    assert (corpus.train == 0).sum() > 100 and (corpus.val == 0).sum() > 10  # plenty of <unk>
    train_chars = val_chars = 0
    for text in texts(two_files):
        tokens = tok.split(text)
        n_val = round(len(tokens) * 0.25)
        train_chars += len("".join(tokens[: len(tokens) - n_val]))
        val_chars += len("".join(tokens[len(tokens) - n_val :]))
    assert (corpus.train_chars, corpus.val_chars) == (train_chars, val_chars)
    assert corpus.train_chars + corpus.val_chars == sum(map(len, texts(two_files)))
    # counting <unk> as one character (as token_lengths() does) would give fewer
    assert corpus.val_chars > int(tok.token_lengths()[np.asarray(corpus.val)].sum())
    assert corpus.chars_per_token == corpus.val_chars / len(corpus.val)


def test_preprocessing_is_applied_and_counted_after_it(tmp_path: Path) -> None:
    path = tmp_path / "shout.txt"
    path.write_text("HELLO Wörld\nHELLO again\n" * 20, encoding="utf-8")
    corpus = prepare([path], tmp_path / "cache", DataOptions(lowercase=True, normalize="NFD", val_fraction=0.5))
    expected = "hello wo\u0308rld\nhello again\n" * 20
    assert corpus.tokenizer.decode(np.concatenate([corpus.train, corpus.val]).tolist()) == expected
    assert corpus.train_chars + corpus.val_chars == len(expected)
    assert corpus.tokenizer.lowercase and corpus.tokenizer.normalize == "NFD"


def test_char_ids_are_stored_as_uint16(tmp_path: Path, two_files: list[Path]) -> None:
    corpus = prepare(two_files, tmp_path / "cache", DataOptions(level="char"))
    assert corpus.tokenizer.id_dtype is np.uint16
    assert corpus.train.dtype == np.uint16 and corpus.val.dtype == np.uint16
    assert (corpus.directory / "train.bin").stat().st_size == 2 * len(corpus.train)
    assert (corpus.directory / "val.bin").stat().st_size == 2 * len(corpus.val)
    assert np.array_equal(np.fromfile(corpus.directory / "train.bin", dtype=np.uint16), corpus.train)


def test_prompts_are_sentences_of_the_corpus(tmp_path: Path, two_files: list[Path]) -> None:
    corpus = prepare(two_files, tmp_path / "cache", DataOptions())
    whole = "".join(texts(two_files))
    assert corpus.prompts
    assert all(p in whole for p in corpus.prompts)


# --- the cache --------------------------------------------------------------------------------


def test_second_prepare_reuses_the_cache_without_encoding(
    tmp_path: Path, two_files: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = prepare(two_files, tmp_path / "cache", DataOptions(level="word"))
    files = sorted(first.directory.iterdir())
    mtimes = [f.stat().st_mtime_ns for f in files]

    def must_not_encode(*args: object) -> None:
        raise AssertionError("the corpus was encoded again")

    monkeypatch.setattr(dataset, "_encode", must_not_encode)
    second = prepare(two_files, tmp_path / "cache", DataOptions(level="word"))
    assert second.key == first.key and second.directory == first.directory
    assert second.tokenizer == first.tokenizer
    assert np.array_equal(second.train, first.train) and np.array_equal(second.val, first.val)
    assert (second.train_chars, second.val_chars, second.prompts) == (first.train_chars, first.val_chars, first.prompts)
    assert sorted(second.directory.iterdir()) == files
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [first.key]  # no temporary folders left


def test_changed_file_or_options_give_a_new_cache_key(tmp_path: Path, two_files: list[Path]) -> None:
    cache = tmp_path / "cache"
    before = prepare(two_files, cache, DataOptions())
    for other in [DataOptions(level="word"), DataOptions(val_fraction=0.2), DataOptions(lowercase=True)]:
        assert prepare(two_files, cache, other).key != before.key
    with two_files[1].open("a", encoding="utf-8") as f:
        f.write("A new line at the end.\n")
    after = prepare(two_files, cache, DataOptions())
    assert after.key != before.key
    assert len(after.train) + len(after.val) == len(before.train) + len(before.val) + len("A new line at the end.\n")
    assert prepare(list(reversed(two_files)), cache, DataOptions()).key != after.key  # order matters


def test_damaged_cache_is_reported_with_the_folder_to_delete(tmp_path: Path, two_files: list[Path]) -> None:
    corpus = prepare(two_files, tmp_path / "cache", DataOptions())
    (corpus.directory / "meta.json").write_text("{", encoding="utf-8")
    with pytest.raises(TextweaverError, match=f"{corpus.directory}: the encoded-corpus cache is damaged.*delete"):
        prepare(two_files, tmp_path / "cache", DataOptions())


# --- errors and encode_file -------------------------------------------------------------------


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"], ids=["zero-bytes", "only-a-byte-order-mark"])
def test_empty_corpus_is_refused(tmp_path: Path, content: bytes) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(content)
    with pytest.raises(TextweaverError, match=f"{empty}: the corpus is empty"):
        prepare([empty], tmp_path / "cache", DataOptions())
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_an_empty_file_among_others_is_fine(tmp_path: Path, two_files: list[Path]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    corpus = prepare([two_files[0], empty], tmp_path / "cache", DataOptions())
    assert corpus.files[1] == {"path": str(empty), "tokens": 0, "train_tokens": 0, "val_tokens": 0}
    assert len(corpus.train) + len(corpus.val) == len(texts(two_files[:1])[0])


def test_a_bad_file_names_itself_and_leaves_no_cache(tmp_path: Path, two_files: list[Path]) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine text \xff")
    with pytest.raises(TextweaverError, match=f"{bad}: invalid utf-8 at byte offset 10"):
        prepare([*two_files, bad], tmp_path / "cache", DataOptions())
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    corpus = prepare([*two_files, bad], tmp_path / "cache", DataOptions(corpus=CorpusOptions(errors="replace")))
    # 11 characters: the last one (10% of 11, rounded) goes to val
    assert corpus.tokenizer.decode(corpus.train[-10:].tolist()) == "fine text "
    assert corpus.tokenizer.decode(corpus.val[-1:].tolist()) == "\ufffd"
    assert corpus.val[-1] != 0  # a real character of the corpus, not <unk>


@pytest.mark.parametrize("level", ["char", "word"])
def test_encode_file_gives_the_ids_and_characters_of_a_file(tmp_path: Path, two_files: list[Path], level: str) -> None:
    corpus = prepare(two_files[:1], tmp_path / "cache", DataOptions(level=level, vocab_size=200))
    other = two_files[1]
    encoded = encode_file(other, corpus.tokenizer, CorpusOptions(), tmp_path / "ids.bin")
    text = texts([other])[0]
    assert encoded.ids.dtype == corpus.tokenizer.id_dtype and isinstance(encoded.ids, np.memmap)
    assert np.array_equal(encoded.ids, corpus.tokenizer.encode(text))
    assert encoded.chars == len(text) and encoded.unknown == int((corpus.tokenizer.encode(text) == 0).sum())


def test_encode_file_applies_the_tokenizers_preprocessing(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("Hello HELLO\n", encoding="utf-8")
    corpus = prepare([path], tmp_path / "cache", DataOptions(lowercase=True))
    shout = tmp_path / "shout.txt"
    shout.write_text("OK HELLO", encoding="utf-8")
    encoded = encode_file(shout, corpus.tokenizer, CorpusOptions(), tmp_path / "ids.bin")
    assert corpus.tokenizer.decode(encoded.ids.tolist()) == "o\ufffd hello"
    assert encoded.chars == 8 and encoded.unknown == 1


def test_encode_file_refuses_an_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("abc abc\n", encoding="utf-8")
    corpus = prepare([path], tmp_path / "cache", DataOptions())
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(TextweaverError, match=f"{empty}: the file is empty"):
        encode_file(empty, corpus.tokenizer, CorpusOptions(), tmp_path / "ids.bin")


def test_cache_directory_is_under_the_given_root(tmp_path: Path, two_files: list[Path]) -> None:
    corpus = prepare(two_files, tmp_path / "run" / "cache", DataOptions())
    assert corpus.directory == tmp_path / "run" / "cache" / corpus.key
    assert {p.name for p in corpus.directory.iterdir()} == {"train.bin", "val.bin", "meta.json"}
    assert not [p for p in os.listdir(tmp_path / "run" / "cache") if p.startswith(".")]
