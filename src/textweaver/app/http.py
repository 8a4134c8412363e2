"""The HTTP layer that ``serve`` and the studio share: one-line errors, the trust checks, headers, limits, SSE.

- errors: every refusal is a status and a one-line ``message`` (:func:`error_response`, :func:`add_error_handlers`)
- trust: only requests addressed to this server (:class:`TrustedHosts`: no DNS rebinding), and for the studio
  only its own page (:class:`SameOrigin`); the pages' Content-Security-Policy (:data:`CSP`)
- limits: request bodies, prompts and sampling options (:class:`StreamParams`), generations running at once
  (:class:`GenerationSlots`: 503 beyond) and per request (504, or an ``error`` event)
- server-sent events: a sample token by token (:func:`stream_sample`), closed however the response ends
- listening: :func:`run_app` on 127.0.0.1 unless told otherwise (the APIs have no authentication)
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
from collections.abc import Generator, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from textweaver.app.api import TextModel
from textweaver.errors import TextweaverError
from textweaver.export.site import MAX_LENGTH
from textweaver.generation.generator import GenerationRequest
from textweaver.generation.sampling import MAX_PENALTY, MIN_PENALTY, SamplingOptions

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")  # the Host names this machine's browser uses for us
WILDCARD_HOSTS = ("0.0.0.0", "::", "")  # --host values that listen on every address of the machine
MAX_PROMPT_CHARS = 2000
MAX_STOP_CHARS = 100  # a stop string is a marker such as "\n\n" or "THE END", not a passage
SERVE_MAX_TEMPERATURE = 2.0  # a shared server's limit, tighter than the library's
WORKERS = 2  # generations running at once (the CPU has few cores; more would only share them)
QUEUE = 8  # generations waiting for a worker; beyond that a request gets 503 + Retry-After
RETRY_AFTER_S = 1
TIMEOUT_S = 60.0  # per request, waiting for a worker included; a stream then ends with an `error` event
MAX_BODY_BYTES = 64 * 1024  # a request body beyond this gets 413 before it is read whole
# the pages' policy, also in their <meta> tag (which guards a static export; tests/test_http.py compares them);
# the header adds what a meta tag cannot say: no framing
PAGE_CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; worker-src 'self'; connect-src 'self'; "
    "style-src 'self'; img-src 'self' data:; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'"
)
CSP = PAGE_CSP + "; frame-ancestors 'none'"
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}  # no proxy holds the events back


def error_response(message: str, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An error response: a one-line ``message`` (and the same as FastAPI's usual ``detail``)."""
    return JSONResponse({"message": message, "detail": message}, status_code=status, headers=headers)


def add_error_handlers(
    app: FastAPI, statuses: Sequence[tuple[type[TextweaverError], int]] = (), validation_detail: bool = False
) -> None:
    """Invalid input (422), an ``HTTPException`` and a refusal (a ``TextweaverError``: the first of ``statuses``
    it is an instance of, else 422) all answer with a one-line ``message``. With ``validation_detail``, a 422's
    ``detail`` is FastAPI's list of errors instead of the message again."""

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        where = [".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body" for e in errors]
        message = "; ".join(f"{w}: {e.get('msg', 'invalid')}" for w, e in zip(where, errors, strict=True))
        if not validation_detail:
            return error_response(message, 422)
        # the details leave out the input echoed back: it may be what made the request invalid (a lone surrogate)
        detail = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in errors]
        return JSONResponse({"message": message, "detail": jsonable_encoder(detail)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return error_response(str(exc.detail), exc.status_code, exc.headers)

    @app.exception_handler(TextweaverError)
    async def _refused(request: Request, exc: TextweaverError) -> JSONResponse:
        return error_response(str(exc), next((s for kind, s in statuses if isinstance(exc, kind)), 422))


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


class SameOrigin:
    """The studio's API is for the studio's own page: a web site the user visits must not train, stop, delete,
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


def content_disposition(filename: str) -> str:
    """A download's ``Content-Disposition`` (RFC 6266): ``filename*`` carries the name in UTF-8 (RFC 5987:
    西游记-1.onnx as it is), ``filename`` an ASCII stand-in for clients that read only that."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


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


def generation_request(model: TextModel, params: StreamParams, num_samples: int) -> GenerationRequest:
    """The generation request, with the prompt chosen now so the response can show it."""
    prompt = params.prompt or model.random_prompt(params.seed)
    return model.request(prompt, params.length, params.temperature, params.top_k, params.top_p,
                         params.repetition_penalty, num_samples, params.seed, params.stop)  # fmt: skip


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


def busy(message: str) -> JSONResponse:
    """503 for a request the generation queue has no room for, and when to try again."""
    return error_response(message, 503, {"Retry-After": str(RETRY_AFTER_S)})


class TimedOut(Exception):
    """A generation ran past the per-request time limit."""


def until(pieces: Iterator[list[str]], deadline: float) -> Iterator[list[str]]:
    """The pieces of a generation, raising :class:`TimedOut` once ``deadline`` (``time.monotonic()``) passed."""
    for piece in pieces:
        yield piece
        if time.monotonic() > deadline:
            raise TimedOut


def timeout_message(timeout: float) -> str:
    return f"generation stopped at the {timeout:g} s limit per request (--timeout): ask for fewer tokens or samples"


def tokens_generated(steps: int, request: GenerationRequest) -> int:
    """Tokens generated per sample, from the steps ``Generator.stream`` yielded: the prompt comes first,
    and the text held back for a stop string that never appeared may come as one more step at the end."""
    return min(steps - 1, request.length)


def sse_event(data: Any, name: str | None = None) -> str:
    """One server-sent event: ``data`` as JSON, under ``name`` (unnamed: a ``message`` event)."""
    return (f"event: {name}\n" if name else "") + f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


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


def stream_sample(
    model: TextModel, params: StreamParams, slots: GenerationSlots, timeout: float, busy_message: str,
    headers: Mapping[str, str] = SSE_HEADERS,
) -> Response:  # fmt: skip
    """One sample as server-sent events (see :func:`sample_events`), or 503 when ``slots`` are full."""
    request = generation_request(model, params, 1)
    deadline = time.monotonic() + timeout
    ticket = slots.take_worker(deadline)
    if ticket is None:
        return busy(busy_message)
    events = sample_events(model, request, ticket, deadline, timeout)
    weakref.finalize(events, ticket.release)  # a stream dropped unread still gives its worker back
    return EventStream(events, media_type="text/event-stream", headers=headers)


def sample_events(
    model: TextModel, request: GenerationRequest, ticket: Ticket, deadline: float, timeout: float
) -> Generator[str, None, None]:
    """Server-sent events for one sample; holds its worker until the end, the time limit, or the
    client going away (the server then closes this generator, which gives the worker back)."""
    start, steps = time.perf_counter(), 1
    try:
        pieces = until(model.generator.stream(request, warn=False), deadline)
        yield sse_event({"text": next(pieces)[0]}, "prompt")
        for piece in pieces:
            steps += 1
            yield sse_event({"text": piece[0]})
    except TextweaverError as e:
        yield sse_event({"message": str(e)}, "error")
        return
    except TimedOut:
        yield sse_event({"message": timeout_message(timeout)}, "error")
        return
    finally:
        ticket.release()
    seconds, tokens = time.perf_counter() - start, tokens_generated(steps, request)
    yield sse_event({"tokens": tokens, "seconds": seconds, "tokens_per_s": tokens / max(seconds, 1e-9)}, "done")


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
