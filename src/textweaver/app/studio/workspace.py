"""The studio's workspace on disk: uploaded texts and runs (app/studio/trainer.py trains them).

    WORKSPACE/texts/ID/text.txt     a text as UTF-8, under a name the studio makes (never the client's)
    WORKSPACE/texts/ID/meta.json    its display name and statistics
    WORKSPACE/runs/NAME/            a run folder, as ``textweaver train --out`` writes it
    WORKSPACE/runs/NAME/studio.json what the studio asked for (texts, budget, model) and the run's status
    WORKSPACE/runs/NAME/downloads/  the latest download of each kind (app/studio/publish.py's cached_export)

Everything the studio knows is on disk: a restarted studio lists every run and offers to resume the ones a
previous studio left unfinished.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import shutil
import threading
import time
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio

from textweaver.config import NO_SOURCE, PRESETS, parse_duration
from textweaver.data.corpus import BUILTIN_CORPORA, BUILTIN_PREFIX, CorpusOptions, builtin_corpus_path, iter_text
from textweaver.errors import TextweaverError
from textweaver.run.log import read_metrics, write_atomically

DEFAULT_WORKSPACE = "textweaver-studio"
MAX_UPLOAD = "200MB"  # per text (--max-upload): a long novel is 2-10 MB
MAX_NAME_CHARS = 64
# letters (any script: 西游记-1), digits, '.', '_', '-', not first '.', '_' or '-': a safe folder name
RUN_NAME = re.compile(r"[^\W_][\w.-]*")
TEXT_ID = re.compile(r"t[0-9a-f]{12}")
STUDIO_FILE = "studio.json"
LOG_FILE = "studio.log"  # the training process's stderr
MODELS = ["auto", *(f"{kind} {preset}" for kind, table in PRESETS.items() for preset in table)]
BASES = ["builtin:english", "builtin:chinese", "builtin:shakespeare"]  # "start from" choices (fine-tuning)
# interrupted: the studio ended while the run was queued or running
UNFINISHED = ("queued", "running")
INTERRUPTED = "the studio stopped during this run: resume it"


@dataclass
class TextInfo:
    id: str
    name: str  # for display only: the client's file name, or "pasted text"
    bytes: int
    characters: int
    distinct: int
    lines: int
    script: str  # the script most of its letters belong to: Latin, Han, Cyrillic ...
    encoding: str


@dataclass
class RunRequest:
    texts: list[str]  # text ids, or builtin:NAME
    budget: str = "5m"  # the CLI's duration syntax
    model: str = "auto"  # auto, or "KIND PRESET" (MODELS)
    # fine-tune this base (BASES) or another run of the workspace; none: random weights; None: train's default
    # (the base of the text's language for prose, finetune.default_source)
    init_from: str | None = None
    name: str | None = None  # default: made from the first text's name and the time
    eval_every: int | None = None  # steps between evaluations (the live chart's points); None: the CLI's


@dataclass
class RunRecord:
    """``studio.json``: what was asked and where it stands."""

    name: str
    texts: list[str]
    corpus: list[str]  # display names of the texts
    budget: str
    model: str
    init_from: str | None
    status: str = "created"  # then queued -> running -> done | stopped | failed, or interrupted
    message: str = ""
    created: float = field(default_factory=time.time)
    eval_every: int | None = None


class Workspace:
    def __init__(self, root: Path, max_upload: int) -> None:
        self.root = root.absolute()  # the trainings run in their run folders: paths must not be relative
        self.max_upload = max_upload
        self.texts_dir, self.runs_dir = self.root / "texts", self.root / "runs"
        for d in (self.texts_dir, self.runs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    # ----- texts
    async def add_text(self, name: str, chunks: AsyncIterator[bytes], encoding: str = "utf-8") -> TextInfo:
        """Store an uploaded text streamed in ``chunks`` (at most ``max_upload`` bytes), check it as the
        CLI would and return its statistics; a refused text leaves nothing behind. The disk writes and
        the decoding run in worker threads: the studio answers other requests meanwhile."""
        name = display_name(name)
        options = CorpusOptions(encoding=encoding)  # a bad encoding is refused before the body is read
        text_id = "t" + secrets.token_hex(6)
        folder = self.texts_dir / f".{text_id}.partial"
        folder.mkdir()
        try:
            raw = folder / "upload.bin"
            size = 0
            with raw.open("wb") as f:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_upload:
                        raise TooLarge(self.max_upload)
                    await anyio.to_thread.run_sync(f.write, chunk)
            info = await anyio.to_thread.run_sync(_store_text, raw, folder / "text.txt", text_id, name, size, options)
            raw.unlink()
            _write_json(folder / "meta.json", asdict(info))
            folder.rename(self.texts_dir / text_id)
            return info
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def texts(self) -> list[TextInfo]:
        found = []
        for meta in sorted(self.texts_dir.glob("t*/meta.json")):
            with contextlib.suppress(OSError, ValueError, TypeError):
                found.append(TextInfo(**json.loads(meta.read_text(encoding="utf-8"))))
        return found

    def text_path(self, text: str) -> tuple[Path, str]:
        """The file of a text id or ``builtin:NAME``, and its display name."""
        if text.startswith(BUILTIN_PREFIX) and text[len(BUILTIN_PREFIX) :] in BUILTIN_CORPORA:
            return builtin_corpus_path(text[len(BUILTIN_PREFIX) :]), text
        if TEXT_ID.fullmatch(text) and (self.texts_dir / text / "text.txt").is_file():
            meta = json.loads((self.texts_dir / text / "meta.json").read_text(encoding="utf-8"))
            return self.texts_dir / text / "text.txt", str(meta["name"])
        raise NotFound(f"text {text!r}: no such text in this workspace: upload it first")

    def delete_text(self, text: str) -> None:
        self.text_path(text)
        if text.startswith(BUILTIN_PREFIX):
            raise TextweaverError(f"{text} is built in: it cannot be deleted")
        shutil.rmtree(self.texts_dir / text)

    # ----- runs
    def run_dir(self, name: str) -> Path:
        check_run_name(name)
        path = self.runs_dir / name
        if not (path / STUDIO_FILE).is_file():
            raise NotFound(f"run {name!r}: no such run in this workspace")
        return path

    def record(self, name: str) -> RunRecord:
        path = self.run_dir(name) / STUDIO_FILE
        return RunRecord(**json.loads(path.read_text(encoding="utf-8")))

    def save_record(self, record: RunRecord) -> None:
        _write_json(self.runs_dir / record.name / STUDIO_FILE, asdict(record))

    def new_run(self, request: RunRequest) -> RunRecord:
        """Check a training request and create its run folder (status created)."""
        if not request.texts:
            raise TextweaverError("no text chosen: upload or paste a text, or pick builtin:shakespeare")
        paths = [self.text_path(t) for t in request.texts]
        parse_duration(request.budget, "time budget")
        if request.model not in MODELS:
            raise TextweaverError(f"unknown model {request.model!r}: choose one of {', '.join(MODELS)}")
        if request.init_from not in (None, NO_SOURCE):
            if request.model != "auto":
                raise TextweaverError("a fine-tuned run keeps its base's model: choose model auto to start from a base")
            if request.init_from not in BASES:
                self.run_dir(request.init_from)
        with self.lock:
            name = request.name or self._free_name(paths[0][1])
            check_run_name(name)
            folder = self.runs_dir / name
            if folder.exists():
                raise Conflict(f"run {name!r} already exists: choose another name")
            folder.mkdir()
            record = RunRecord(name, list(request.texts), [p[1] for p in paths], request.budget, request.model,
                               request.init_from, eval_every=request.eval_every)  # fmt: skip
            self.save_record(record)
        return record

    def runs(self) -> list[dict[str, Any]]:
        """Every run with what the run list shows, newest first."""
        found = []
        for path in self.runs_dir.glob(f"*/{STUDIO_FILE}"):
            with contextlib.suppress(OSError, ValueError, TypeError, NotFound):
                found.append(self.summary(path.parent.name))
        return sorted(found, key=lambda r: -r["created"])

    def summary(self, name: str) -> dict[str, Any]:
        record = self.record(name)
        records, _ = read_metrics(self.runs_dir / name)
        last = records[-1] if records else {}
        bpc = [r["val_bpc"] for r in records if isinstance(r.get("val_bpc"), int | float)]
        return {
            **asdict(record),
            "steps": last.get("step", 0),
            "elapsed_s": last.get("elapsed_s", 0.0),
            "budget_s": parse_duration(record.budget, "time budget"),
            "best_val_bpc": min(bpc) if bpc else None,
            "has_model": has_model(self.runs_dir / name),
        }

    def rename(self, name: str, new: str) -> RunRecord:
        check_run_name(new)
        with self.lock:
            record = self.record(name)
            if record.status in UNFINISHED:
                raise Conflict(f"run {name!r} is {record.status}: stop it before renaming")
            if (self.runs_dir / new).exists():
                raise Conflict(f"run {new!r} already exists: choose another name")
            (self.runs_dir / name).rename(self.runs_dir / new)
            record.name = new
            self.save_record(record)
        return record

    def delete(self, name: str) -> None:
        with self.lock:
            record = self.record(name)
            if record.status in UNFINISHED:
                raise Conflict(f"run {name!r} is {record.status}: stop it before deleting")
            trash = self.runs_dir / f".{name}.deleting"
            (self.runs_dir / name).rename(trash)  # gone from the list at once, even if removal is slow
            shutil.rmtree(trash, ignore_errors=True)

    def _free_name(self, text_name: str) -> str:
        stem = re.sub(r"[^\w.-]+", "-", Path(text_name).stem.removeprefix(BUILTIN_PREFIX)).strip("-._")
        stem = (stem or "run")[:40]
        for n in range(1, 10_000):
            name = f"{stem}-{n}"
            if not (self.runs_dir / name).exists():
                return name
        raise Conflict("too many runs with this name: choose a name")


def has_model(run_dir: Path) -> bool:
    """Whether the run has saved a checkpoint (best/ or last/) to generate or export from."""
    return any((run_dir / d / "config.json").is_file() for d in ("best", "last"))


def parse_size(text: str, option: str = "--max-upload") -> int:
    """Bytes from ``200MB``, ``1.5GB``, ``512KB`` or a plain number of bytes (1 MB = 2**20 bytes)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]?)B?\s*", text.upper())
    if not m or float(m.group(1)) * 1024 ** " KMG".index(m.group(2) or " ") < 1:
        raise TextweaverError(f"{option}: cannot read {text!r} as a size: use e.g. 200MB, 1GB or 500KB")
    return int(float(m.group(1)) * 1024 ** " KMG".index(m.group(2) or " "))


