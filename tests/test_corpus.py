"""Specification of textweaver.data.corpus: finding corpus files and reading them in exact, safe chunks."""

from __future__ import annotations

import bz2
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import textweaver.data.corpus as corpus
from textweaver.data.corpus import CorpusOptions, StartSentences, iter_preprocessed, iter_text, resolve_paths
from textweaver.data.tokenizer import WORD_PATTERN, preprocess
from textweaver.errors import TextweaverError
from textweaver.run.checkpoint import builtin_model_dir

from conftest import XIYOUJI, one_line_error, run_cli

UTF8 = CorpusOptions()
ROOT = Path(__file__).resolve().parent.parent
FILE_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")  # NUL would make it a binary file

# tmp_path and monkeypatch are reused across hypothesis examples; each example rewrites the file
# and re-sets CHUNK_BYTES, so nothing leaks from one example to the next.
PROPERTY = settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def read_all(path: Path, options: CorpusOptions = UTF8) -> str:
    return "".join(iter_text(path, options))


def words(chunks: list[str]) -> list[str]:
    """Word-level tokens of the chunks, split one chunk at a time as prepare() does."""
    return [token for chunk in chunks for token in WORD_PATTERN.findall(chunk)]


# --- resolve_paths ----------------------------------------------------------------------------


def test_files_are_returned_as_given_in_order(tmp_path: Path) -> None:
    b = write(tmp_path / "b.txt", "b")
    a = write(tmp_path / "a.md", "a")
    assert resolve_paths([b, str(a)]) == [b, a]


def test_directories_are_searched_recursively_with_the_glob_in_sorted_order(tmp_path: Path) -> None:
    write(tmp_path / "z.txt", "z")
    write(tmp_path / "sub" / "deeper" / "a.txt", "a")
    write(tmp_path / "sub" / "notes.md", "md")
    write(tmp_path / "sub" / "image.png", b"\x89PNG")
    (tmp_path / "dir.txt").mkdir()  # a directory matching the glob is not a file
    assert resolve_paths([tmp_path]) == [tmp_path / "sub" / "deeper" / "a.txt", tmp_path / "z.txt"]
    assert resolve_paths([tmp_path], glob="*.md") == [tmp_path / "sub" / "notes.md"]


def test_files_directories_and_builtins_can_be_mixed(tmp_path: Path) -> None:
    f = write(tmp_path / "one.txt", "1")
    d = tmp_path / "d"
    g = write(d / "two.txt", "2")
    found = resolve_paths([f, "builtin:shakespeare", d])
    assert found[0] == f
    assert found[1].name == "shakespeare.txt"
    assert found[2] == g


def test_builtin_shakespeare_is_a_readable_text_file() -> None:
    (path,) = resolve_paths(["builtin:shakespeare"])
    assert path.is_file()
    assert next(iter_text(path, UTF8)).startswith("First Citizen:")


