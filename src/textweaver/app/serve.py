"""``textweaver serve``: the web page backed by the Python model, plus a JSON API.

- ``POST /api/generate``: prompt, length, temperature (0 = greedy), top_k, top_p, repetition_penalty,
  stop, seed, num_samples -> texts
- ``POST /api/generate/stream``: the same for one sample, as server-sent events while it is sampled
- ``GET /api/info``: the model card (corpus, size, metrics); ``GET /api/prompt``: a random start sentence
- ``GET /``: the same page as ``textweaver export --format web``, in server mode (``/config.json``
  tells it so, and gives it the limits below)
- ``GET /openapi.json``: the OpenAPI schema (no ``/docs`` page: Swagger UI would load from a CDN)

Inputs are checked against the limits below (422 and a one-line ``message`` when out of range).
It listens on 127.0.0.1 unless told otherwise: the API has no authentication. It answers only
requests addressed to it by a loopback name or the ``--host`` given (:class:`TrustedHosts`), so a
web page under another name that resolves to 127.0.0.1 (DNS rebinding) gets 400.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import socket
import sys
import threading
import time
import weakref
from collections.abc import Generator, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from textweaver import __version__
from textweaver.app.api import TextModel, load
from textweaver.errors import TextweaverError
from textweaver.export.onnx import MAX_LENGTH, UI_FILES, WEB_DIR, page_config
from textweaver.generation.generator import GenerationRequest, describe, join_samples
from textweaver.generation.sampling import MAX_PENALTY, MIN_PENALTY, SamplingOptions

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")  # the Host names this machine's browser uses for us
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # --host values that listen on every address of the machine
MAX_PROMPT_CHARS = 2000
MAX_STOP_CHARS = 100  # a stop string is a marker such as "\n\n" or "THE END", not a passage
SERVE_MAX_SAMPLES = 16  # per request: a shared server's limits, tighter than the library's
SERVE_MAX_TEMPERATURE = 2.0
WORKERS = 2  # generations running at once (the CPU has few cores; more would only share them)
QUEUE = 8  # generations waiting for a worker; beyond that a request gets 503 + Retry-After
RETRY_AFTER_S = 1
TIMEOUT_S = 60.0  # per request, waiting for a worker included; a stream then ends with an `error` event
MAX_BODY_BYTES = 64 * 1024  # a request body beyond this gets 413 before it is read whole
# the pages' policy, also in their <meta> tag (which guards a static export; tests/test_serve.py compares them);
# the header adds what a meta tag cannot say: no framing
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; "
    "style-src 'self'; img-src 'self' data:; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'"
)
CSP = PAGE_CSP + "; frame-ancestors 'none'"
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


class StreamParams(BaseModel):
    """Options for one sample; every field may be left out."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="Start text; empty or missing: a random corpus sentence."
    )
    length: int = Field(
        GenerationRequest.length, ge=1, le=MAX_LENGTH, description="Tokens to generate (characters for char models)."
    )
    temperature: float = Field(
        SamplingOptions.temperature, ge=0.0, le=SERVE_MAX_TEMPERATURE, description="0 = greedy, 1 = the model's odds."
    )
    top_k: int | None = Field(None, ge=1, description="Sample only among the K likeliest tokens.")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling: likeliest tokens reaching P.")
    repetition_penalty: float = Field(
        SamplingOptions.repetition_penalty, ge=MIN_PENALTY, le=MAX_PENALTY,
        description=f"Above 1 makes tokens used in the last {SamplingOptions.repetition_window} less likely; 1 = off.",
    )  # fmt: skip
    stop: str | None = Field(
        None, min_length=1, max_length=MAX_STOP_CHARS,
        description="End the sample when this text appears; it is not included.",
    )  # fmt: skip
    seed: int | None = Field(None, ge=0, lt=2**63, description="The same seed and options give the same text.")


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


class GenerationSlots:
    """A bounded queue: ``workers`` generations run at once, ``queue`` more may wait, and a request
    beyond that is refused at once (503) instead of joining an unbounded backlog."""

    def __init__(self, workers: int = WORKERS, queue: int = QUEUE) -> None:
        self.capacity = workers + queue
        self.workers = threading.Semaphore(workers)
        self.lock = threading.Lock()
        self.admitted = 0  # running + waiting

    def admit(self) -> Ticket | None:
        with self.lock:
            if self.admitted >= self.capacity:
                return None
            self.admitted += 1
            return Ticket(self)

    def take_worker(self, deadline: float) -> Ticket | None:
        """Admit a request and wait for a worker until ``deadline`` (``time.monotonic()``); None if
        the queue is full or no worker came free in time (nothing is held then)."""
        ticket = self.admit()
        if ticket is not None and not ticket.wait_for_worker(deadline - time.monotonic()):
            ticket.release()
            return None
        return ticket