def check_run_name(name: str) -> None:
    if not (RUN_NAME.fullmatch(name) and len(name) <= MAX_NAME_CHARS):
        raise TextweaverError(
            f"bad run name {name[:80]!r}: use up to {MAX_NAME_CHARS} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def display_name(name: str) -> str:
    """A client's file name for display: its last path part, printable, at most 100 characters."""
    base = re.split(r"[\\/]", name)[-1]
    base = "".join(c for c in base if unicodedata.category(c)[0] != "C").strip()
    return base[:100] or "text"


def _store_text(raw: Path, out: Path, text_id: str, name: str, size: int, options: CorpusOptions) -> TextInfo:
    """Decode ``raw`` as the CLI would (the same one-line errors, naming the file as the client did)
    into UTF-8 ``out``, counting what the Text panel shows."""
    if size == 0:
        raise TextweaverError(f"{name}: the file is empty: choose a text file with some text in it")
    chars = lines = 0
    seen: set[str] = set()
    scripts: dict[str, int] = {}
    last = ""
    try:
        with out.open("w", encoding="utf-8", newline="") as f:
            for chunk in iter_text(raw, options):
                f.write(chunk)
                chars += len(chunk)
                lines += chunk.count("\n")
                seen.update(chunk)
                for c in chunk[:: max(1, len(chunk) // 20000)]:  # a sample is enough to name the script
                    if c.isalpha():
                        script = _script(c)
                        scripts[script] = scripts.get(script, 0) + 1
                last = chunk[-1]
    except TextweaverError as e:
        raise TextweaverError(str(e).replace(str(raw), name)) from None
    if chars == 0 or not any(not c.isspace() for c in seen):
        raise TextweaverError(f"{name}: the file holds no text: choose a text file with some text in it")
    used = options.encoding
    return TextInfo(text_id, name, size, chars, len(seen), lines + (last != "\n"),
                    max(scripts, key=lambda s: scripts[s]) if scripts else "none", used)  # fmt: skip


def _script(c: str) -> str:
    """The script of a letter, from its Unicode name (CJK UNIFIED IDEOGRAPH -> Han, LATIN ... -> Latin)."""
    name = unicodedata.name(c, "")
    if name.startswith("CJK"):
        return "Han"
    first = name.split(" ", 1)[0]
    return {"HIRAGANA": "Kana", "KATAKANA": "Kana", "HANGUL": "Hangul"}.get(first, first.title() or "other")


def _write_json(path: Path, data: Any) -> None:
    write_atomically(path, json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"))


class NotFound(TextweaverError):
    """404: no such text or run."""


class Conflict(TextweaverError):
    """409: the run exists, or is busy."""


class TooLarge(TextweaverError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is larger than the upload limit of {limit / 2**20:g} MB (--max-upload)")