def test_the_demo_fine_tunes_on_a_builtin_novel_the_english_base_never_saw() -> None:
    """make demo fine-tunes builtin:english only on builtin:jekyll: the novel must not be among the files the base
    trained on (its config.json lists them), or the demo would show recall, not learning. English prose starts from
    builtin:english by default, so every other demo training must say --init-from none."""
    demo = (ROOT / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    trained = re.findall(r"textweaver train (builtin:\w+)(.*)", demo)
    tuned = [corpus for corpus, options in trained if "--init-from none" not in options]
    assert len(trained) == 2 and tuned == ["builtin:jekyll"], trained
    (path,) = resolve_paths(tuned)
    text = read_all(path)
    assert text.startswith("The Strange Case Of Dr. Jekyll And Mr. Hyde\n") and "gutenberg" not in text.lower()
    base = json.loads((builtin_model_dir("english") / "config.json").read_text(encoding="utf-8"))
    trained = [Path(f["path"]).name for f in base["corpus"]["files"]]
    assert len(trained) >= 8 and path.name not in trained and not any("jekyll" in n.lower() for n in trained)


def test_many_files_are_summarized_per_folder_a_few_are_named() -> None:
    def entry(path: str) -> dict[str, object]:
        return {"path": path, "tokens": 10, "train_tokens": 9, "val_tokens": 1, "bytes": 1500}

    few = [entry("a/1.txt"), entry("b/2.txt")]
    assert corpus.summarize_files(few, 2) == few
    many = [entry(f"reviews/{i}.txt") for i in range(30)] + [entry("notes.txt")]
    summary = corpus.summarize_files(many, 20)
    assert summary == [
        {"path": "reviews", "files": 30, "bytes": 45_000, "tokens": 300, "train_tokens": 270, "val_tokens": 30},
        entry("notes.txt"),  # a lone file stays itself
    ]
    assert [corpus.describe_file(e) for e in summary] == ["reviews/ (30 files, 45.0 kB, 300 tokens)", "notes.txt"]
    # too many folders: their common one; summaries merge as they are
    spread = [entry(f"data/{i}/x.txt") for i in range(25)] + [{"path": "data/old", "files": 5, "tokens": 1}]
    assert corpus.summarize_files(spread, 20) == [{"path": "data", "files": 30, "tokens": 251}]


def test_unknown_builtin_lists_the_available_ones() -> None:
    with pytest.raises(
        TextweaverError, match=r"unknown built-in corpus builtin:poe: available are builtin:shakespeare"
    ):
        resolve_paths(["builtin:poe"])


def test_missing_path_is_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(TextweaverError, match=re.escape(f"{missing}: no such file or directory")):
        resolve_paths([missing])


def test_directory_without_matching_files_suggests_glob(tmp_path: Path) -> None:
    write(tmp_path / "notes.md", "md")
    with pytest.raises(TextweaverError, match=re.escape(f"{tmp_path}: no files matching '*.txt'") + ".*--glob"):
        resolve_paths([tmp_path])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TextweaverError, match="no files matching"):
        resolve_paths([tmp_path / "empty"], glob="*")


def test_no_inputs_at_all_is_an_error() -> None:
    with pytest.raises(TextweaverError, match="no corpus given"):
        resolve_paths([])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_special_files_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(TextweaverError, match="not a regular file or directory"):
        resolve_paths([fifo])


# --- iter_text: exact text --------------------------------------------------------------------


@pytest.mark.parametrize("chunk_bytes", [1, 2, 7, 8 << 20])
def test_utf8_byte_order_mark_is_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    path = write(tmp_path / "bom.txt", b"\xef\xbb\xbfhello\xef\xbb\xbf world")
    assert read_all(path) == "hello\ufeff world"  # only the leading mark is a byte-order mark


def test_a_file_holding_only_a_byte_order_mark_reads_as_empty(tmp_path: Path) -> None:
    assert list(iter_text(write(tmp_path / "bom.txt", b"\xef\xbb\xbf"), UTF8)) == []
    assert list(iter_text(write(tmp_path / "empty.txt", b""), UTF8)) == []


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 8 << 20])
def test_tabs_crlf_and_whitespace_are_kept_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    text = "  lead\tTab\t\tTabs\r\nCRLF\r\n\r\nlone\rCR  \u3000ideographic space\u00a0nbsp\n\n\n  trail  "
    assert read_all(write(tmp_path / "ws.txt", text)) == text


@PROPERTY
@given(text=st.text(alphabet=FILE_CHARS, max_size=120), chunk_bytes=st.integers(1, 16))
@example(text="西游记 👨‍👩‍👧 e\u0301\r\n\t", chunk_bytes=1)
def test_chunks_of_text_join_to_the_whole_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, chunk_bytes: int
) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    chunks = list(iter_text(write(tmp_path / "f.txt", text), UTF8))
    assert "".join(chunks) == text.removeprefix("\ufeff")
    assert all(chunks)


def test_unknown_encoding_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TextweaverError, match="unknown --encoding 'klingon'"):
        read_all(write(tmp_path / "f.txt", "x"), CorpusOptions(encoding="klingon"))


@pytest.mark.parametrize("encoding", ["bz2_codec", "zlib_codec", "base64", "hex", "uu", "rot13"])
def test_an_encoding_that_is_not_text_is_refused_in_one_line(tmp_path: Path, encoding: str) -> None:
    """Python's codecs include compressions: 1 KB of bz2 could decode to gigabytes. Only text encodings."""
    bomb = write(tmp_path / "bomb.txt", bz2.compress(b"a" * 10**6))
    with pytest.raises(TextweaverError, match=rf"^--encoding '{encoding}' is not a text encoding .*use e\.g\. utf-8"):
        read_all(bomb, CorpusOptions(encoding=encoding))
    assert read_all(write(tmp_path / "ok.txt", "x"), CorpusOptions(encoding="auto")) == "x"


