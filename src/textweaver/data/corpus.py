"""Finding and reading corpus files: paths, directories, the built-in corpus, strict decoding.

Files are read in chunks, so memory stays bounded however large a file is. Text is returned
exactly as stored (only a UTF-8 byte-order mark is dropped); any normalisation is the
tokenizer's job.
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import os
import random
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from textweaver.data.tokenizer import preprocess
from textweaver.errors import TextweaverError

AUTO_ENCODING = "auto"  # --encoding auto: detect each file's encoding (charset-normalizer)
DETECT_BYTES = 1 << 20  # bytes read to detect an encoding
BUILTIN_PREFIX = "builtin:"
# public-domain texts shipped in textweaver/assets/corpora (its README.md names the sources): Tiny Shakespeare, and
# Stevenson's Dr Jekyll and Mr Hyde, which no shipped base model was trained on (the demo fine-tunes on it)
BUILTIN_CORPORA = {"shakespeare": "shakespeare.txt", "jekyll": "jekyll_and_hyde.txt"}
CHUNK_BYTES = 8 << 20
_SIZE_UNITS = (("GB", 1e9), ("MB", 1e6), ("kB", 1e3))
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；])\s+|(?<=[。！？；])")


@dataclass(frozen=True)
class CorpusOptions:
    encoding: str = "utf-8"  # a text encoding (check_encoding), or auto
    errors: str = "strict"  # strict | replace | ignore
    glob: str = "*.txt"

    def __post_init__(self) -> None:
        check_encoding(self.encoding)


def check_encoding(encoding: str) -> None:
    """Refuse what is not a text encoding: Python's codecs also hold bytes-to-bytes ones (bz2_codec,
    zlib_codec: a small file could decompress to gigabytes) and str-to-str ones (rot13)."""
    if encoding == AUTO_ENCODING:
        return
    try:
        info = codecs.lookup(encoding)
    except (LookupError, ValueError):  # ValueError: a name with a NUL byte
        raise TextweaverError(
            f"unknown --encoding {encoding[:40]!r}: use e.g. utf-8, latin-1, gb18030, big5 or auto"
        ) from None
    if not getattr(info, "_is_text_encoding", True):
        raise TextweaverError(
            f"--encoding {encoding[:40]!r} is not a text encoding (it transforms bytes, it does not decode them): "
            "use e.g. utf-8, latin-1, gb18030, big5 or auto"
        )


def builtin_corpus_path(name: str) -> Path:
    if name not in BUILTIN_CORPORA:
        raise TextweaverError(
            f"unknown built-in corpus {BUILTIN_PREFIX}{name}: available are "
            + ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_CORPORA)
        )
    return Path(str(resources.files("textweaver") / "assets" / "corpora" / BUILTIN_CORPORA[name]))


def resolve_paths(inputs: Sequence[str | Path], glob: str = "*.txt") -> list[Path]:
    """Files named by ``inputs``: files as given, directories searched recursively with ``glob``."""
    if not inputs:
        raise TextweaverError("no corpus given: name at least one file or directory (or builtin:shakespeare)")
    files: list[Path] = []
    for item in inputs:
        text = str(item)
        if text.startswith(BUILTIN_PREFIX):
            files.append(builtin_corpus_path(text[len(BUILTIN_PREFIX) :]))
            continue
        path = Path(text)
        if path.is_dir():
            found = sorted(p for p in path.rglob(glob) if p.is_file())
            if not found:
                raise TextweaverError(
                    f"{path}: no files matching {glob!r} in this directory: pass --glob to choose others"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            raise TextweaverError(f"{path}: not a regular file or directory")
        else:
            raise TextweaverError(f"{path}: no such file or directory")
    return files


# How a run names its corpus files. ``info`` and the report name each file up to LISTED_FILES, else summarize them
# per folder; config.json keeps each file's entry up to STORED_FILES (a base model's few hundred novels stay named,
# e.g. for bench/finetune_gain.py's held-out check) and summarizes thousands of short documents (its ``cache_key``,
# a hash of every file's path and content, still identifies the corpus exactly)
LISTED_FILES, STORED_FILES = 20, 1000


def summarize_files(entries: Sequence[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """A run's corpus files as its config.json and ``info`` show them: each file's entry (path, tokens,
    bytes) while there are at most ``limit``; beyond, one entry per folder with how many files it holds
    (``"files"``) and their summed numbers, or one for their common folder if even those are too many.
    Entries that already stand for a folder are merged as they are."""
    if len(entries) <= limit:
        return list(entries)
    groups: dict[str, list[dict[str, Any]]] = {}
    for item in entries:
        folder = str(item.get("path", "")) if "files" in item else str(Path(str(item.get("path", ""))).parent)
        groups.setdefault(folder, []).append(item)
    if len(groups) > limit:
        try:
            common = os.path.commonpath(list(groups))
        except ValueError:  # absolute and relative folders: nothing in common
            common = "."
        groups = {common: [e for members in groups.values() for e in members]}
    summary = []
    for folder, members in groups.items():
        if len(members) == 1 and "files" not in members[0]:  # a lone file stays itself
            summary.append(members[0])
            continue
        entry: dict[str, Any] = {"path": folder, "files": sum(int(e.get("files", 1)) for e in members)}
        for key in ("bytes", "tokens", "train_tokens", "val_tokens"):
            if all(isinstance(e.get(key), int) for e in members):  # runs from before "bytes" have no sizes
                entry[key] = sum(e[key] for e in members)
        summary.append(entry)
    return summary


def describe_file(entry: dict[str, Any]) -> str:
    """One entry of :func:`summarize_files` in words: the file's path, or ``FOLDER/ (N files, SIZE)``."""
    if "files" not in entry:
        return str(entry.get("path"))
    facts = [f"{entry['files']:,} files"]
    if "bytes" in entry:
        size = entry["bytes"]
        scaled = [f"{size / scale:.1f} {unit}" for unit, scale in _SIZE_UNITS if size >= scale]
        facts.append(scaled[0] if scaled else f"{size} bytes")
    if "tokens" in entry:
        facts.append(f"{entry['tokens']:,} tokens")
    return f"{entry['path'].rstrip('/')}/ ({', '.join(facts)})"