class Ticket:
    """One admitted request: it may wait for a worker, and gives back what it holds exactly once
    (at the end, on an error, when its client goes away, or when its stream is discarded unread)."""

    def __init__(self, slots: GenerationSlots) -> None:
        self._slots = slots
        self._has_worker = False
        self._released = False

    def wait_for_worker(self, timeout: float) -> bool:
        self._has_worker = self._slots.workers.acquire(timeout=max(0.0, timeout))
        return self._has_worker

    def release(self) -> None:
        with self._slots.lock:
            if self._released:
                return
            self._released = True
            self._slots.admitted -= 1
        if self._has_worker:
            self._slots.workers.release()


class EventStream(StreamingResponse):
    """A stream that closes its event generator however the response ends (finished, client gone,
    server stopping), so the worker it holds is given back at once, not when garbage is collected."""

    def __init__(self, events: Generator[str, None, None], **kwargs: Any) -> None:
        super().__init__(events, **kwargs)
        self._events = events

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            with contextlib.suppress(ValueError):  # still running in a worker thread: it finishes on its own
                self._events.close()


class TimedOut(Exception):
    """A generation ran past the per-request time limit."""


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
    app.state.model = model
    app.state.slots = slots

    def busy() -> JSONResponse:
        message = f"busy: {slots.capacity} generations are running or waiting; retry in {RETRY_AFTER_S} s"
        return error_response(message, 503, {"Retry-After": str(RETRY_AFTER_S)})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        where = [".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body" for e in errors]
        message = "; ".join(f"{w}: {e.get('msg', 'invalid')}" for w, e in zip(where, errors, strict=True))
        # the details leave out the input echoed back: it may be what made the request invalid (a lone surrogate)
        detail = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in errors]
        return JSONResponse({"message": message, "detail": jsonable_encoder(detail)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _httperror_response(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(str(exc.detail), exc.status_code, exc.headers)

    @app.exception_handler(TextweaverError)
    async def _refused(request: Request, exc: TextweaverError) -> JSONResponse:
        return error_response(str(exc), 422)

    @app.get("/api/info", summary="The model card: corpus, size, metrics")
    def info() -> dict[str, Any]:
        return {**model.info(local=False), "title": config["title"], "description": config["description"]}

    @app.get("/api/prompt", summary="A random start sentence from the training corpus")
    def prompt(seed: int | None = None) -> dict[str, str]:
        return {"prompt": model.random_prompt(seed)}

    @app.post("/api/generate", summary="Generate text", response_model=GenerateResult,
              responses={503: {"description": "Too many requests running or waiting; see Retry-After"}})  # fmt: skip
    def generate(params: GenerateParams) -> GenerateResult | JSONResponse:
        request = generation_request(model, params, params.num_samples)
        deadline = time.monotonic() + timeout
        ticket = slots.take_worker(deadline)
        if ticket is None:
            return busy()
        try:
            start = time.perf_counter()
            steps = list(_until(model.generator.stream(request, warn=False), deadline))
            elapsed = time.perf_counter() - start
        except TimedOut:
            return error_response(timeout_message(timeout), 504)
        finally:
            ticket.release()
        samples, tokens = join_samples(steps, request.num_samples), _tokens(len(steps), request)
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
        responses={503: {"description": "Too many requests running or waiting; see Retry-After"}},
    )
    def stream(params: StreamParams) -> Response:
        request = generation_request(model, params, 1)
        deadline = time.monotonic() + timeout
        ticket = slots.take_worker(deadline)
        if ticket is None:
            return busy()
        events = sample_events(model, request, ticket, deadline, timeout)
        weakref.finalize(events, ticket.release)  # a stream dropped unread still gives its worker back
        return EventStream(events, media_type="text/event-stream",
                           headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})  # fmt: skip

    @app.get("/config.json", include_in_schema=False)
    def page() -> JSONResponse:
        return JSONResponse(config, headers={"Cache-Control": "no-store"})

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return _ui_file("index.html")

    @app.get("/{name}", include_in_schema=False)
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


def generation_request(model: TextModel, params: StreamParams, num_samples: int) -> GenerationRequest:
    """The generation request, with the prompt chosen now so the response can show it."""
    prompt = params.prompt or model.random_prompt(params.seed)
    return model.request(prompt, params.length, params.temperature, params.top_k, params.top_p,
                         params.repetition_penalty, num_samples, params.seed, params.stop)  # fmt: skip


def _tokens(steps: int, request: GenerationRequest) -> int:
    """Tokens generated per sample, from the steps ``Generator.stream`` yielded: the prompt comes first,
    and the text held back for a stop string that never appeared may come as one more step at the end."""
    return min(steps - 1, request.length)


def _until(pieces: Iterator[list[str]], deadline: float) -> Iterator[list[str]]:
    for piece in pieces:
        yield piece
        if time.monotonic() > deadline:
            raise TimedOut


def timeout_message(timeout: float) -> str:
    return f"generation stopped at the {timeout:g} s limit per request (--timeout): ask for fewer tokens or samples"


def sample_events(
    model: TextModel, request: GenerationRequest, ticket: Ticket, deadline: float, timeout: float
) -> Generator[str, None, None]:
    """Server-sent events for one sample; holds its worker until the end, the time limit, or the
    client going away (the server then closes this generator, which gives the worker back)."""

    def event(data: dict[str, Any], name: str | None = None) -> str:
        return (f"event: {name}\n" if name else "") + f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    start, steps = time.perf_counter(), 1
    try:
        pieces = _until(model.generator.stream(request, warn=False), deadline)
        yield event({"text": next(pieces)[0]}, "prompt")
        for piece in pieces:
            steps += 1
            yield event({"text": piece[0]})
    except TextweaverError as e:
        yield event({"message": str(e)}, "error")
        return
    except TimedOut:
        yield event({"message": timeout_message(timeout)}, "error")
        return
    finally:
        ticket.release()
    seconds, tokens = time.perf_counter() - start, _tokens(steps, request)
    yield event({"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / max(seconds, 1e-9)}, "done")


def error_response(message: str, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error response: a one-line ``message`` (and the same as FastAPI's usual ``detail``)."""
    return JSONResponse({"message": message, "detail": message}, status_code=status, headers=headers)


class TrustedHosts:
    """Answers only requests whose ``Host`` names this server: a loopback name (127.0.0.1, localhost,
    [::1]) or the ``--host`` it listens on, any port; 400 and one line otherwise.

    A web page under another name that the attacker points at 127.0.0.1 (DNS rebinding) would be
    same-origin with its requests here, so an Origin check alone cannot refuse them; its Host header
    still carries the attacker's name. Listening on every address (``--host 0.0.0.0`` or ``::``), any
    IP address is accepted too, as the machine is reached by its addresses (a rebound page always
    comes under a name); to use a host name from other machines, give that name as ``--host``.
    """

    def __init__(self, app: ASGIApp, host: str = DEFAULT_HOST) -> None:
        self.app = app
        self.host = host

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not host_allowed(header, self.host):
                port = (scope.get("server") or ("", DEFAULT_PORT))[1] or DEFAULT_PORT
                return await error_response(host_refused(header, self.host, port), 400)(scope, receive, send)
        await self.app(scope, receive, send)


def host_allowed(header: str, listen_host: str = DEFAULT_HOST) -> bool:
    """Whether a request's ``Host`` header names this server (see :class:`TrustedHosts`)."""
    match = re.fullmatch(r"(?:\[([0-9a-f:.]+)\]|([^:\[\]]+))(?::\d{1,5})?", header.strip().lower())
    if match is None:
        return False
    name = match.group(1) or match.group(2)
    listen = listen_host.strip("[]").lower()
    if name in LOOPBACK_NAMES or name == listen:
        return True
    if listen in WILDCARD_HOSTS:
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True
    return False


def host_refused(header: str, listen_host: str, port: int) -> str:
    """The one line for a request under a name this server does not answer to."""
    names = ["127.0.0.1", "localhost", "[::1]"]
    if listen_host in WILDCARD_HOSTS:
        names.append("any IP address of this machine")
    elif listen_host.strip("[]").lower() not in LOOPBACK_NAMES:
        names.append(listen_host)
    return (
        f"Host {header[:100]!r} refused: this server answers only to {', '.join(names)} (a page under another "
        f"name may be a site rebinding its DNS to this machine): open http://127.0.0.1:{port}/ or pass --host"
    )


def content_disposition(filename: str) -> str:
    """A download's ``Content-Disposition`` (RFC 6266): ``filename*`` carries the name in UTF-8 (RFC 5987:
    西游记-1.onnx as it is), ``filename`` an ASCII stand-in for clients that read only that."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


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


def check_port(port: int) -> None:
    if not 0 < port < 65536:
        raise TextweaverError(f"--port must be between 1 and 65535, got {port}")


def run_app(app: FastAPI, host: str, port: int, what: str, exposes: str, extra: str = "") -> None:
    """Listen on ``host:port`` until Ctrl-C, saying ``what`` is served where; any host but the loopback
    gets a warning that anyone who can reach the machine may ``exposes`` (there is no authentication)."""
    import uvicorn

    check_free(host, port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"textweaver: warning: listening on {host}: anyone who can reach this machine can {exposes} "
              "(there is no authentication)", file=sys.stderr)  # fmt: skip
    shown = f"[{host}]" if ":" in host else host
    print(f"textweaver: {what} at http://{shown}:{port}/{' ' + extra if extra else ''}; Ctrl-C stops",
          file=sys.stderr)  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="warning")


def check_free(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise TextweaverError(
            f"--host {host}: unknown address ({e.strerror}): use an IP address such as 127.0.0.1"
        ) from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            raise TextweaverError(
                f"cannot listen on {host}:{port} ({e.strerror}): choose another --port or stop the other server"
            ) from None