def test_the_cli_refuses_an_encoding_that_is_not_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = write(tmp_path / "bomb.txt", bz2.compress(b"hello world " * 10**5))
    args = ["train", str(bomb), "--out", str(tmp_path / "run"), "--max-steps", "1", "--encoding", "bz2_codec"]
    one_line_error(*run_cli(args, capsys), r"--encoding 'bz2_codec' is not a text encoding")


def test_unreadable_path_is_a_textweaver_error(tmp_path: Path) -> None:
    with pytest.raises(TextweaverError, match=re.escape(f"{tmp_path}: cannot read")):
        read_all(tmp_path)


# --- iter_text: bad input ---------------------------------------------------------------------


def assert_invalid_utf8_error(error: TextweaverError, path: Path, offset: int) -> None:
    message = str(error)
    assert message.startswith(f"{path}: invalid utf-8 at byte offset {offset}: "), message
    assert "--encoding" in message
    assert "--errors replace" in message


@pytest.mark.parametrize(
    ("data", "offset", "chunk_bytes"),
    [
        pytest.param(b"hello \xff world", 6, 8 << 20, id="one-chunk"),
        pytest.param(b"abcdefghijklmnopqrst\xffuv", 20, 7, id="third-chunk"),
        pytest.param(b"abcdefg\x80hij", 7, 7, id="first-byte-of-a-chunk"),
        pytest.param(b"abcdef\xffhij", 6, 7, id="last-byte-of-a-chunk"),
        pytest.param(b"abcdef\xe4Ahij", 6, 7, id="lead-byte-ends-a-chunk-bad-continuation-starts-the-next"),
        pytest.param(b"abcde\xe4\xb8Ahij", 5, 7, id="two-pending-bytes-then-bad-continuation"),
        pytest.param("abcdef€".encode() + b"\xff", 9, 7, id="after-a-character-split-across-chunks"),
        pytest.param(b"abc\xe4\xb8", 3, 8 << 20, id="truncated-at-end-of-file"),
        pytest.param(b"abc\xe4\xb8", 3, 4, id="truncated-at-end-of-file-across-chunks"),
    ],
)
def test_invalid_utf8_names_the_file_and_exact_byte_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, offset: int, chunk_bytes: int
) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    path = write(tmp_path / "bad.txt", data)
    with pytest.raises(TextweaverError) as info:
        read_all(path)
    assert_invalid_utf8_error(info.value, path, offset)


def test_a_gb18030_novel_gets_the_encoding_to_pass_and_auto_reads_it(tmp_path: Path) -> None:
    """Chinese novels often come as GB18030/GBK: the error names the encoding charset-normalizer detects,
    and that encoding (or --encoding auto) reads the text exactly."""
    text = XIYOUJI.read_text(encoding="utf-8")
    path = write(tmp_path / "novel.txt", text.encode("gb18030"))
    with pytest.raises(TextweaverError) as info:
        read_all(path)
    message = str(info.value)
    found = re.search(r"looks like (\S+): pass --encoding (\S+) \(or --encoding auto\), or --errors replace", message)
    assert found and found.group(1) == found.group(2) in ("gb18030", "gbk", "gb2312"), message
    assert read_all(path, CorpusOptions(encoding=found.group(1))) == text
    assert read_all(path, CorpusOptions(encoding="auto")) == text
    assert corpus.file_encoding(path, CorpusOptions(encoding="auto")) == found.group(1)
    utf8 = write(tmp_path / "utf8.txt", text.encode())
    assert corpus.file_encoding(utf8, CorpusOptions(encoding="auto")) == "utf-8"


@PROPERTY
@given(
    before=st.text(alphabet=FILE_CHARS, max_size=40),
    after=st.text(alphabet=FILE_CHARS, max_size=40),
    bad=st.sampled_from([b"\xff", b"\xfe", b"\x80", b"\xbf", b"\xc0", b"\xc3", b"\xe4", b"\xe4\xb8", b"\xf0\x9f"]),
    chunk_bytes=st.integers(1, 16),
)
def test_invalid_utf8_offset_is_exact_wherever_the_chunks_fall(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, before: str, after: str, bad: bytes, chunk_bytes: int
) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    head = before.encode()
    path = write(tmp_path / "bad.txt", head + bad + after.encode())
    with pytest.raises(TextweaverError) as info:
        read_all(path)
    assert_invalid_utf8_error(info.value, path, len(head))


