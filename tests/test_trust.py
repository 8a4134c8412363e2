"""DNS rebinding as a browser lives it: a web site points its own name at 127.0.0.1 after its page has
loaded, so the page and the local server share an origin and its requests pass any Origin check. The
studio and `serve` answer only to their own names (http.TrustedHosts); here Chromium resolves
attacker.example to 127.0.0.1 and every request of the page under that name is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from textweaver.app import serve as server
from textweaver.app.studio import app as studio

from browser import chromium, serve_app

pytestmark = pytest.mark.slow

ATTACKER = "attacker.example"
# every request a rebound page could make of each app: (method, path, JSON body or None)
STUDIO_REQUESTS = [("GET", "/api/runs", None), ("POST", "/api/texts?name=a.txt", "some text"),
                   ("POST", "/api/runs", {"texts": ["builtin:shakespeare"], "budget": "1m"}),
                   ("DELETE", "/api/runs/x", None), ("GET", "/api/runs/x/download", None)]  # fmt: skip
SERVE_REQUESTS = [("GET", "/api/info", None), ("POST", "/api/generate", {"prompt": "a", "length": 5})]
FETCH_ALL = """async (requests) => Promise.all(requests.map(([method, path, body]) => fetch(path, {
  method,
  headers: typeof body === "object" && body !== null ? { "content-type": "application/json" } : {},
  body: body === null ? undefined : typeof body === "string" ? body : JSON.stringify(body),
}).then((r) => r.status)))"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium(args=[f"--host-resolver-rules=MAP {ATTACKER} 127.0.0.1"]) as browser:
        yield browser


def rebound_page(browser: Any, url: str) -> Any:
    """The attacker's page once its name resolves to this machine: same-origin with the server."""
    page = browser.new_page()
    response = page.goto(f"http://{ATTACKER}:{urlsplit(url).port}/")
    assert response is not None and response.status == 400
    message = response.json()["message"]
    assert message.startswith(f"Host '{ATTACKER}:") and "refused" in message and "\n" not in message
    return page


def test_a_rebound_page_cannot_list_upload_train_delete_or_export_in_the_studio(browser: Any, tmp_path: Path) -> None:
    app = studio.create_app(tmp_path / "workspace")
    with serve_app(app) as url:
        page = rebound_page(browser, url)
        assert page.evaluate(FETCH_ALL, STUDIO_REQUESTS) == [400] * len(STUDIO_REQUESTS)
        own = browser.new_page()  # the same server under its own name works
        own.goto(url)
        own.wait_for_selector("body[data-ready='true']")
        assert own.evaluate(FETCH_ALL, [("GET", "/api/runs", None)]) == [200]
    app.state.trainer.close()
    assert not any((tmp_path / "workspace" / "texts").iterdir()) and not any(
        (tmp_path / "workspace" / "runs").iterdir()
    )


def test_a_rebound_page_cannot_use_a_served_model(browser: Any, trained_run: Path) -> None:
    with serve_app(server.create_app(trained_run)) as url:
        page = rebound_page(browser, url)
        assert page.evaluate(FETCH_ALL, SERVE_REQUESTS) == [400] * len(SERVE_REQUESTS)
