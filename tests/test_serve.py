"""The server: the JSON API, server-sent events, validation with clear 422s, the page, localhost by default."""

from __future__ import annotations

import dataclasses
import gc
import inspect
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from textweaver import load
from textweaver.app import http
from textweaver.app import serve as server
from textweaver.app.cli import serve as serve_command
from textweaver.app.serve import create_app
from textweaver.errors import TextweaverError
from textweaver.generation.sampling import SamplingOptions
from textweaver.run import checkpoint

OWN = "http://127.0.0.1:8000"  # the address a browser on this machine uses: the Host the server answers to
REBOUND = "attacker.example:8000"  # a site whose DNS now points at 127.0.0.1: its page is same-origin with us


@pytest.fixture(scope="module")
def client(trained_run: Path) -> TestClient:
    return TestClient(create_app(trained_run), base_url=OWN)


def events(client: TestClient, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    with client.stream("POST", "/api/generate/stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = "".join(response.iter_text())
    parsed = []
    for block in raw.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        parsed.append((lines.get("event", "message"), json.loads(lines["data"])))
    return parsed


def test_generate_returns_prompt_plus_length_tokens(client: TestClient) -> None:
    body = {"prompt": "ROMEO:", "length": 40, "seed": 1, "temperature": 0.7, "top_k": 20, "top_p": 0.95}
    result = client.post("/api/generate", json=body).json()
    assert result["text"].startswith("ROMEO:") and len(result["text"]) == 6 + 40
    assert result["samples"] == [result["text"]] and result["tokens"] == 40 and result["tokens_per_s"] > 0
    assert result["settings"]["top_k"] == 20
    assert client.post("/api/generate", json=body).json()["text"] == result["text"]  # same seed, same text
    many = client.post("/api/generate", json={"prompt": "To be", "length": 10, "num_samples": 3}).json()
    assert len(many["samples"]) == 3 and all(len(s) == 15 for s in many["samples"])


def test_no_prompt_starts_from_a_corpus_sentence(client: TestClient, trained_run: Path) -> None:
    prompts = checkpoint.load(trained_run).prompts
    result = client.post("/api/generate", json={"length": 5, "seed": 3}).json()
    assert result["prompt"] in prompts and result["text"] == result["prompt"] + result["text"][-5:]


def test_stream_sends_the_prompt_then_each_token_then_done(client: TestClient) -> None:
    body = {"prompt": "KING:", "length": 30, "seed": 5}
    parsed = events(client, body)
    assert parsed[0] == ("prompt", {"text": "KING:"})
    assert [name for name, _ in parsed[1:-1]] == ["message"] * 30
    assert parsed[-1][0] == "done" and parsed[-1][1]["tokens"] == 30
    text = "".join(data["text"] for _, data in parsed[:-1])
    assert text == client.post("/api/generate", json=body).json()["text"]


def test_info_is_a_model_card_and_prompt_a_corpus_sentence(client: TestClient, trained_run: Path) -> None:
    info = client.get("/api/info").json()
    assert info["model"] == "transformer" and info["parameters"] > 0 and info["level"] == "char"
    assert info["corpus"] and "val_loss" in info["metrics"] and info["title"] and info["description"]
    assert info["checkpoint"] in ("best", "last") and info["corpus"] == ["shakespeare_8k.txt"]
    assert not [v for v in strings(info) if v.startswith("/") or str(trained_run) in v]  # no folder of this machine
    prompts = checkpoint.load(trained_run).prompts
    assert client.get("/api/prompt").json()["prompt"] in prompts
    assert client.get("/api/prompt?seed=4").json() == client.get("/api/prompt?seed=4").json()


def strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict | list):
        for item in value.values() if isinstance(value, dict) else value:
            yield from strings(item)


def test_the_published_model_card_names_no_folder_of_this_machine(trained_run: Path) -> None:
    model = load(trained_run)
    files = [{"path": f"/home/me/corpora/reviews/r{i}.txt", "tokens": 10, "bytes": 40} for i in range(30)]
    source = {"source": "/home/me/runs/base", "model": "lstm", "vocab_size": 70, "added_tokens": 2}
    extra = {**model.checkpoint.train_config.get("extra", {}), "init_from": source}
    model.checkpoint = dataclasses.replace(
        model.checkpoint, corpus={"files": files}, train_config={**model.checkpoint.train_config, "extra": extra}
    )
    card = model.info(local=False)
    assert (
        card["corpus"] == ["reviews/ (30 files, 1.2 kB, 300 tokens)"]
        and card["init_from"] == "base (lstm, 70 tokens, +2)"
    )
    assert card["checkpoint"] in ("best", "last") and not [v for v in strings(card) if "/home/me" in v or v[:1] == "/"]
    assert model.info()["corpus"] == ["/home/me/corpora/reviews/ (30 files, 1.2 kB, 300 tokens)"]  # `textweaver info`


@pytest.mark.parametrize(("body", "message"), [
    ({"length": 0}, "length: Input should be greater than or equal to 1"),
    ({"length": 2001}, "length: Input should be less than or equal to 2000"),
    ({"length": "long"}, "length: Input should be a valid integer, unable to parse string as an integer"),
    ({"temperature": 2.5}, "temperature: Input should be less than or equal to 2"),
    ({"temperature": -1}, "temperature: Input should be greater than or equal to 0"),
    ({"top_k": 0}, "top_k: Input should be greater than or equal to 1"),
    ({"top_p": 0}, "top_p: Input should be greater than 0"),
    ({"top_p": 1.5}, "top_p: Input should be less than or equal to 1"),
    ({"num_samples": 17}, "num_samples: Input should be less than or equal to 16"),
    ({"seed": -1}, "seed: Input should be greater than or equal to 0"),
    ({"prompt": "x" * 2001}, "prompt: String should have at most 2000 characters"),
    ({"lenght": 10}, "lenght: Extra inputs are not permitted"),
    ({"repetition_penalty": 0}, "repetition_penalty: Input should be greater than or equal to 0.000001"),
    ({"repetition_penalty": 1e7}, "repetition_penalty: Input should be less than or equal to 1000000"),
    ({"stop": ""}, "stop: String should have at least 1 character"),
    ({"stop": "x" * 101}, "stop: String should have at most 100 characters"),
])  # fmt: skip
def test_out_of_range_input_gets_422_with_a_clear_message(
    client: TestClient, body: dict[str, Any], message: str
) -> None:
    response = client.post("/api/generate", json=body)
    assert response.status_code == 422
    assert response.json()["message"] == message


def test_temperature_0_is_greedy_whatever_the_seed_and_equals_python(client: TestClient, trained_run: Path) -> None:
    body = {"prompt": "ROMEO:", "length": 120, "temperature": 0}
    greedy = client.post("/api/generate", json={**body, "seed": 1}).json()
    assert greedy["text"] == client.post("/api/generate", json={**body, "seed": 2}).json()["text"]
    assert greedy["settings"]["temperature"] == 0
    assert greedy["text"] == load(trained_run).generate("ROMEO:", 120, temperature=0)


def test_repetition_penalty_changes_the_text_as_python_does(client: TestClient, trained_run: Path) -> None:
    for temperature in (0.0, 0.8):
        body = {"prompt": "ROMEO:", "length": 200, "temperature": temperature, "seed": 1}
        plain = client.post("/api/generate", json=body).json()["text"]
        penalised = client.post("/api/generate", json={**body, "repetition_penalty": 1.5}).json()
        assert penalised["text"] != plain and penalised["settings"]["repetition_penalty"] == 1.5
        python = load(trained_run).generate("ROMEO:", 200, temperature=temperature, seed=1, repetition_penalty=1.5)
        assert penalised["text"] == python
        assert client.post("/api/generate", json={**body, "repetition_penalty": 1.0}).json()["text"] == plain


def test_a_stop_string_cuts_the_text_before_it_in_both_endpoints(client: TestClient) -> None:
    body = {"prompt": "ROMEO:", "length": 200, "temperature": 0}
    continuation = client.post("/api/generate", json=body).json()["text"].removeprefix("ROMEO:")
    stop = continuation[60:63]
    expected = "ROMEO:" + continuation[: continuation.index(stop)]
    cut = client.post("/api/generate", json={**body, "stop": stop}).json()
    assert cut["text"] == expected and cut["settings"]["stop"] == stop
    assert cut["tokens"] == continuation.index(stop) + len(stop) < 200  # the tokens that were generated
    parsed = events(client, {**body, "stop": stop})
    assert "".join(data["text"] for _, data in parsed[:-1]) == expected
    assert parsed[-1] == ("done", {**parsed[-1][1], "tokens": cut["tokens"]})
    absent = events(client, {**body, "stop": "\x00"})  # never appears: the full length, counted once
    assert "".join(data["text"] for _, data in absent[:-1]) == "ROMEO:" + continuation
    assert absent[-1][1]["tokens"] == 200


def test_the_page_config_gives_the_limits_the_server_checks(client: TestClient) -> None:
    limits = client.get("/config.json").json()["limits"]
    assert limits == server.page_limits()
    assert limits["max_prompt_chars"] == http.MAX_PROMPT_CHARS and limits["max_stop_chars"] == http.MAX_STOP_CHARS
    assert limits["repetition_window"] == SamplingOptions().repetition_window
    for field, value, status in (("repetition_penalty", limits["max_repetition_penalty"], 200),
                                 ("repetition_penalty", limits["max_repetition_penalty"] * 2, 422),
                                 ("repetition_penalty", limits["min_repetition_penalty"], 200),
                                 ("temperature", limits["max_temperature"], 200),
                                 ("stop", "x" * limits["max_stop_chars"], 200),
                                 ("stop", "x" * (limits["max_stop_chars"] + 1), 422)):  # fmt: skip
        assert client.post("/api/generate", json={"prompt": "a", "length": 3, field: value}).status_code == status


def test_stream_is_one_sample_and_validated_too(client: TestClient) -> None:
    response = client.post("/api/generate/stream", json={"num_samples": 2})
    assert response.status_code == 422 and "num_samples: Extra inputs" in response.json()["message"]
    response = client.post("/api/generate/stream", json={"length": 99999})
    assert response.status_code == 422 and response.json()["message"].startswith("length:")


def test_the_page_is_served_in_server_mode_with_a_csp(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and '<textarea id="prompt"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    config = client.get("/config.json").json()
    assert config["mode"] == "server" and config["level"] == "char" and config["max_length"] == 2000
    for name, kind in (("app.js", "text/javascript"), ("style.css", "text/css")):
        response = client.get(f"/{name}")
        assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
    assert client.get("/export.py").status_code == 404
    assert client.get("/vendor/onnxruntime-web/LICENSE").status_code == 404  # the runtime is for static exports
    for docs in ("/docs", "/redoc", "/docs/oauth2-redirect"):  # Swagger UI and ReDoc would load from a CDN
        assert client.get(docs).status_code == 404
    assert {"/api/generate", "/api/generate/stream", "/api/info", "/api/prompt"} <= set(
        client.get("/openapi.json").json()["paths"]
    )


def test_serve_binds_127_0_0_1_by_default(trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert inspect.signature(server.serve).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(serve_command).parameters["host"].default == "127.0.0.1"
    seen: dict[str, Any] = {}
    monkeypatch.setattr("uvicorn.run", lambda app, **kw: seen.update(kw))
    server.serve(trained_run, port=free_port())
    assert seen["host"] == "127.0.0.1"


def test_a_busy_port_or_bad_port_is_a_one_line_error(trained_run: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(TextweaverError, match=f"cannot listen on 127.0.0.1:{port}.*choose another --port"):
            server.serve(trained_run, port=port)
    with pytest.raises(TextweaverError, match="--port must be between 1 and 65535"):
        server.serve(trained_run, port=70000)
    with pytest.raises(TextweaverError, match="--timeout must be a positive number of seconds"):
        server.serve(trained_run, port=free_port(), timeout=0)
    with pytest.raises(TextweaverError, match="--workers must be at least 1"):
        server.serve(trained_run, port=free_port(), workers=0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_full_queue_refuses_with_503_and_retry_after_then_recovers(trained_run: Path) -> None:
    app = create_app(trained_run, workers=1, queue=1)
    slots: http.GenerationSlots = app.state.slots
    local = TestClient(app, base_url=OWN)
    tickets = [slots.admit(), slots.admit()]  # one running and one waiting: the queue is full
    assert all(tickets)
    for path in ("/api/generate", "/api/generate/stream"):
        refused = local.post(path, json={"prompt": "a", "length": 5})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.json()["message"].startswith("busy: 2 generations are running or waiting")
    for ticket in tickets:  # the two held admissions finish
        assert ticket is not None
        ticket.release()
        ticket.release()  # giving back twice counts once
    assert slots.admitted == 0
    assert local.post("/api/generate", json={"prompt": "a", "length": 5}).status_code == 200
    assert [name for name, _ in events(local, {"prompt": "a", "length": 5})][-1] == "done"
    assert slots.admitted == 0  # every finished request gave its place back


def test_a_failed_generation_gives_its_place_back(trained_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(trained_run, workers=1, queue=0)
    local = TestClient(app, base_url=OWN)

    def fails(*args: object, **kwargs: object) -> list[str]:
        raise TextweaverError("the model refused")

    monkeypatch.setattr(app.state.model.generator, "stream", fails)
    refused = local.post("/api/generate", json={"prompt": "a", "length": 5})
    assert refused.status_code == 422 and refused.json()["message"] == "the model refused"
    assert app.state.slots.admitted == 0
    monkeypatch.undo()
    assert local.post("/api/generate", json={"prompt": "a", "length": 5}).status_code == 200


def test_a_request_body_over_the_limit_gets_413_before_it_is_read(client: TestClient) -> None:
    big = json.dumps({"prompt": "a" * (http.MAX_BODY_BYTES + 10)})
    refused = client.post("/api/generate", content=big, headers={"content-type": "application/json"})
    assert refused.status_code == 413 and "Content Too Large" in refused.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"prompt": "'
        for _ in range(http.MAX_BODY_BYTES // 1000 + 1):
            yield b"a" * 1000
        yield b'"}'

    refused = client.post("/api/generate", content=chunks(), headers={"content-type": "application/json"})
    assert refused.status_code == 413 and "Content Too Large" in refused.text


def test_a_generation_past_the_time_limit_gets_504_and_gives_its_worker_back(trained_run: Path) -> None:
    app = create_app(trained_run, workers=1, queue=0, timeout=0.05)
    local = TestClient(app, base_url=OWN)
    slow = local.post("/api/generate", json={"prompt": "a", "length": 2000, "num_samples": 16})
    assert slow.status_code == 504 and "0.05 s limit per request (--timeout)" in slow.json()["message"]
    got = events(local, {"prompt": "a", "length": 2000})
    assert got[-1][0] == "error" and "--timeout" in got[-1][1]["message"]
    assert app.state.slots.admitted == 0
    quick = TestClient(create_app(trained_run, workers=1, queue=0, timeout=30), base_url=OWN)
    assert quick.post("/api/generate", json={"prompt": "a", "length": 5}).status_code == 200


def test_a_stream_discarded_unread_gives_its_worker_back(trained_run: Path) -> None:
    app = create_app(trained_run, workers=1, queue=0)
    endpoint = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/api/generate/stream")  # type: ignore[attr-defined]
    response = endpoint(http.StreamParams(prompt="a", length=5))
    assert app.state.slots.admitted == 1
    del response
    gc.collect()
    assert app.state.slots.admitted == 0


@pytest.fixture(scope="module")
def live(trained_run: Path) -> Iterator[tuple[str, http.GenerationSlots]]:
    """The app served by a real uvicorn on a loopback port (for disconnects and raw requests)."""
    app = create_app(trained_run, workers=1, queue=1)
    port = free_port()
    real = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=real.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not real.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", app.state.slots
    real.should_exit = True
    thread.join(timeout=10)


def test_a_client_that_disconnects_mid_stream_frees_its_worker(live: tuple[str, http.GenerationSlots]) -> None:
    url, slots = live
    for _ in range(3):  # more disconnects than workers + queue: each must give its place back
        with (
            httpx.Client(timeout=10) as http,
            http.stream("POST", f"{url}/api/generate/stream", json={"prompt": "a", "length": 2000}) as response,
        ):
            assert response.status_code == 200
            next(response.iter_lines())  # the stream is running; now hang up
        deadline = time.monotonic() + 10
        while slots.admitted:
            assert time.monotonic() < deadline, "the worker was not given back after the client left"
            time.sleep(0.02)
    done = httpx.post(f"{url}/api/generate", json={"prompt": "a", "length": 5}, timeout=10)
    assert done.status_code == 200


def raw_get(url: str, target: str) -> tuple[int, bytes]:
    """Send the request line exactly as written (HTTP clients would normalise the dots away)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize("target", [
    "/../../../../etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd", "/..\\..\\etc\\passwd",
    "/vendor/../../server.py", "/app.js/../../server.py", "//etc/passwd", "/%2fetc%2fpasswd", "/.%2e/pyproject.toml",
    "/index.html%00.js", "/web/index.html", "/vendor/onnxruntime-web/LICENSE",
])  # fmt: skip
def test_static_routes_serve_nothing_outside_the_page(live: tuple[str, http.GenerationSlots], target: str) -> None:
    status, data = raw_get(live[0], target)
    assert status in (400, 404), data[:200]
    assert b"root:" not in data and b"import " not in data and b"[project]" not in data


def test_no_cross_origin_access_is_granted(client: TestClient) -> None:
    origin = {"Origin": "https://evil.example"}
    for response in (
        client.get("/api/info", headers=origin),
        client.post("/api/generate", json={"prompt": "a", "length": 3}, headers=origin),
        client.options("/api/generate", headers={**origin, "Access-Control-Request-Method": "POST"}),
    ):
        assert not any(h.lower().startswith("access-control-") for h in response.headers), response.headers


def test_a_prompt_that_is_not_valid_unicode_gets_422(client: TestClient) -> None:
    body = '{"prompt": "ab\\ud800", "length": 3}'  # JSON may encode a lone surrogate; it is no text
    for path in ("/api/generate", "/api/generate/stream"):
        refused = client.post(path, content=body, headers={"content-type": "application/json"})
        message = refused.json()["message"]
        assert refused.status_code == 422 and message.startswith("prompt: ") and "\n" not in message


def test_a_rebound_host_gets_400_and_one_line_and_the_loopback_names_pass(trained_run: Path) -> None:
    app = create_app(trained_run)
    for base in (OWN, "http://localhost:8000", "http://[::1]:8000", "http://localhost", "http://LOCALHOST:9"):
        assert TestClient(app, base_url=base).get("/api/info").status_code == 200, base
    client = TestClient(app, base_url=f"http://{REBOUND}")
    for response in (client.get("/api/info"), client.get("/"), client.post("/api/generate", json={"length": 3})):
        assert response.status_code == 400
        message = response.json()["message"]
        assert message.startswith(f"Host '{REBOUND}' refused: this server answers only to 127.0.0.1, localhost, [::1]")
        assert "\n" not in message and "open http://127.0.0.1:" in message
    served_on_the_network = TestClient(create_app(trained_run, host="0.0.0.0"), base_url="http://192.168.1.20:8000")
    assert served_on_the_network.get("/api/info").status_code == 200  # its address, as other machines reach it
    assert served_on_the_network.get("/api/info", headers={"Host": REBOUND}).status_code == 400
