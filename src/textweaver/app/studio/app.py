"""``textweaver studio``: train, watch, generate and publish from one local web page.

The page (web/studio.html) talks to this JSON API; the workspace on disk (``app/studio/workspace.py``) holds the
texts and runs, and trainings run as separate ``textweaver train`` processes, one at a time.

- ``GET /api/studio``: the choices (models, bases, built-in texts) and limits
- ``GET /api/texts``, ``POST /api/texts?name=N&encoding=E`` (the file as the raw body, streamed to
  disk), ``DELETE /api/texts/ID``
- ``GET /api/runs``: every run and the queue; ``POST /api/runs``: a training (queued)
- ``GET /api/runs/NAME``, ``PATCH`` (rename), ``DELETE``; ``POST /api/runs/NAME/stop`` and ``/resume``
- ``GET /api/runs/NAME/metrics``, ``/samples``; ``GET /api/runs/NAME/events``: server-sent events
  (``metrics``, ``sample``, ``status``) as the training writes them
- ``POST /api/runs/NAME/generate/stream``: a sample as server-sent events (as ``serve``)
- ``GET /api/runs/NAME/download?format=web|onnx&quantize=``: the exported page as a zip, or model.onnx
  (exported once per checkpoint, then served again from the run's ``downloads/``)
- ``GET /api/runs/NAME/report``: the run report (``textweaver report``), made as the run stands now
- ``GET /openapi.json``: the schema (no ``/docs`` page: Swagger UI would load from a CDN)

Bad input gets a 4xx and a one-line ``message``. It listens on 127.0.0.1 unless told otherwise, answers
only to the loopback names and ``--host`` (``server.TrustedHosts``: no DNS rebinding), and only its own
page may use the API (:class:`SameOrigin`). Downloads are named in any script (RFC 6266).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
import weakref
import zipfile
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from textweaver import __version__
from textweaver.app.api import TextModel, load
from textweaver.app.serve import (
    CSP,
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_BODY_BYTES,
    TIMEOUT_S,
    EventStream,
    GenerationSlots,
    StreamParams,
    TrustedHosts,
    check_port,
    content_disposition,
    error_response,
    generation_request,
    run_app,
    sample_events,
)
from textweaver.app.studio.workspace import (
    BASES,
    DEFAULT_WORKSPACE,
    MAX_UPLOAD,
    MODELS,
    UNFINISHED,
    Conflict,
    NotFound,
    RunRequest,
    TooLarge,
    Trainer,
    Workspace,
    has_model,
    parse_size,
)
from textweaver.data.corpus import BUILTIN_CORPORA, BUILTIN_PREFIX
from textweaver.errors import TextweaverError
from textweaver.export.onnx import MODEL_FILE, QUANTIZE, WEB_DIR
from textweaver.run import log as runlog
from textweaver.run.log import read_metrics

DEFAULT_BUDGET = "5m"
STUDIO_FILES = {
    "studio.html": "text/html", "studio.js": "text/javascript", "chart.js": "text/javascript",
    "style.css": "text/css", "studio.css": "text/css",
    "vendor/uplot/uPlot.iife.min.js": "text/javascript", "vendor/uplot/uPlot.min.css": "text/css",
}  # fmt: skip
EVENT_POLL_S = 0.5  # how often the server looks for new metrics while a run trains (the page is pushed to)
UPLOAD_PATH = "/api/texts"
# models kept loaded for generation, least recently used out first: each holds its weights in memory (a large
# word-level model a few hundred MB), and the page generates from one run at a time, so a few cover going back
# and forth between runs
MAX_MODELS = 3
DOWNLOADS = "downloads"  # in a run folder: the latest export of each kind (format and weights)


class RunParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, max_length=64, description="Text ids (GET /api/texts) or builtin:NAME.")
    budget: str = Field(DEFAULT_BUDGET, max_length=32, description="Time budget: 30s, 5m, 1h30m.")
    model: str = Field("auto", max_length=32, description="auto, or KIND PRESET such as 'lstm small'.")
    init_from: str | None = Field(None, max_length=80, description="Fine-tune a base model or another run.")
    name: str | None = Field(None, max_length=80, description="Run name; default: from the text's name.")
    eval_every: int | None = Field(
        None, ge=1, description="Steps between evaluations (each adds a chart point); default: the CLI's."
    )


class ResumeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget: str | None = Field(None, max_length=32, description="A new total time budget (default: the run's).")


class RenameParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=80)


class BodyLimits:
    """Uploads may be ``upload`` bytes (streamed to disk), every other request body ``other``: beyond, 413
    and one line, before anything is read when the length is declared, else as soon as it is exceeded."""

    def __init__(self, app: ASGIApp, upload: int, other: int) -> None:
        self.app = app
        self.limits = {True: upload, False: other}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        is_upload = scope["path"] == UPLOAD_PATH
        limit = self.limits[is_upload]
        error = TooLarge(limit) if is_upload else BodyTooLarge(f"request body larger than {limit:,} bytes")
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > limit:
            return await error_response(str(error), 413)(scope, receive, send)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise error
            return message

        await self.app(scope, counted, send)


class SameOrigin:
    """The API is for the studio's own page: a web site the user visits must not train, stop, delete,
    or start exports and reports through the user's browser. Its requests carry a foreign Origin or
    ``Sec-Fetch-Site: cross-site`` (or ``same-site``: another port of this machine); 403 and one line
    then. Every ``/api/`` request is checked, and any request that would change something. (A site
    that rebinds its DNS to this machine is same-origin: ``TrustedHosts`` refuses its Host first.)"""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            scope["path"].startswith("/api/") or scope["method"] not in ("GET", "HEAD", "OPTIONS")
        ):
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            origin = headers.get("origin")
            foreign = origin is not None and urlsplit(origin).netloc != headers.get("host")
            if foreign or headers.get("sec-fetch-site") in ("cross-site", "same-site"):
                message = "cross-site request refused: use the studio's own page"
                return await error_response(message, 403)(scope, receive, send)
        await self.app(scope, receive, send)


class BodyTooLarge(TextweaverError):
    """413: a request body beyond its limit."""


class ModelCache:
    """The runs' models for generation, each loaded once per checkpoint (a training that saves a newer one
    replaces it); at most ``size`` stay loaded, the least recently used goes first."""

    def __init__(self, loader: Callable[[Path], TextModel], size: int = MAX_MODELS) -> None:
        self.loader, self.size = loader, size
        self.models: OrderedDict[str, tuple[float, TextModel]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, name: str, run_dir: Path) -> TextModel:
        if not has_model(run_dir):
            raise Conflict(f"run {name!r} has no checkpoint yet: wait for its first evaluation")
        stamp = max((run_dir / d / "config.json").stat().st_mtime for d in ("best", "last")
                    if (run_dir / d / "config.json").is_file())  # fmt: skip
        with self.lock:
            cached = self.models.pop(name, None)
            if cached is None or cached[0] != stamp:
                cached = (stamp, self.loader(run_dir))
            self.models[name] = cached  # now the most recently used
            while len(self.models) > self.size:
                self.models.popitem(last=False)
            return cached[1]

    def drop(self, name: str) -> None:
        with self.lock:
            self.models.pop(name, None)


def create_app(
    workspace: str | Path, max_upload: str = MAX_UPLOAD, parallel: int = 1, host: str = DEFAULT_HOST
) -> FastAPI:
    """The studio for ``workspace`` (created if missing); trainings run ``parallel`` at a time. It answers
    requests addressed to a loopback name or ``host`` (the address it listens on)."""
    limit = parse_size(max_upload)
    space = Workspace(Path(workspace), limit)
    trainer = Trainer(space, parallel)
    slots = GenerationSlots()
    models = ModelCache(load)
    exporting = threading.Lock()  # one export at a time: each takes the CPU for seconds
    # no docs_url / redoc_url pages: Swagger UI and ReDoc would load from a CDN into the studio's origin
    app = FastAPI(title="textweaver studio", version=__version__, description="Train, watch, generate, publish.",
                  docs_url=None, redoc_url=None)  # fmt: skip
    app.add_middleware(BodyLimits, upload=limit, other=MAX_BODY_BYTES)
    app.add_middleware(SameOrigin)
    app.add_middleware(TrustedHosts, host=host)  # added last: it runs first
    app.state.workspace, app.state.trainer, app.state.models = space, trainer, models
    weakref.finalize(app, trainer.close)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        where = [".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body" for e in errors]
        return error_response(
            "; ".join(f"{w}: {e.get('msg', 'invalid')}" for w, e in zip(where, errors, strict=True)), 422
        )

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(str(exc.detail), exc.status_code, exc.headers)

    @app.exception_handler(TextweaverError)
    async def _refused(request: Request, exc: TextweaverError) -> JSONResponse:
        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, Conflict) else 422
        return error_response(str(exc), 413 if isinstance(exc, TooLarge | BodyTooLarge) else status)

    @app.get("/api/studio", summary="The choices and limits the page offers")
    def studio() -> dict[str, Any]:
        return {
            "version": __version__, "models": MODELS, "bases": BASES, "budget": DEFAULT_BUDGET,
            "builtin_texts": [BUILTIN_PREFIX + n for n in BUILTIN_CORPORA], "max_upload": limit,
            "quantize": ["fp32", *QUANTIZE],
        }  # fmt: skip

    @app.get("/api/texts", summary="The uploaded texts with their statistics")
    def texts() -> list[dict[str, Any]]:
        return [asdict(t) for t in space.texts()]

    @app.post(UPLOAD_PATH, status_code=201, summary="Upload one text file (the raw file as the body)")
    async def upload(request: Request, name: str = "text.txt", encoding: str = "utf-8") -> dict[str, Any]:
        if len(name) > 1000 or len(encoding) > 40:
            raise TextweaverError("name or encoding too long")
        info = await space.add_text(name, request.stream(), encoding)
        return asdict(info)

    @app.delete("/api/texts/{text_id}", status_code=204)
    def delete_text(text_id: str) -> Response:
        space.delete_text(text_id)
        return Response(status_code=204)

    @app.get("/api/runs", summary="Every run of the workspace, newest first, and the queue")
    def runs() -> dict[str, Any]:
        return {"runs": space.runs(), "queue": list(trainer.queue), "running": list(trainer.running)}

    @app.post("/api/runs", status_code=201, summary="Start a training (it waits in the queue if another runs)")
    def start(params: RunParams) -> dict[str, Any]:
        record = space.new_run(RunRequest(**params.model_dump()))
        trainer.submit(record.name)
        return _summary(record.name)

    @app.get("/api/runs/{name}", summary="One run: status, progress, best loss, its recipe")
    def run(name: str) -> dict[str, Any]:
        return _summary(name)

    @app.patch("/api/runs/{name}", summary="Rename a run")
    def rename(name: str, params: RenameParams) -> dict[str, Any]:
        space.rename(name, params.name)
        models.drop(name)
        return _summary(params.name)

    @app.delete("/api/runs/{name}", status_code=204, summary="Delete a run and its files")
    def delete(name: str) -> Response:
        models.drop(name)
        space.delete(name)
        return Response(status_code=204)

    @app.post("/api/runs/{name}/stop", summary="Stop: a training saves a checkpoint and ends")
    def stop(name: str) -> dict[str, Any]:
        trainer.stop(name)
        return _summary(name)

    @app.post("/api/runs/{name}/resume", summary="Resume a stopped, interrupted or failed run")
    def resume(name: str, params: ResumeParams | None = None) -> dict[str, Any]:
        trainer.submit(name, params.budget if params else None)
        return _summary(name)

    @app.get("/api/runs/{name}/metrics", summary="Every metrics record of a run")
    def metrics(name: str) -> list[dict[str, Any]]:
        return read_metrics(space.run_dir(name))[0]

    @app.get("/api/runs/{name}/samples", summary="The samples written at each evaluation")
    def samples(name: str) -> list[dict[str, Any]]:
        return read_samples(space.run_dir(name))

    @app.get("/api/runs/{name}/report", summary="The run's report: one self-contained HTML file")
    def run_report(name: str) -> Response:
        from textweaver.report.report import render_report

        page = render_report(space.run_dir(name))  # made now: a run still training gets its latest state
        disposition = content_disposition(f"{name}-report.html")
        return Response(page, media_type="text/html", headers={"Content-Disposition": disposition})

    @app.get("/api/runs/{name}/events", summary="Metrics, samples and status as server-sent events")
    async def events(name: str, request: Request) -> Response:
        run_dir = space.run_dir(name)
        return StreamingResponse(_run_events(name, run_dir, request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    @app.post("/api/runs/{name}/generate/stream", summary="Generate one sample from a run as server-sent events")
    def generate(name: str, params: StreamParams) -> Response:
        model = models.get(name, space.run_dir(name))
        request = generation_request(model, params, 1)
        deadline = time.monotonic() + TIMEOUT_S
        ticket = slots.take_worker(deadline)
        if ticket is None:
            return error_response(
                "busy: too many generations are running; retry in a second", 503, {"Retry-After": "1"}
            )
        stream = sample_events(model, request, ticket, deadline, TIMEOUT_S)
        weakref.finalize(stream, ticket.release)
        return EventStream(stream, media_type="text/event-stream", headers={"Cache-Control": "no-store"})

    @app.get("/api/runs/{name}/download", summary="The run as a web page (zip) or an ONNX model")
    def download(name: str, format: str = "web", quantize: str = "fp32") -> Response:
        run_dir = space.run_dir(name)
        if format not in ("web", "onnx"):
            raise TextweaverError(f"unknown format {format!r}: use web (a zip of the page) or onnx (model.onnx)")
        if quantize not in ("fp32", *QUANTIZE) or (format == "onnx" and quantize != "fp32"):
            raise TextweaverError(
                f"quantize must be fp32, {' or '.join(QUANTIZE)} (the web page only), got {quantize!r}"
            )
        if not has_model(run_dir):
            raise Conflict(f"run {name!r} has no checkpoint yet: train it a little first")
        with exporting:
            path = cached_export(run_dir, name, format, quantize)
        filename, media_type = (f"{name}.onnx", "application/octet-stream") if format == "onnx" else (
            f"{name}-web.zip", "application/zip")  # fmt: skip
        return FileResponse(path, media_type=media_type, headers={"Content-Disposition": content_disposition(filename)})

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return _ui_file("studio.html")

    @app.get("/{path:path}", include_in_schema=False)
    def ui_file(path: str) -> Response:
        if path not in STUDIO_FILES:
            raise HTTPException(status_code=404, detail=f"{path}: not found")
        return _ui_file(path)

    def _summary(name: str) -> dict[str, Any]:
        summary = space.summary(name)
        summary["queue_position"] = trainer.position(name)
        summary["recipe"] = _recipe(space.runs_dir / name)
        return summary

    async def _run_events(name: str, run_dir: Path, request: Request) -> AsyncIterator[str]:
        """Everything recorded so far, then what the training adds, until the run stops training."""
        offset, samples_size, samples_sent, status = 0, -1, 0, None
        while True:
            records, offset = read_metrics(run_dir, offset)
            for record in records:
                yield _event("metrics", record)
            size = _size(run_dir / runlog.SAMPLES)
            if size != samples_size:  # samples.jsonl grows only at evaluations: read it again only then
                samples_size, found = size, read_samples(run_dir)
                for sample in found[samples_sent:]:
                    yield _event("sample", sample)
                samples_sent = len(found)
            try:
                current = space.record(name)
                if (current.status, current.message) != status:
                    status = current.status, current.message
                    yield _event("status", _summary(name))
            except NotFound:
                yield _event("status", {"status": "deleted", "message": "the run was deleted"})
                return
            if current.status not in UNFINISHED or await request.is_disconnected():
                return
            await asyncio.sleep(EVENT_POLL_S)

    return app


def cached_export(run_dir: Path, name: str, fmt: str, quantize: str) -> Path:
    """The run exported as its web page (a zip, the files under ``NAME/``) or its ``model.onnx``, once per
    checkpoint: kept in the run's ``downloads/`` under the checkpoint's identity (a hash of its
    config.json, which holds the weights' checksum), where it replaces the export of an older one."""
    from textweaver.export.onnx import export

    config = next(run_dir / d / "config.json" for d in ("best", "last") if (run_dir / d / "config.json").is_file())
    identity = hashlib.sha256(name.encode() + b"\0" + config.read_bytes()).hexdigest()[:16]
    kind = f"{fmt}-{quantize}"
    folder = run_dir / DOWNLOADS
    target = folder / f"{kind}-{identity}{'.onnx' if fmt == 'onnx' else '.zip'}"
    if target.is_file():
        return target
    folder.mkdir(exist_ok=True)
    partial = folder / f".{target.name}.partial"
    try:
        with tempfile.TemporaryDirectory(prefix="textweaver-download-") as tmp:
            site = export(run_dir, Path(tmp) / name, fmt, None if quantize == "fp32" else quantize)
            if fmt == "onnx":
                shutil.copyfile(site.directory / MODEL_FILE, partial)
            else:
                with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
                    for path in sorted(site.directory.rglob("*")):
                        if path.is_file():
                            z.write(path, Path(name) / path.relative_to(site.directory))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    for old in folder.glob(f"{kind}-*"):  # an older checkpoint's, or the run's former name's
        old.unlink(missing_ok=True)
    os.replace(partial, target)
    return target


def read_samples(run_dir: Path) -> list[dict[str, Any]]:
    """The samples of each evaluation as JSON: step, prompt and the text at each temperature."""
    return [{"step": e.step, "prompt": e.prompt, "samples": dict(e.texts)}
            for e in runlog.read_samples(run_dir)]  # fmt: skip


def _recipe(run_dir: Path) -> dict[str, Any] | None:
    for d in ("last", "best"):
        try:
            config = json.loads((run_dir / d / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        train = config.get("train", {})
        return {"model": config.get("model"), "reasons": train.get("extra", {}).get("recipe", {}).get("reasons", [])}
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def _ui_file(path: str) -> FileResponse:
    return FileResponse(WEB_DIR / path, media_type=STUDIO_FILES[path], headers={"Content-Security-Policy": CSP})


def serve_studio(
    workspace: str | Path = DEFAULT_WORKSPACE,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    max_upload: str = MAX_UPLOAD,
) -> None:
    """Serve the studio until Ctrl-C; trainings still running then save a checkpoint and stop."""
    check_port(port)
    app = create_app(workspace, max_upload, host=host)
    try:
        run_app(app, host, port, f"studio for {Path(workspace).absolute()}",
                "train, read and delete the runs of this workspace")  # fmt: skip
    finally:
        app.state.trainer.close()
