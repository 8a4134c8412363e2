"""Corpus -> token ids on disk: encoded once, cached as numpy memmaps, split for validation.

The cache lives in ``RUN_DIR/cache/<key>/`` where the key hashes the corpus bytes and every
option that changes the ids, so re-running or resuming skips the encoding. Memory stays
O(chunk) while encoding and O(1) afterwards (the ids are memory-mapped), whatever the corpus
size. The validation split is the last ``val_fraction`` of each file's tokens: contiguous and
reproducible.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textweaver.data.bpe import check_vocab_size
from textweaver.data.corpus import CorpusOptions, StartSentences, file_digest, iter_preprocessed
from textweaver.data.tokenizer import Tokenizer
from textweaver.data.vocab import VocabCounter, make_tokenizer
from textweaver.errors import TextweaverError

CACHE_VERSION = 1


@dataclass
class EncodedCorpus:
    tokenizer: Tokenizer
    train: np.ndarray  # (N_train,) memmap of ids
    val: np.ndarray  # (N_val,) memmap of ids
    train_chars: int
    val_chars: int
    prompts: list[str]
    files: list[dict[str, Any]]
    key: str
    directory: Path

    @property
    def chars_per_token(self) -> float:
        return self.val_chars / max(len(self.val), 1)


@dataclass(frozen=True)
class DataOptions:
    level: str = "char"
    vocab_size: int | None = None
    lowercase: bool = False
    normalize: str | None = None
    val_fraction: float = 0.1
    corpus: CorpusOptions = field(default_factory=CorpusOptions)
    base: Tokenizer | None = None  # fine-tuning: the source model's tokenizer, extended with the corpus's new tokens


def cache_key(paths: list[Path], options: DataOptions) -> str:
    h = hashlib.sha256()
    h.update(f"textweaver-cache-{CACHE_VERSION}".encode())
    for path in paths:
        h.update(f"{path.resolve()}\0{file_digest(path)}\0".encode())
    opts = {
        "level": options.level, "vocab_size": options.vocab_size, "lowercase": options.lowercase,
        "normalize": options.normalize, "val_fraction": options.val_fraction,
        "encoding": options.corpus.encoding, "errors": options.corpus.errors,
        "base": None if options.base is None else hashlib.sha256(options.base.to_json().encode()).hexdigest(),
    }  # fmt: skip
    h.update(json.dumps(opts, sort_keys=True).encode())
    return h.hexdigest()[:20]


def prepare(paths: list[Path], cache_root: Path, options: DataOptions, seed: int = 0) -> EncodedCorpus:
    """Encode ``paths`` into the cache under ``cache_root`` (or reuse it) and open the memmaps."""
    key = cache_key(paths, options)
    directory = cache_root / key
    if not (directory / "meta.json").is_file():
        _encode(paths, directory, options, seed)
    return _open(directory)


def _encode(paths: list[Path], directory: Path, options: DataOptions, seed: int) -> None:
    # Pass 1: vocabulary, per-file token counts (for the split) and start sentences.
    check_vocab_size(options.level, options.vocab_size)
    counter = VocabCounter(options.level, options.lowercase, options.normalize)
    sentences = StartSentences(seed=seed)
    counts: list[int] = []
    for path in paths:
        n = 0
        for chunk in iter_preprocessed(path, options.corpus, options.lowercase, options.normalize):
            n += counter.update(chunk)
            sentences.update(chunk)
        counts.append(n)
    if sum(counts) == 0:
        names = ", ".join(str(p) for p in paths[:3])
        raise TextweaverError(f"{names}: the corpus is empty: give files that contain text")
    tokenizer = counter.build(options.vocab_size, options.base)
    if tokenizer.level == "bpe":  # subword tokens exist only once build() has learned them: count them now
        counts = [_count_tokens(path, tokenizer, options) for path in paths]

    # Pass 2: ids, written straight to disk; the last val_fraction of each file goes to val.
    tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dtype = tokenizer.id_dtype
    chars = {"train": 0, "val": 0}
    files_meta = []
    with (tmp / "train.bin").open("wb") as train_f, (tmp / "val.bin").open("wb") as val_f:
        for path, n in zip(paths, counts, strict=True):
            n_val = round(n * options.val_fraction) if n > 1 else 0
            n_train = n - n_val
            written = 0
            for chunk in iter_preprocessed(path, options.corpus, options.lowercase, options.normalize):
                ids, token_chars = _encode_chunk(tokenizer, chunk)
                cut = max(0, min(len(ids), n_train - written))
                train_f.write(ids[:cut].astype(dtype).tobytes())
                val_f.write(ids[cut:].astype(dtype).tobytes())
                chars["train"] += int(token_chars[:cut].sum())
                chars["val"] += int(token_chars[cut:].sum())
                written += len(ids)
            files_meta.append({"path": str(path), "tokens": n, "train_tokens": n_train, "val_tokens": n_val})
        for f in (train_f, val_f):
            f.flush()
            os.fsync(f.fileno())
    meta = {
        "cache_version": CACHE_VERSION,
        "dtype": np.dtype(dtype).name,
        "train_chars": chars["train"],
        "val_chars": chars["val"],
        "files": files_meta,
        "prompts": sentences.sentences,
        "tokenizer": tokenizer.to_dict(),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    shutil.rmtree(directory, ignore_errors=True)
    directory.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, directory)


def _count_tokens(path: Path, tokenizer: Tokenizer, options: DataOptions) -> int:
    chunks = iter_preprocessed(path, options.corpus, options.lowercase, options.normalize)
    return sum(len(tokenizer.encode_preprocessed(chunk)) for chunk in chunks)


def _encode_chunk(tokenizer: Tokenizer, text: str) -> tuple[np.ndarray, np.ndarray]:
    """Ids of a preprocessed chunk and the characters each token stands for (<unk> included)."""
    if tokenizer.level == "char":
        ids = tokenizer.encode_preprocessed(text)
        return ids, np.ones(len(ids), dtype=np.int64)
    if tokenizer.level == "bpe":  # a character split over tokens counts in the token it starts in
        ids = tokenizer.encode_preprocessed(text)
        return ids, tokenizer.token_lengths()[ids]
    tokens = tokenizer.split(text)
    return tokenizer.ids_of(tokens), np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))


def _open(directory: Path) -> EncodedCorpus:
    try:
        meta = json.loads((directory / "meta.json").read_text(encoding="utf-8"))
        dtype = np.dtype(meta["dtype"])
        train = _memmap(directory / "train.bin", dtype)
        val = _memmap(directory / "val.bin", dtype)
    except (OSError, ValueError, KeyError) as e:
        raise TextweaverError(f"{directory}: the encoded-corpus cache is damaged ({e}): delete that folder") from None
    return EncodedCorpus(
        tokenizer=make_tokenizer(meta["tokenizer"]),
        train=train,
        val=val,
        train_chars=int(meta["train_chars"]),
        val_chars=int(meta["val_chars"]),
        prompts=list(meta["prompts"]),
        files=list(meta["files"]),
        key=directory.name,
        directory=directory,
    )


def _memmap(path: Path, dtype: np.dtype[Any]) -> np.ndarray:
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


@dataclass(frozen=True)
class EncodedFile:
    ids: np.ndarray  # memory-mapped from the scratch file
    chars: int  # characters the ids stand for
    unknown: int  # <unk> tokens among them


def encode_file(path: Path, tokenizer: Tokenizer, options: CorpusOptions, scratch: Path) -> EncodedFile:
    """All ids of one file with the tokenizer's normalisation, written to ``scratch`` chunk by chunk and
    memory-mapped from it: memory stays bounded by one chunk whatever the size of the file."""
    chars = unknown = count = 0
    with scratch.open("wb") as f:
        for chunk in iter_preprocessed(path, options, tokenizer.lowercase, tokenizer.normalize):
            ids, token_chars = _encode_chunk(tokenizer, chunk)
            ids.astype(tokenizer.id_dtype).tofile(f)
            chars += int(token_chars.sum())
            unknown += int(np.count_nonzero(ids == 0))
            count += len(ids)
    if count == 0:
        raise TextweaverError(f"{path}: the file is empty: give a file that contains text")
    return EncodedFile(_memmap(scratch, np.dtype(tokenizer.id_dtype)), chars, unknown)
