"""Load test of `textweaver serve` over loopback: many streaming clients, then many short requests.

    python -m bench.load [--run builtin:shakespeare] [--clients 50] [--duration 60] [--requests 10000]

Phase 1: ``--clients`` asyncio clients stream ``--length`` characters each, back to back, for
``--duration`` seconds; a client refused with 503 waits ``Retry-After`` and tries again (the
server's bounded queue at work). Reported: time to the first generated character (p50/p99),
characters per second over all clients, errors (anything but 200 and the deliberate 503s).
Phase 2: ``--requests`` short requests (JSON and streams, some abandoned mid-stream, some
invalid) from 16 clients, with the server's resident memory sampled every 1,000 requests: it
must stay flat (no leak). The server runs with its defaults (2 workers, a queue of 8).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import add_results_option, write


@dataclass
class Tally:
    first_char_s: list[float] = field(default_factory=list)
    chars: int = 0
    completed: int = 0
    busy: int = 0  # deliberate 503s
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(run: str, port: int, extra: list[str]) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "textweaver", "serve", run, "--port", str(port), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/info", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server did not start: {proc.stderr.read().decode() if proc.stderr else ''}")


async def stream_once(http: httpx.AsyncClient, body: dict[str, Any], tally: Tally, abandon: bool = False) -> float:
    """One streaming request; returns seconds to wait before the next (Retry-After on 503)."""
    start = time.perf_counter()
    try:
        async with http.stream("POST", "/api/generate/stream", json=body) as response:
            if response.status_code == 503:
                tally.busy += 1
                await response.aread()
                return float(response.headers.get("Retry-After", "1"))
            if response.status_code != 200:
                tally.error(f"status {response.status_code}")
                await response.aread()
                return 0.0
            event, first = "message", True
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = json.loads(line[6:])
                    if event == "message":
                        if first:
                            tally.first_char_s.append(time.perf_counter() - start)
                            first = False
                            if abandon:
                                return 0.0  # hang up mid-stream
                        tally.chars += len(data["text"])
                    elif event == "error":
                        tally.error("error event")
                    elif event == "done":
                        tally.completed += 1
                    event = "message"
    except httpx.HTTPError as e:
        tally.error(type(e).__name__)
    return 0.0


async def streaming_phase(url: str, clients: int, duration: float, length: int) -> tuple[Tally, float]:
    tally = Tally()
    end = time.monotonic() + duration
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
            n = 0
            while time.monotonic() < end:
                wait = await stream_once(http, {"length": length, "seed": i * 100_000 + n}, tally)
                n += 1
                if wait:
                    await asyncio.sleep(wait)

    start = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(clients)))
    return tally, time.monotonic() - start


async def churn_phase(url: str, pid: int, requests: int, concurrency: int = 16) -> tuple[Tally, list[float]]:
    """Short requests of every kind; RSS sampled every 1,000."""
    tally, rss = Tally(), [rss_mib(pid)]
    counter = iter(range(requests))

    async def client() -> None:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            for n in counter:
                kind = n % 4
                if kind == 0:
                    response = await http.post("/api/generate", json={"length": 5, "num_samples": 2, "seed": n})
                    if response.status_code == 200:
                        tally.completed += 1
                    elif response.status_code == 503:
                        tally.busy += 1
                    else:
                        tally.error(f"status {response.status_code}")
                elif kind == 1:
                    await stream_once(http, {"length": 8, "seed": n}, tally)
                elif kind == 2:
                    await stream_once(http, {"length": 500, "seed": n}, tally, abandon=True)
                else:  # invalid on purpose: must be a 422, never a 5xx
                    response = await http.post("/api/generate", json={"length": 0})
                    if response.status_code != 422:
                        tally.error(f"invalid request got {response.status_code}")
                if n % 1000 == 999:
                    rss.append(rss_mib(pid))

    await asyncio.gather(*(client() for _ in range(concurrency)))
    rss.append(rss_mib(pid))
    return tally, rss


def percentile(values: list[float], q: int) -> float | None:
    if not values:
        return None
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", default="builtin:shakespeare")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--length", type=int, default=200, help="characters per streamed request in phase 1")
    parser.add_argument("--requests", type=int, default=10_000, help="short requests in phase 2")
    parser.add_argument("--serve-args", default="", help="extra options for textweaver serve, e.g. '--queue 48'")
    add_results_option(parser)
    args = parser.parse_args()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args.run, port, args.serve_args.split())
    try:
        rss_start = rss_mib(server.pid)
        tally, seconds = asyncio.run(streaming_phase(url, args.clients, args.duration, args.length))
        rss_after_streams = rss_mib(server.pid)
        churn, rss = asyncio.run(churn_phase(url, server.pid, args.requests))
        alive = server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
    rows = [{
        "phase": f"{args.clients} streaming clients, {args.duration:.0f} s, {args.length} chars each",
        "requests": tally.completed, "p50_first_char_ms": 1000 * (percentile(tally.first_char_s, 50) or 0),
        "p99_first_char_ms": 1000 * (percentile(tally.first_char_s, 99) or 0), "chars_per_s": tally.chars / seconds,
        "busy_503": tally.busy, "errors": sum(tally.errors.values()),
        "rss_mib": f"{rss_start:.0f} -> {rss_after_streams:.0f}",
    }, {
        "phase": f"{args.requests:,} short requests (json, stream, abandoned stream, invalid), 16 clients",
        "requests": args.requests, "p50_first_char_ms": 1000 * (percentile(churn.first_char_s, 50) or 0),
        "p99_first_char_ms": 1000 * (percentile(churn.first_char_s, 99) or 0), "chars_per_s": None,
        "busy_503": churn.busy, "errors": sum(churn.errors.values()),
        "rss_mib": " -> ".join(f"{r:.0f}" for r in rss),
    }]  # fmt: skip
    columns = ["phase", "requests", "p50_first_char_ms", "p99_first_char_ms", "chars_per_s", "busy_503", "errors",
               "rss_mib"]  # fmt: skip
    growth = rss[-1] - rss[1] if len(rss) > 2 else rss[-1] - rss[0]
    notes = (
        f"Server: `textweaver serve {args.run} {args.serve_args}`".rstrip() + " (defaults: 2 workers, queue 8), "
        f"loopback, clients in the same machine. Error kinds: {tally.errors or 'none'} / {churn.errors or 'none'}. "
        f"RSS after the first 1,000 short requests to the end: {growth:+.1f} MiB. Server alive at the end: {alive}."
    )
    print(write("load", rows, columns, notes, args.results))
    if tally.errors or churn.errors or not alive:
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
