"""What the browser tests share: Debian's chromium under Playwright, and servers on 127.0.0.1.

Needs Debian's chromium at /usr/bin/chromium (`.ci/run` installs it) and the Python playwright
package; Playwright's own browser downloads are never used. Screenshots go to tests/artifacts/
(git-ignored).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip


@contextmanager
def chromium(profile: Path | None = None, args: Sequence[str] = (), **options: Any) -> Iterator[Any]:
    """A headless Debian chromium: a persistent context in ``profile`` (``options`` as Playwright's
    ``launch_persistent_context``), or with no profile the browser itself; ``args``: more command-line
    flags. Skips the test where chromium or playwright is missing (under TEXTWEAVER_NO_SKIP=1, as in
    CI, that skip fails the run: conftest.py)."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium` (.ci/run does)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is missing: `pip install -e '.[dev]'` (make test does)"
    )
    with sync_api.sync_playwright() as p:
        if profile is None:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=[*FLAGS, *args])
        else:
            browser = p.chromium.launch_persistent_context(
                str(profile), executable_path=str(CHROMIUM), headless=True, args=[*FLAGS, *args], **options
            )
        try:
            yield browser
        finally:
            browser.close()


class WatchedPage:
    """A new page in a browser ``context`` that records every page error (console.error, an uncaught
    exception, a crash) and blocks and records every request leaving its origin, ``url`` (``data:`` and
    ``blob:`` addresses are the page's own)."""

    def __init__(self, context: Any, url: str) -> None:
        self.url = url
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page = context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("crash", lambda _: self.errors.append("the page crashed"))
        self.page.route("**/*", self._only_own_origin)

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(f"console.error: {message.text}")

    def _only_own_origin(self, route: Any) -> None:
        if route.request.url.startswith((self.url, "data:", "blob:")):
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()


Watched = TypeVar("Watched", bound=WatchedPage)


@contextmanager
def watched_pages(context: Any, kind: type[Watched]) -> Iterator[Callable[[str], Watched]]:
    """Opens pages of ``kind`` in ``context``; at the end, any of them that had a page error or a request
    leaving its origin fails the test, whatever the test itself checked."""
    opened: list[Watched] = []

    def open_one(url: str) -> Watched:
        opened.append(kind(context, url))
        return opened[-1]

    yield open_one
    for page in opened:
        if not page.page.is_closed():
            page.page.close()
    assert not [p for p in opened if p.errors or p.outside], [(p.url, p.errors, p.outside) for p in opened]


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """An ASGI app (``serve``'s or the studio's) under uvicorn on 127.0.0.1, on a free port."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def serve_folder(site: Path) -> Iterator[str]:
    """``site`` served by Python's own static file server on 127.0.0.1."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(site)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass
