"""The web export and the server, measured: download sizes (fp32, fp16, int8), page load time and
characters/s in headless Chromium, and `textweaver serve`'s generate latency.

    python -m bench.web RUN_DIR [--length 2000] [--repeats 3]

Needs Debian's chromium at /usr/bin/chromium and the playwright package (never `playwright install`).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.common import add_results_option, write
from textweaver.export.site import MODEL_FILE, export

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
PROMPT = "ROMEO:\nIs the day so young?\n"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def measure_page(context: Any, url: str, length: int, repeats: int) -> dict[str, float]:
    page = context.new_page()
    start = time.perf_counter()
    page.goto(url)
    page.click("#load")
    page.wait_for_selector("body[data-loaded='true']", timeout=300_000)
    load_s = time.perf_counter() - start
    page.click("summary")  # open "Advanced" for the seed
    page.fill("#prompt", PROMPT)
    page.eval_on_selector("#length", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", length)
    rates = []
    for seed in range(repeats):
        page.fill("#seed", str(seed))
        page.click("#generate")
        page.wait_for_function(
            "() => document.getElementById('status').textContent.startsWith('Done')", timeout=300_000
        )
        rates.append(float(page.text_content("#rate").replace(",", "")))
    page.close()
    return {"page_load_s": load_s, "chars_per_s": statistics.median(rates)}


def serve_static(site: Path) -> tuple[ThreadingHTTPServer, str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


def server_latency(run: str, length: int, repeats: int) -> dict[str, float]:
    from fastapi.testclient import TestClient

    from textweaver.app.serve import create_app

    client = TestClient(create_app(run), base_url="http://127.0.0.1")  # the server answers loopback names only
    body = {"prompt": PROMPT, "length": length, "seed": 0}
    client.post("/api/generate", json={**body, "length": 20})  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        assert client.post("/api/generate", json=body).status_code == 200
        times.append(time.perf_counter() - start)
    latency = statistics.median(times)
    return {"server_latency_s": latency, "server_chars_per_s": length / latency}


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    add_results_option(parser)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        for quantize in (None, "fp16", "int8"):
            site = export(args.run, Path(tmp) / (quantize or "fp32"), "web", quantize=quantize)
            httpd, url = serve_static(site.directory)
            context = p.chromium.launch_persistent_context(
                str(Path(tmp) / f"profile-{quantize}"), executable_path=CHROMIUM, headless=True, args=FLAGS
            )
            numbers = measure_page(context, url, args.length, args.repeats)
            context.close()
            httpd.shutdown()
            rows.append({"weights": quantize or "fp32", "model_mb": site.files[MODEL_FILE] / 1e6,
                         "folder_mb": site.total_bytes / 1e6, **numbers})  # fmt: skip
            print(rows[-1], flush=True)
    server = server_latency(args.run, 500, args.repeats)
    print(server)
    columns = ["weights", "model_mb", "folder_mb", "page_load_s", "chars_per_s"]
    notes = (
        f"Headless Chromium, one WebAssembly thread, {args.length} characters per run (median of {args.repeats}); "
        f"page load = open the page, press load, model ready (local server). `textweaver serve` on the same "
        f"run: {server['server_latency_s'] * 1000:.0f} ms for 500 characters "
        f"({server['server_chars_per_s']:.0f} chars/s, PyTorch on the CPU)."
    )
    print(write("web", rows, columns, notes, args.results))


if __name__ == "__main__":
    main()