@pytest.mark.parametrize(("data", "offset", "chunk_bytes"), [(b"abc\0def", 3, 8 << 20), (b"abcdefghij\0", 10, 4)])
def test_nul_byte_is_reported_as_a_binary_file_with_its_offset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, offset: int, chunk_bytes: int
) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    path = write(tmp_path / "data.bin", data)
    with pytest.raises(TextweaverError) as info:
        read_all(path)
    message = str(info.value)
    assert message.startswith(f"{path}: looks like a binary file (NUL byte at byte offset {offset})"), message
    assert "--glob" in message


@pytest.mark.parametrize("chunk_bytes", [1, 7, 8 << 20])
def test_errors_replace_substitutes_the_replacement_character(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    path = write(tmp_path / "bad.txt", b"caf\xe9 ok \xff!")
    assert read_all(path, CorpusOptions(errors="replace")) == "caf\ufffd ok \ufffd!"
    assert read_all(path, CorpusOptions(errors="ignore")) == "caf ok !"


def test_latin1_file_reads_with_its_encoding(tmp_path: Path) -> None:
    path = write(tmp_path / "latin1.txt", "déjà vu, naïve café\n".encode("latin-1"))
    assert read_all(path, CorpusOptions(encoding="latin-1")) == "déjà vu, naïve café\n"
    with pytest.raises(TextweaverError) as info:
        read_all(path)
    assert_invalid_utf8_error(info.value, path, 1)


def test_nul_bytes_are_allowed_in_encodings_that_use_them(tmp_path: Path) -> None:
    path = write(tmp_path / "utf16.txt", "wide text ✓".encode("utf-16"))
    assert read_all(path, CorpusOptions(encoding="utf-16")) == "wide text ✓"


# --- iter_preprocessed: chunking never changes the text or its tokens -------------------------


@PROPERTY
@given(text=st.text(alphabet=FILE_CHARS, max_size=150), chunk_bytes=st.integers(1, 16))
@example(text="a" * 100, chunk_bytes=3)  # longer than 4 chunks without whitespace
@example(text=" " * 100, chunk_bytes=3)
@example(text="\n" + "word " * 30, chunk_bytes=4)
def test_preprocessed_chunks_join_to_the_whole_text_and_stay_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, chunk_bytes: int
) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    chunks = list(iter_preprocessed(write(tmp_path / "f.txt", text), UTF8))
    assert "".join(chunks) == text.removeprefix("\ufeff")
    assert all(chunks)
    assert max(map(len, chunks), default=0) <= 5 * chunk_bytes  # memory stays O(chunk)


WORD_CHARS = st.sampled_from(
    list("abcxyzABCXYZ019_")
    + list("éÉßİıΣσςΟΔ")  # letters whose case mapping is special
    + list("西游记混沌")  # CJK
    + ["\u1100", "\u1161", "\u11a8", "각"]  # Hangul jamo that NFC composes, and a syllable
    + ["\u0301", "\u0308", "\u0327"]  # combining marks
    + list("ﬁ①２")  # compatibility characters NFKC folds
    + ["👍", "🏽", "\u200d", "🇫", "🇷"]  # emoji pieces
    + list(".,;:!?'\"()-—。，！")
)
SPACES = st.sampled_from([" ", "  ", "\t", "\u3000", "\u00a0", " \t "])
NEWLINES = st.sampled_from(["\n", "\r\n", "\n\n", "\r\n\r\n", " \n"])


@st.composite
def line_texts(draw: st.DrawFn) -> str:
    """Lines of short words: whitespace in the first chunk and a line end every few chunks."""
    lines = []
    for _ in range(draw(st.integers(1, 12))):
        line_words = draw(st.lists(st.text(WORD_CHARS, min_size=1, max_size=4), min_size=1, max_size=3))
        lead = draw(st.sampled_from(["", " ", "\t"]))
        lines.append(lead + "".join(w + draw(SPACES) for w in line_words[:-1]) + line_words[-1] + draw(NEWLINES))
    text = "".join(lines)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # no final line end
    # whitespace-free runs longer than 4 chunks are split by design: see test_a_file_without_whitespace_*
    if not any(c.isspace() for c in text):
        text = " " + text
    return text