def detect_encoding(path: Path, offset: int = 0) -> str | None:
    """The encoding charset-normalizer finds most likely for ``path``'s bytes around ``offset``, as
    Python's codec name (``gb18030``, ``big5``, ``utf-8`` ...); None when it has no guess."""
    from charset_normalizer import from_bytes

    start = max(0, offset - DETECT_BYTES // 2)
    try:
        with path.open("rb") as f:
            f.seek(start)
            sample = f.read(DETECT_BYTES)
    except OSError:
        return None
    if start:  # begin after a newline: 0x0A is never inside a character of GB18030, Big5, Shift-JIS or UTF-8
        sample = sample[sample.find(b"\n") + 1 :]
    if len(sample) == DETECT_BYTES and b"\n" in sample:
        sample = sample[: sample.rfind(b"\n") + 1]
    best = from_bytes(sample).best()
    return None if best is None else codecs.lookup(best.encoding).name


def file_encoding(path: Path, options: CorpusOptions) -> str:
    """The encoding ``path`` is read with: ``--encoding``, or the detected one for ``auto``."""
    if options.encoding != AUTO_ENCODING:
        return options.encoding
    try:
        stat = path.stat()
    except OSError:
        return "utf-8"  # reading it will report the problem
    return _detected(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _detected(path: Path, size: int, mtime_ns: int) -> str:
    """Detection once per version of a file (a corpus is read several times)."""
    return detect_encoding(path) or "utf-8"


def iter_text(path: Path, options: CorpusOptions) -> Iterator[str]:
    """Decoded text of ``path`` in chunks, with a one-line error naming the byte offset of bad input."""
    encoding = file_encoding(path, options)  # checked by CorpusOptions, or detected
    decoder = codecs.getincrementaldecoder(encoding)(errors=options.errors)
    utf8 = codecs.lookup(encoding).name == "utf-8"
    offset = 0
    first = True
    try:
        with path.open("rb") as f:
            while True:
                chunk = f.read(CHUNK_BYTES)
                final = not chunk
                if chunk and utf8:
                    nul = chunk.find(b"\0")
                    if nul >= 0:
                        raise TextweaverError(
                            f"{path}: looks like a binary file (NUL byte at byte offset {offset + nul}): "
                            "pass text files only, or narrow a directory with --glob"
                        )
                pending = len(decoder.getstate()[0])
                try:
                    text = decoder.decode(chunk, final=final)
                except UnicodeDecodeError as e:
                    at = offset - pending + e.start
                    guess = detect_encoding(path, at)
                    advice = (
                        f"looks like {guess}: pass --encoding {guess} (or --encoding auto), or --errors replace"
                        if guess and guess != codecs.lookup(encoding).name
                        else "pass --encoding with the file's real encoding, or --errors replace"
                    )
                    raise TextweaverError(f"{path}: invalid {encoding} at byte offset {at}: {advice}") from None
                if first and text:
                    text = text.removeprefix("\ufeff")
                    first = False
                if text:
                    yield text
                if final:
                    return
                offset += len(chunk)
    except OSError as e:
        raise TextweaverError(f"{path}: cannot read ({e.strerror or e})") from None


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                h.update(chunk)
    except OSError as e:
        raise TextweaverError(f"{path}: cannot read ({e.strerror or e})") from None
    return h.hexdigest()


def safe_cut(text: str) -> int:
    """An index where ``text`` can be split so that each side normalises and tokenises exactly
    as the whole would: just after a non-space character that is followed by whitespace (the
    last such place before a newline when there is one). 0 means there is no such place."""
    nl = text.rfind("\n")
    i = nl if nl >= 0 else len(text)
    if nl < 0:  # no newline: back up to the start of the last non-space run, i.e. to whitespace
        while i > 0 and not text[i - 1].isspace():
            i -= 1
    while i > 0 and text[i - 1].isspace():
        i -= 1
    return i


def grapheme_cut(text: str) -> int:
    """A last-resort split for text without whitespace: before the last character that does not
    combine with the one before it (a 32 MB run of letters may still split a 'word')."""
    for i in range(len(text) - 1, 0, -1):
        if unicodedata.combining(text[i]) == 0:
            return i
    return len(text)


def iter_preprocessed(
    path: Path, options: CorpusOptions, lowercase: bool = False, normalize: str | None = None
) -> Iterator[str]:
    """Chunks of ``path``'s text after the tokenizer's normalisation, cut only where cutting
    changes nothing (see :func:`safe_cut`)."""
    carry = ""
    for text in iter_text(path, options):
        text = carry + text
        cut = safe_cut(text)
        if cut == 0:
            if len(text) < 4 * CHUNK_BYTES:
                carry = text
                continue
            cut = grapheme_cut(text)
        carry = text[cut:]
        yield preprocess(text[:cut], lowercase, normalize)
    if carry:
        yield preprocess(carry, lowercase, normalize)


class StartSentences:
    """A seeded reservoir sample of sentences from the corpus, used as random prompts."""

    def __init__(self, capacity: int = 300, seed: int = 0, min_chars: int = 12, max_chars: int = 160) -> None:
        self.capacity, self.min_chars, self.max_chars = capacity, min_chars, max_chars
        self._rng = random.Random(seed)
        self._seen = 0
        self.sentences: list[str] = []

    def update(self, text: str) -> None:
        for line in text.splitlines():
            for sentence in _SENTENCE_END.split(line.strip()):
                if self.min_chars <= len(sentence) <= self.max_chars:
                    self._add(sentence)

    def _add(self, sentence: str) -> None:
        self._seen += 1
        if len(self.sentences) < self.capacity:
            self.sentences.append(sentence)
        else:
            j = self._rng.randrange(self._seen)
            if j < self.capacity:
                self.sentences[j] = sentence
