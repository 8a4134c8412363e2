"""The studio's workspace on disk: uploaded texts, runs, and the queue that trains them one at a time.

    WORKSPACE/texts/ID/text.txt     a text as UTF-8, under a name the studio makes (never the client's)
    WORKSPACE/texts/ID/meta.json    its display name and statistics
    WORKSPACE/runs/NAME/            a run folder, as ``textweaver train --out`` writes it
    WORKSPACE/runs/NAME/studio.json what the studio asked for (texts, budget, model) and the run's status
    WORKSPACE/runs/NAME/downloads/  the latest download of each kind (app/studio/publish.py's cached_export)

A training is a separate ``python -m textweaver train ... --resume`` process (the CLI's own code path),
so a crash or an out-of-memory kill ends that process, never the studio; its last error line becomes
the run's message. Everything the studio knows is on disk: a restarted studio lists every run and
offers to resume the ones a previous studio left unfinished.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import unicodedata
from collections import deque
from collections.abc import AsyncIterator, Iterable
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


class Trainer:
    """Trains the queued runs one at a time (``parallel`` at most), each in its own process."""

    def __init__(self, workspace: Workspace, parallel: int = 1) -> None:
        self.workspace = workspace
        self.parallel = parallel
        self.queue: deque[str] = deque()
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping: set[str] = set()
        self.cond = threading.Condition(workspace.lock)
        self.closed = False
        for record in self._records():  # a previous studio ended while these were waiting or training
            if record.status in UNFINISHED:
                record.status, record.message = "interrupted", INTERRUPTED
                workspace.save_record(record)
        self.thread = threading.Thread(target=self._loop, name="textweaver-trainer", daemon=True)
        self.thread.start()

    def submit(self, name: str, budget: str | None = None) -> None:
        """Queue a new run, or resume one (with a new total ``budget`` if given)."""
        with self.cond:
            record = self.workspace.record(name)
            if record.status in UNFINISHED:
                raise Conflict(f"run {name!r} is already {record.status}")
            if budget is not None:
                parse_duration(budget, "time budget")
                record.budget = budget
            record.status, record.message = "queued", ""
            self.workspace.save_record(record)
            self.queue.append(name)
            self.cond.notify_all()

    def stop(self, name: str) -> None:
        """A running training saves a checkpoint and ends (SIGTERM, as Ctrl-C); a queued one leaves the queue."""
        with self.cond:
            record = self.workspace.record(name)
            if name in self.queue:
                self.queue.remove(name)
                record.status, record.message = "stopped", "taken out of the queue"
                self.workspace.save_record(record)
            elif name in self.running:
                self.stopping.add(name)
                self.running[name].send_signal(signal.SIGTERM)
            else:
                raise Conflict(f"run {name!r} is not training (it is {record.status})")

    def position(self, name: str) -> int | None:
        with self.cond:
            return list(self.queue).index(name) + 1 if name in self.queue else None

    def close(self, timeout: float = 30.0) -> None:
        """Stop every training (each saves its checkpoint) and the queue; the runs show as interrupted."""
        with self.cond:
            self.closed = True
            procs = list(self.running.values())
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            self.cond.notify_all()
        for proc in procs:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.thread.join(timeout)

    def _records(self) -> Iterable[RunRecord]:
        for path in self.workspace.runs_dir.glob(f"*/{STUDIO_FILE}"):
            with contextlib.suppress(OSError, ValueError, TypeError):
                yield RunRecord(**json.loads(path.read_text(encoding="utf-8")))

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self.closed and (not self.queue or len(self.running) >= self.parallel):
                    self.cond.wait()
                if self.closed:
                    return
                name = self.queue.popleft()
                try:
                    proc = self._start(name)
                except (OSError, TextweaverError, NotFound) as e:
                    self._finish(name, "failed", f"could not start the training: {e}")
                    continue
                self.running[name] = proc
            threading.Thread(target=self._wait, args=(name, proc), daemon=True).start()

    def _start(self, name: str) -> subprocess.Popen[bytes]:
        record = self.workspace.record(name)
        run_dir = self.workspace.run_dir(name)
        command = train_command(self.workspace, record, run_dir)
        record.status = "running"
        self.workspace.save_record(record)
        log = (run_dir / LOG_FILE).open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # its own session: a Ctrl-C in the studio's terminal reaches the studio, which stops each training
        # (close) and marks it interrupted, instead of each training ending on its own as if it were done
        with log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=run_dir, env=env, start_new_session=True)  # fmt: skip

    def _wait(self, name: str, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        with self.cond:
            self.running.pop(name, None)
            stopped = name in self.stopping
            self.stopping.discard(name)
            if self.closed:
                status, message = "interrupted", INTERRUPTED
            elif stopped and code == -signal.SIGTERM:  # stopped while starting, before it could save anything
                status, message = "stopped", "stopped before its first step: resume starts it"
            elif code == 0:
                status, message = ("stopped", "stopped: resume continues it") if stopped else ("done", "")
                if not stopped and "nothing to do" in last_line(self.workspace.runs_dir / name / LOG_FILE):
                    message = "it already reached its time budget: resume it with a larger one"
            else:
                status, message = "failed", last_error(self.workspace.runs_dir / name / LOG_FILE, code)
                with contextlib.suppress(NotFound, OSError, ValueError):  # the texts by their names, not their files
                    for text in self.workspace.record(name).texts:
                        path, shown = self.workspace.text_path(text)
                        message = message.replace(str(path), shown)
            self._finish(name, status, message)
            self.cond.notify_all()

    def _finish(self, name: str, status: str, message: str) -> None:
        with contextlib.suppress(NotFound, OSError, ValueError):
            record = self.workspace.record(name)
            record.status, record.message = status, message
            self.workspace.save_record(record)


def train_command(workspace: Workspace, record: RunRecord, run_dir: Path) -> list[str]:
    """``textweaver train`` for a run: the same command a user would type (``--resume`` continues a run
    that has a checkpoint and starts one that has none)."""
    command = [sys.executable, "-m", "textweaver", "train"]
    command += [str(workspace.text_path(t)[0]) for t in record.texts]
    command += ["--out", str(run_dir), "--max-time", record.budget, "--resume", "--no-progress"]
    if record.model != "auto":
        kind, preset = record.model.split()
        command += ["--model", kind, "--preset", preset]
    if record.init_from is not None:
        base = record.init_from if record.init_from in (*BASES, NO_SOURCE) else str(workspace.run_dir(record.init_from))
        command += ["--init-from", base]
    if record.eval_every is not None:
        command += ["--eval-every", str(record.eval_every)]
    return command


def _log_lines(log: Path) -> list[str]:
    try:
        return log.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []


def last_line(log: Path, lines: list[str] | None = None) -> str:
    """The last non-empty line of a training's log (``lines``, if already read)."""
    return next((line.strip() for line in reversed(_log_lines(log) if lines is None else lines) if line.strip()), "")


def last_error(log: Path, code: int) -> str:
    """One line for a failed training: its ``textweaver: error:`` line, or what killed it."""
    lines = _log_lines(log)
    for line in reversed(lines):
        if line.startswith("textweaver: error: "):
            return line.removeprefix("textweaver: error: ")
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        why = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"the training process was killed by {name}{why}: resume continues from the last checkpoint"
    tail = last_line(log, lines)
    return f"the training process failed (exit status {code}){': ' + tail[:200] if tail else ''}"


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
