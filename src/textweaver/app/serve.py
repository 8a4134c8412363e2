"""``textweaver serve``: the web page backed by the Python model, plus a JSON API.

- ``POST /api/generate``: prompt, length, temperature (0 = greedy), top_k, top_p, repetition_penalty,
  stop, seed, num_samples -> texts
- ``POST /api/generate/stream``: the same for one sample, as server-sent events while it is sampled
- ``GET /api/info``: the model card (corpus, size, metrics); ``GET /api/prompt``: a random start sentence
- ``GET /``: the same page as ``textweaver export --format web``, in server mode (``/config.json``
  tells it so, and gives it the limits below)
- ``GET /openapi.json``: the OpenAPI schema (no ``/docs`` page: Swagger UI would load from a CDN)

Inputs are checked against the limits in ``app/http.py`` (422 and a one-line ``message`` when out of range).
It listens on 127.0.0.1 unless told otherwise: the API has no authentication. It answers only
requests addressed to it by a loopback name or the ``--host`` given (``http.TrustedHosts``), so a
web page under another name that resolves to 127.0.0.1 (DNS rebinding) gets 400. The HTTP layer it
shares with the studio (errors, trust checks, limits, server-sent events) is ``app/http.py``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field

from textweaver import __version__
from textweaver.app.api import TextModel, load
from textweaver.app.http import (
    CSP,
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_BODY_BYTES,
    MAX_PROMPT_CHARS,
    MAX_STOP_CHARS,
    QUEUE,
    RETRY_AFTER_S,
    SERVE_MAX_TEMPERATURE,
    TIMEOUT_S,
    WORKERS,
    GenerationSlots,
    StreamParams,
    TimedOut,
    TrustedHosts,
    add_error_handlers,
    busy,
    check_port,
    error_response,
    generation_request,
    run_app,
    stream_sample,
    timeout_message,
    tokens_generated,
    until,
)
from textweaver.errors import TextweaverError
from textweaver.export.site import UI_FILES, WEB_DIR, page_config
from textweaver.generation.generator import describe, join_samples
from textweaver.generation.sampling import MAX_PENALTY, MIN_PENALTY, SamplingOptions

SERVE_MAX_SAMPLES = 16  # per request: a shared server's limit, tighter than the library's
# /api/generate and its stream answer 503 when the generation queue is full
BUSY_RESPONSES: dict[int | str, dict[str, Any]] = {
    503: {"description": "Too many requests running or waiting; see Retry-After"}
}
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


class GenerateParams(StreamParams):
    num_samples: int = Field(1, ge=1, le=SERVE_MAX_SAMPLES, description="Samples generated together as one batch.")


class GenerateResult(BaseModel):
    text: str = Field(description="The first sample: prompt plus continuation.")
    samples: list[str] = Field(description="Every sample: prompt plus continuation.")
    prompt: str
    tokens: int = Field(description="Tokens generated per sample.")
    elapsed_s: float
    tokens_per_s: float = Field(description="Generated tokens per second, all samples together.")
    settings: dict[str, Any]


def create_app(
    run_dir: str | Path,
    device: str = "cpu",
    title: str | None = None,
    description: str | None = None,
    workers: int = WORKERS,
    queue: int = QUEUE,
    timeout: float = TIMEOUT_S,
    host: str = DEFAULT_HOST,
) -> FastAPI:
    """The FastAPI application for one trained model (loaded once, shared by all requests), answering
    requests addressed to a loopback name or ``host`` (the address it listens on)."""
    model = load(run_dir, device)
    slots = GenerationSlots(workers, queue)
    config = {**page_config(model.checkpoint, "server", title, description), "limits": page_limits()}
    app = FastAPI(
        title=f"textweaver: {config['title']}",
        description=f"{config['description']}\n\nGenerate text from a textweaver model.",
        version=__version__,
        max_body_size=MAX_BODY_BYTES,  # larger bodies get 413 before they are read whole
        docs_url=None,  # Swagger UI and ReDoc load from a CDN into this origin: the schema is /openapi.json
        redoc_url=None,
    )
    app.add_middleware(TrustedHosts, host=host)
    add_error_handlers(app, validation_detail=True)
    app.state.model = model
    app.state.slots = slots
    # on the app itself, not included from a router: app.routes then lists them (tests call an endpoint)
    add_card_routes(app, model, config)
    add_generation_routes(app, model, slots, timeout)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return _ui_file("index.html")

    @app.get("/{name:path}", include_in_schema=False)  # a path: the page imports shared/util.js
    def ui_file(name: str) -> Response:
        if name not in UI_FILES:
            raise HTTPException(status_code=404, detail=f"{name}: not found")
        return _ui_file(name)

    return app


def page_limits() -> dict[str, Any]:
    """What the page may ask this server for (``config.json``'s ``limits``): the page sets its inputs'
    bounds from them. A static export has none; its page then uses ``sampling.js``'s own."""
    return {
        "max_prompt_chars": MAX_PROMPT_CHARS, "max_temperature": SERVE_MAX_TEMPERATURE,
        "max_stop_chars": MAX_STOP_CHARS, "min_repetition_penalty": MIN_PENALTY, "max_repetition_penalty": MAX_PENALTY,
        "repetition_window": SamplingOptions.repetition_window,
    }  # fmt: skip


def add_card_routes(app: FastAPI, model: TextModel, config: dict[str, Any]) -> None:
    """The model card, a start sentence from the corpus, and the page's ``config.json``."""

    @app.get("/api/info", summary="The model card: corpus, size, metrics")
    def info() -> dict[str, Any]:
        return {**model.info(local=False), "title": config["title"], "description": config["description"]}

    @app.get("/api/prompt", summary="A random start sentence from the training corpus")
    def prompt(seed: int | None = None) -> dict[str, str]:
        return {"prompt": model.random_prompt(seed)}

    @app.get("/config.json", include_in_schema=False)
    def page() -> JSONResponse:
        return JSONResponse(config, headers={"Cache-Control": "no-store"})


def add_generation_routes(app: FastAPI, model: TextModel, slots: GenerationSlots, timeout: float) -> None:
    """``/api/generate`` and its stream: at most ``slots`` generations at once, ``timeout`` seconds each."""
    busy_message = f"busy: {slots.capacity} generations are running or waiting; retry in {RETRY_AFTER_S} s"

    @app.post("/api/generate", summary="Generate text", response_model=GenerateResult, responses=BUSY_RESPONSES)
    def generate(params: GenerateParams) -> GenerateResult | JSONResponse:
        request = generation_request(model, params, params.num_samples)
        deadline = time.monotonic() + timeout
        ticket = slots.take_worker(deadline)
        if ticket is None:
            return busy(busy_message)
        try:
            start = time.perf_counter()
            steps = list(until(model.generator.stream(request, warn=False), deadline))
            elapsed = time.perf_counter() - start
        except TimedOut:
            return error_response(timeout_message(timeout), 504)
        finally:
            ticket.release()
        samples, tokens = join_samples(steps, request.num_samples), tokens_generated(len(steps), request)
        return GenerateResult(
            text=samples[0], samples=samples, prompt=request.prompt or "", tokens=tokens, elapsed_s=elapsed,
            tokens_per_s=tokens * request.num_samples / max(elapsed, 1e-9), settings=describe(request),
        )  # fmt: skip

    @app.post(
        "/api/generate/stream",
        summary="Generate one sample as server-sent events",
        description='Events: `prompt` (the start text), then one unnamed event per token with `{"text": ...}`, '
        'then `done` with `{"tokens", "seconds", "tokens_per_s"}` (or `error` with `{"message"}`, e.g. when '
        "the time limit is reached).",
        response_class=StreamingResponse,
        responses=BUSY_RESPONSES,
    )
    def stream(params: StreamParams) -> Response:
        return stream_sample(model, params, slots, timeout, busy_message)


def _ui_file(name: str) -> FileResponse:
    media_type = MEDIA_TYPES[Path(name).suffix]
    return FileResponse(WEB_DIR / name, media_type=media_type, headers={"Content-Security-Policy": CSP})


def serve(
    run_dir: str | Path,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    device: str = "cpu",
    title: str | None = None,
    description: str | None = None,
    workers: int = WORKERS,
    queue: int = QUEUE,
    timeout: float = TIMEOUT_S,
) -> None:
    """Load the model and serve the page and the API until Ctrl-C."""
    check_port(port)
    if workers < 1 or queue < 0:
        raise TextweaverError(f"--workers must be at least 1 and --queue at least 0, got {workers} and {queue}")
    if not timeout > 0:
        raise TextweaverError(f"--timeout must be a positive number of seconds, got {timeout}")
    app = create_app(run_dir, device, title, description, workers, queue, timeout, host)
    run_app(app, host, port, f"serving {app.state.model.checkpoint.directory}", "use the model",
            "(API schema at /openapi.json)")  # fmt: skip
