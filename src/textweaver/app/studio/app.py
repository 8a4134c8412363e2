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
only to the loopback names and ``--host`` (``http.TrustedHosts``: no DNS rebinding), and only its own
page may use the API (``http.SameOrigin``). Downloads are named in any script (RFC 6266).

The routes live one module per resource: ``texts.py``, ``runs.py``, ``training.py`` (the trainer queue),
``generate.py``, ``publish.py`` (downloads, the report), their shared dependencies in ``deps.py``, the HTTP
layer shared with ``serve`` in ``app/http.py``; this module assembles them.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.responses import FileResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from textweaver import __version__
from textweaver.app.api import load
from textweaver.app.http import (
    CSP,
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_BODY_BYTES,
    GenerationSlots,
    SameOrigin,
    TrustedHosts,
    add_error_handlers,
    check_port,
    error_response,
    run_app,
)
from textweaver.app.studio import generate, publish, runs, texts, training
from textweaver.app.studio.deps import SpaceDep
from textweaver.app.studio.generate import ModelCache
from textweaver.app.studio.texts import UPLOAD_PATH
from textweaver.app.studio.trainer import Trainer
from textweaver.app.studio.training import DEFAULT_BUDGET
from textweaver.app.studio.workspace import (
    BASES,
    DEFAULT_WORKSPACE,
    MAX_UPLOAD,
    MODELS,
    Conflict,
    NotFound,
    TooLarge,
    Workspace,
    parse_size,
)
from textweaver.data.corpus import BUILTIN_CORPORA, BUILTIN_PREFIX
from textweaver.errors import TextweaverError
from textweaver.export.onnx import QUANTIZE
from textweaver.export.site import WEB_DIR

STUDIO_FILES = {
    "studio.html": "text/html", "style.css": "text/css", "studio/studio.css": "text/css",
    "studio/main.js": "text/javascript", "studio/common.js": "text/javascript", "studio/texts.js": "text/javascript",
    "studio/live.js": "text/javascript", "studio/train.js": "text/javascript", "studio/runs.js": "text/javascript",
    "studio/generate.js": "text/javascript", "studio/publish.js": "text/javascript",
    "shared/util.js": "text/javascript", "shared/chart.js": "text/javascript",
    "vendor/uplot/uPlot.iife.min.js": "text/javascript", "vendor/uplot/uPlot.min.css": "text/css",
}  # fmt: skip


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


class BodyTooLarge(TextweaverError):
    """413: a request body beyond its limit."""


choices = APIRouter()


@choices.get("/api/studio", summary="The choices and limits the page offers")
def studio(space: SpaceDep) -> dict[str, Any]:
    return {
        "version": __version__, "models": MODELS, "bases": BASES, "budget": DEFAULT_BUDGET,
        "builtin_texts": [BUILTIN_PREFIX + n for n in BUILTIN_CORPORA], "max_upload": space.max_upload,
        "quantize": ["fp32", *QUANTIZE],
    }  # fmt: skip


def create_app(
    workspace: str | Path, max_upload: str = MAX_UPLOAD, parallel: int = 1, host: str = DEFAULT_HOST
) -> FastAPI:
    """The studio for ``workspace`` (created if missing); trainings run ``parallel`` at a time. It answers
    requests addressed to a loopback name or ``host`` (the address it listens on)."""
    limit = parse_size(max_upload)
    space = Workspace(Path(workspace), limit)
    trainer = Trainer(space, parallel)
    # no docs_url / redoc_url pages: Swagger UI and ReDoc would load from a CDN into the studio's origin
    app = FastAPI(title="textweaver studio", version=__version__, description="Train, watch, generate, publish.",
                  docs_url=None, redoc_url=None)  # fmt: skip
    app.add_middleware(BodyLimits, upload=limit, other=MAX_BODY_BYTES)
    app.add_middleware(SameOrigin)
    app.add_middleware(TrustedHosts, host=host)  # added last: it runs first
    add_error_handlers(app, [(TooLarge, 413), (BodyTooLarge, 413), (NotFound, 404), (Conflict, 409)])
    app.state.workspace, app.state.trainer, app.state.models = space, trainer, ModelCache(load)
    app.state.slots = GenerationSlots()
    app.state.exporting = threading.Lock()  # one export at a time: each takes the CPU for seconds
    weakref.finalize(app, trainer.close)
    for router in (choices, texts.router, runs.router, training.router, publish.router, generate.router):
        app.include_router(router)  # the static files' catch-all route below comes after them

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return _ui_file("studio.html")

    @app.get("/{path:path}", include_in_schema=False)
    def ui_file(path: str) -> Response:
        if path not in STUDIO_FILES:
            raise HTTPException(status_code=404, detail=f"{path}: not found")
        return _ui_file(path)

    return app


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