@PROPERTY
@given(
    text=line_texts(),
    chunk_bytes=st.integers(20, 40),
    lowercase=st.booleans(),
    normalize=st.sampled_from([None, "NFC", "NFD", "NFKC", "NFKD"]),
)
@example(text="ΟΔΟΣ ΟΔΟΣ\n가 각\u1100\u1161\u11a8\r\n", chunk_bytes=20, lowercase=True, normalize="NFC")
def test_chunking_never_changes_the_preprocessed_text_or_its_word_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, chunk_bytes: int, lowercase: bool, normalize: str | None
) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", chunk_bytes)
    chunks = list(iter_preprocessed(write(tmp_path / "f.txt", text), UTF8, lowercase, normalize))
    whole = preprocess(text, lowercase, normalize)
    assert "".join(chunks) == whole
    assert words(chunks) == WORD_PATTERN.findall(whole)


def test_chunks_are_cut_before_whitespace_preferring_the_last_line_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(corpus, "CHUNK_BYTES", 16)
    text = "First line here.\nSecond line, longer.\r\nThird.\n"
    chunks = list(iter_preprocessed(write(tmp_path / "f.txt", text), UTF8))
    # read 1: "First line here." has no line end, so it is cut at its last space;
    # later reads are cut before the whitespace holding the last line end seen so far.
    assert chunks == ["First line", " here.", "\nSecond line, longer.\r\nThird.", "\n"]


@pytest.mark.parametrize(
    ("text", "lowercase", "normalize", "expected_words"),
    [
        pytest.param("hello", False, None, ["hello"], id="word-split"),
        pytest.param("ΟΔΟΣ", True, None, ["οδος"], id="final-sigma"),
        pytest.param("\u1100\u1161\u11a8", False, "NFC", ["각"], id="hangul-composition"),
    ],
)
def test_a_file_without_whitespace_is_not_cut_inside_a_word(
    tmp_path: Path, text: str, lowercase: bool, normalize: str | None, expected_words: list[str]
) -> None:
    chunks = list(iter_preprocessed(write(tmp_path / "f.txt", text), UTF8, lowercase, normalize))
    assert "".join(chunks) == preprocess(text, lowercase, normalize)
    assert words(chunks) == expected_words


# --- StartSentences ---------------------------------------------------------------------------


def test_sentences_are_split_at_sentence_ends_and_kept_within_the_length_bounds() -> None:
    s = StartSentences(min_chars=12, max_chars=40)
    s.update("  Hello there, my friend. How are you today? Ok. \n")
    s.update("This line is much too long to be kept as a start sentence at all.\n")
    s.update("混沌未分天地乱，茫茫渺渺无人见。自从盘古破鸿蒙，开辟从兹清浊辨。")
    assert s.sentences == [
        "Hello there, my friend.",
        "How are you today?",
        "混沌未分天地乱，茫茫渺渺无人见。",
        "自从盘古破鸿蒙，开辟从兹清浊辨。",
    ]


@settings(max_examples=50, deadline=None)
@given(text=st.text(max_size=400), min_chars=st.integers(1, 20), extra=st.integers(0, 60))
def test_every_kept_sentence_is_within_the_length_bounds(text: str, min_chars: int, extra: int) -> None:
    s = StartSentences(min_chars=min_chars, max_chars=min_chars + extra)
    s.update(text)
    assert all(min_chars <= len(x) <= min_chars + extra for x in s.sentences)
    assert all(x in text for x in s.sentences)


def many_sentences() -> list[str]:
    return [f"Sentence number {i} is here." for i in range(200)]


def test_reservoir_keeps_at_most_capacity_sentences_reproducibly_for_a_seed() -> None:
    def sample(seed: int) -> list[str]:
        s = StartSentences(capacity=10, seed=seed)
        for sentence in many_sentences():
            s.update(sentence + "\n")
        return s.sentences

    assert len(sample(0)) == 10
    assert set(sample(0)) <= set(many_sentences())
    assert sample(0) == sample(0)
    assert sample(1) == sample(1)
    assert sample(0) != sample(1)
    assert sample(0) != many_sentences()[:10]  # later sentences get a chance too
