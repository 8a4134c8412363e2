"""The studio's API: texts in (limits, bad files, hostile names), trainings as separate processes (queue,
stop, resume, a restarted studio), live events, generation and downloads, and who may use it (no other
site, no rebound DNS name)."""

from __future__ import annotations

import bz2
import io
import json
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from fastapi.testclient import TestClient

import textweaver.app.studio.trainer
import textweaver.app.studio.workspace
import textweaver.export.site
from textweaver import TextweaverError
from textweaver.app.studio.app import create_app
from textweaver.app.studio.generate import MAX_MODELS, ModelCache
from textweaver.app.studio.runs import read_samples
from textweaver.app.studio.workspace import parse_size

from browser import serve_app
from conftest import SHAKESPEARE, XIYOUJI, one_line_error, run_cli

FAST = {"model": "lstm tiny", "eval_every": 50}  # trainings in tests: the smallest model, evaluated often
OWN = "http://127.0.0.1:8000"  # the studio's address in the user's browser: the Host it answers to
REBOUND = "attacker.example:8000"  # a site whose DNS now points at 127.0.0.1: its page is same-origin with us


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(tmp_path / "ws", max_upload="64KB")
    with TestClient(app, base_url=OWN) as client:
        yield client
    app.state.trainer.close()


def upload(client: TestClient, name: str, data: bytes, **params: str) -> Any:
    return client.post("/api/texts", params={"name": name, **params}, content=data)


def one_line(response: Any, status: int, pattern: str) -> str:
    assert response.status_code == status, response.text
    message = response.json()["message"]
    assert "\n" not in message and pattern in message, message
    return str(message)


def wait_for(client: TestClient, name: str, statuses: tuple[str, ...], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/runs/{name}").json()
        if run["status"] in statuses:
            return dict(run)
        time.sleep(0.2)
    raise AssertionError(f"{name} never reached {statuses}: {run}")


def train_until_saved(client: TestClient, texts: list[str], name: str | None = None) -> str:
    """A run trained until its first checkpoint, then stopped. A short budget would end it without any
    checkpoint on a slow or busy machine, where choosing the recipe alone may take longer."""
    body = {"texts": texts, "budget": "10m", **FAST, **({"name": name} if name else {})}
    name = str(client.post("/api/runs", json=body).json()["name"])
    deadline = time.monotonic() + 300
    while not client.get(f"/api/runs/{name}").json()["has_model"]:
        assert time.monotonic() < deadline, client.get(f"/api/runs/{name}").json()
        time.sleep(0.2)
    client.post(f"/api/runs/{name}/stop")
    wait_for(client, name, ("stopped",))
    return name


def test_an_uploaded_text_is_stored_under_the_studios_own_name_with_its_statistics(studio: TestClient) -> None:
    text = SHAKESPEARE.read_text(encoding="utf-8")
    info = upload(studio, "../../etc/Shakespeare excerpt.txt", SHAKESPEARE.read_bytes()).json()
    assert info["name"] == "Shakespeare excerpt.txt"  # the client's path is only a label
    assert (info["characters"], info["distinct"], info["lines"]) == (len(text), len(set(text)), text.count("\n"))
    assert (info["script"], info["encoding"], info["bytes"]) == ("Latin", "utf-8", SHAKESPEARE.stat().st_size)
    root = Path(studio.app.state.workspace.root)  # type: ignore[attr-defined]
    stored = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    assert sorted(stored) == [f"texts/{info['id']}/meta.json", f"texts/{info['id']}/text.txt"]
    chinese = upload(studio, "西游记.txt", XIYOUJI.read_bytes()[:30000].decode("utf-8", "ignore").encode()).json()
    assert chinese["script"] == "Han" and chinese["name"] == "西游记.txt"
    assert [t["id"] for t in studio.get("/api/texts").json()] == sorted([info["id"], chinese["id"]])
    pasted = upload(studio, "pasted text", b"To be, or not to be.\n").json()
    assert pasted["characters"] == 21 and pasted["lines"] == 1


def test_bad_files_are_refused_in_one_line_and_leave_nothing_behind(studio: TestClient) -> None:
    novel = XIYOUJI.read_text(encoding="utf-8")[:3000]
    gbk = novel.encode("gb18030")
    message = one_line(upload(studio, "novel.txt", gbk), 422, "novel.txt: invalid utf-8 at byte offset 0")
    assert "looks like gb18030" in message  # the same advice as the CLI
    ok = upload(studio, "novel.txt", gbk, encoding="gb18030").json()
    assert ok["characters"] == len(novel) and ok["script"] == "Han"
    one_line(upload(studio, "a.bin", b"text\0\1\2"), 422, "a.bin: looks like a binary file (NUL byte at byte offset 4)")
    one_line(upload(studio, "empty.txt", b""), 422, "empty.txt: the file is empty")
    one_line(upload(studio, "blank.txt", b" \n\n"), 422, "blank.txt: the file holds no text")
    bomb = bz2.compress(b"a" * 10**7)  # 10 MB in 50 bytes: only text encodings may decode an upload
    for codec in ("bz2_codec", "zlib_codec", "base64"):
        one_line(upload(studio, "bomb.txt", bomb, encoding=codec), 422, f"--encoding '{codec}' is not a text encoding")
    one_line(upload(studio, "big.txt", b"a" * (64 * 1024 + 1)), 413, "upload limit of 0.0625 MB (--max-upload)")
    chunks = iter([b"b" * 40_000, b"b" * 40_000])  # no Content-Length: counted while it streams to disk
    one_line(studio.post("/api/texts", params={"name": "s.txt"}, content=chunks), 413, "upload limit")
    one_line(studio.post("/api/runs", content=b"{" + b" " * 70_000 + b"}"), 413, "request body larger than")
    texts = Path(studio.app.state.workspace.texts_dir)  # type: ignore[attr-defined]
    assert [p.name for p in texts.iterdir()] == [ok["id"]]


def test_hostile_run_names_and_unknown_things_get_4xx_and_one_line(studio: TestClient) -> None:
    text = upload(studio, "s.txt", SHAKESPEARE.read_bytes()).json()["id"]
    for name in ("../escape", ".hidden", "a/b", "x" * 65, "sp ace"):
        one_line(studio.post("/api/runs", json={"texts": [text], "name": name, **FAST}), 422, "bad run name")
    one_line(studio.post("/api/runs", json={"texts": ["../../etc/passwd"]}), 404, "no such text")
    one_line(studio.post("/api/runs", json={"texts": [text], "budget": "soon"}), 422, "cannot read 'soon'")
    one_line(studio.post("/api/runs", json={"texts": [text], "model": "gpt 9"}), 422, "unknown model 'gpt 9'")
    one_line(studio.post("/api/runs", json={"texts": [text], "init_from": "builtin:english", **FAST}), 422,
             "keeps its base's model")  # fmt: skip
    one_line(studio.get("/api/runs/nothing"), 404, "no such run")
    one_line(studio.get("/api/runs/..%2F..%2Fetc"), 404, "not found")
    one_line(studio.get("/api/runs/..hidden"), 422, "bad run name")
    one_line(studio.delete("/api/texts/t000000000000"), 404, "no such text")
    one_line(studio.get("/../etc/passwd"), 404, "not found")
    assert studio.get("/api/runs").json()["runs"] == []


def test_trainings_run_one_at_a_time_can_be_stopped_and_stream_their_progress(studio: TestClient) -> None:
    text = upload(studio, "Shakespeare.txt", SHAKESPEARE.read_bytes()).json()["id"]
    # a budget that outlasts choosing the recipe on a busy machine (it counts against the budget)
    first = studio.post("/api/runs", json={"texts": [text], "budget": "30s", **FAST}).json()
    second = studio.post("/api/runs", json={"texts": ["builtin:shakespeare"], "budget": "5m", "name": "two", **FAST})
    assert first["name"] == "Shakespeare-1" and first["corpus"] == ["Shakespeare.txt"]
    assert second.status_code == 201 and second.json()["status"] == "queued" and second.json()["queue_position"] == 1
    one_line(studio.post("/api/runs/two/resume"), 409, "already queued")
    one_line(studio.delete("/api/runs/two"), 409, "stop it before deleting")
    events = studio.get(f"/api/runs/{first['name']}/events").text  # streams until the run ends
    kinds = [line.removeprefix("event: ") for line in events.splitlines() if line.startswith("event: ")]
    assert kinds.count("metrics") >= 2 and "sample" in kinds and kinds[-1] == "status"
    done = json.loads(events.rstrip().splitlines()[-1].removeprefix("data: "))
    assert done["status"] == "done" and done["best_val_bpc"] > 0 and done["has_model"]
    assert done["recipe"]["model"]["kind"] == "lstm"
    metrics = studio.get(f"/api/runs/{first['name']}/metrics").json()
    assert metrics[-1]["elapsed_s"] >= 6 and any("val_loss" in m for m in metrics)
    assert wait_for(studio, "two", ("running",))["queue_position"] is None  # the queue moved on
    deadline = time.monotonic() + 120
    while not studio.get("/api/runs/two/metrics").json() and time.monotonic() < deadline:
        time.sleep(0.2)  # training (not still starting): the stop saves a checkpoint
    stopped = studio.post("/api/runs/two/stop").json()
    assert stopped["status"] == "running"  # until the process has saved its checkpoint
    stopped = wait_for(studio, "two", ("stopped",))
    assert stopped["has_model"] and 0 < stopped["elapsed_s"] < 300  # stopped, long before its budget
    samples = studio.get(f"/api/runs/{first['name']}/samples").json()
    assert samples and set(samples[0]["samples"]) == {"0.2", "0.5", "1.0"}


def test_a_training_stopped_while_it_starts_is_stopped_not_failed(
    studio: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a training process that stays where a real one is while it imports torch: before it handles SIGTERM
    starting = [sys.executable, "-c", "import time; time.sleep(120)"]
    monkeypatch.setattr(textweaver.app.studio.trainer, "train_command", lambda *args: starting)
    studio.post("/api/runs", json={"texts": ["builtin:shakespeare"], "budget": "30s", "name": "early", **FAST})
    wait_for(studio, "early", ("running",))
    studio.post("/api/runs/early/stop")  # SIGTERM ends it at once, before it saved anything
    stopped = wait_for(studio, "early", ("stopped", "failed"))
    assert (stopped["status"], stopped["message"]) == ("stopped", "stopped before its first step: resume starts it")


def test_a_failed_training_shows_its_one_line_error_and_the_studio_lives_on(studio: TestClient) -> None:
    text = upload(studio, "tiny.txt", b"abc\n").json()["id"]  # far too short to train on
    studio.post("/api/runs", json={"texts": [text], "budget": "5s", "name": "short", **FAST})
    failed = wait_for(studio, "short", ("failed",))
    assert failed["message"].startswith("tiny.txt: the corpus has 4 training tokens, fewer than the context")
    assert studio.get("/api/studio").status_code == 200


def test_a_relative_workspace_and_a_chinese_file_name_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    app = create_app("ws")  # as `textweaver studio` makes it: relative to where it was started
    with TestClient(app, base_url=OWN) as client:
        text = upload(client, "西游记.txt", XIYOUJI.read_bytes()).json()["id"]
        assert train_until_saved(client, [text]) == "西游记-1"  # trained in its run folder, under the text's name
        one_line(client.patch("/api/runs/西游记-1", json={"name": "_hidden"}), 422, "bad run name")
        for path, params, filename in (  # RFC 6266: an ASCII stand-in, and the name itself in UTF-8
            ("report", {}, "西游记-1-report.html"),
            ("download", {"format": "onnx"}, "西游记-1.onnx"),
            ("download", {"format": "web"}, "西游记-1-web.zip"),
        ):
            response = client.get(f"/api/runs/西游记-1/{path}", params=params)
            assert response.status_code == 200, response.text
            plain, extended = response.headers["content-disposition"].split("; ")[1:]
            assert plain == f'filename="___{filename.removeprefix("西游记")}"'
            assert extended.startswith("filename*=UTF-8''") and unquote(extended.split("''")[1]) == filename
    app.state.trainer.close()


def test_a_restarted_studio_lists_the_interrupted_run_and_resumes_it(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    app = create_app(workspace)
    with TestClient(app, base_url=OWN) as client:
        client.post("/api/runs", json={"texts": ["builtin:shakespeare"], "budget": "40s", "name": "long", **FAST})
        wait_for(client, "long", ("running",))
        deadline = time.monotonic() + 180
        while not client.get("/api/runs/long/metrics").json() and time.monotonic() < deadline:
            time.sleep(0.2)
    app.state.trainer.close()  # the studio goes away mid-run: the training saves its checkpoint and ends
    again = create_app(workspace)
    with TestClient(again, base_url=OWN) as client:
        (run,) = client.get("/api/runs").json()["runs"]
        assert run["name"] == "long" and run["status"] == "interrupted" and run["has_model"]
        steps = run["steps"]
        assert client.post("/api/runs/long/resume").json()["status"] in ("queued", "running")
        wait_for(client, "long", ("running",))
        deadline = time.monotonic() + 180
        while client.get("/api/runs/long").json()["steps"] <= steps and time.monotonic() < deadline:
            time.sleep(0.2)
        assert client.get("/api/runs/long").json()["steps"] > steps  # continued, not restarted
        client.post("/api/runs/long/stop")
        wait_for(client, "long", ("stopped",))
    again.state.trainer.close()


@pytest.fixture
def trained(studio: TestClient) -> str:
    return train_until_saved(studio, ["builtin:shakespeare"], "first")


def test_a_run_generates_renames_publishes_and_is_deleted(
    studio: TestClient, trained: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    exports: list[tuple[Any, ...]] = []
    export = textweaver.export.site.export
    record = lambda *args, **kw: exports.append(args) or export(*args, **kw)  # noqa: E731
    monkeypatch.setattr(textweaver.export.site, "export", record)
    stream = studio.post(f"/api/runs/{trained}/generate/stream", json={"prompt": "ROMEO:", "length": 40, "seed": 1})
    assert stream.status_code == 200 and "event: done" in stream.text
    one_line(studio.post(f"/api/runs/{trained}/generate/stream", json={"length": 0}), 422, "length")
    renamed = studio.patch(f"/api/runs/{trained}", json={"name": "romeo"}).json()
    assert renamed["name"] == "romeo" and renamed["status"] == "stopped"
    one_line(studio.patch("/api/runs/romeo", json={"name": "../x"}), 422, "bad run name")
    one_line(studio.get("/api/runs/romeo/download", params={"format": "pdf"}), 422, "unknown format 'pdf'")
    page = studio.get("/api/runs/romeo/download", params={"format": "web", "quantize": "int8"})
    assert page.status_code == 200 and page.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(page.content))
    assert {"romeo/index.html", "romeo/model.onnx", "romeo/config.json"} <= set(archive.namelist())
    assert json.loads(archive.read("romeo/export.json"))["checkpoint"] in ("best", "last")
    folders = [str(studio.app.state.workspace.root), str(Path(textweaver.export.site.__file__).parent)]  # type: ignore[attr-defined]
    for name in archive.namelist():  # a published page names no folder of this machine (run, corpus)
        assert not [f for f in folders if f.encode() in archive.read(name)], name
    onnx = studio.get("/api/runs/romeo/download", params={"format": "onnx"})
    assert onnx.status_code == 200 and onnx.headers["content-disposition"].endswith("filename*=UTF-8''romeo.onnx")
    assert len(exports) == 2
    again = studio.get("/api/runs/romeo/download", params={"format": "web", "quantize": "int8"})
    assert again.content == page.content and studio.get("/api/runs/romeo/download?format=onnx").content == onnx.content
    assert len(exports) == 2  # the same checkpoint: served again, not exported again
    int8_onnx = studio.get("/api/runs/romeo/download", params={"format": "onnx", "quantize": "int8"})
    one_line(int8_onnx, 422, "web page only")
    panel = studio.get("/api/runs/romeo/download", params={"format": "web", "quantize": "int8", "train_panel": True})
    names = set(zipfile.ZipFile(io.BytesIO(panel.content)).namelist())
    assert {"romeo/train-panel.js", "romeo/train.js"} <= names and any(n.startswith("romeo/train/") for n in names)
    assert not any(n.startswith("romeo/train") for n in archive.namelist())  # the panel is opt-in
    assert studio.get("/api/runs/romeo/download", params={"format": "web", "quantize": "int8"}).content == page.content
    assert len(exports) == 3  # each variant cached beside the other
    onnx_panel = studio.get("/api/runs/romeo/download", params={"format": "onnx", "train_panel": True})
    one_line(onnx_panel, 422, "train_panel is for the web page")
    report = studio.get("/api/runs/romeo/report")
    assert report.status_code == 200
    assert report.headers["content-disposition"] == (
        "attachment; filename=\"romeo-report.html\"; filename*=UTF-8''romeo-report.html"
    )
    assert 'role="img"' in report.text and "Content-Security-Policy" in report.text
    assert studio.delete("/api/runs/romeo").status_code == 204
    assert studio.get("/api/runs").json()["runs"] == []


def test_a_finished_run_resumes_only_with_a_larger_budget(studio: TestClient, trained: str) -> None:
    studio.post(f"/api/runs/{trained}/resume", json={"budget": "1s"})  # the run has trained about that long
    wait_for(studio, trained, ("done",), timeout=120)  # it reached its budget
    studio.post(f"/api/runs/{trained}/resume")
    again = wait_for(studio, trained, ("done",), timeout=120)
    assert again["message"] == "it already reached its time budget: resume it with a larger one"
    one_line(studio.post(f"/api/runs/{trained}/resume", json={"budget": "never"}), 422, "cannot read 'never'")
    steps, budget = again["steps"], f"{int(again['elapsed_s']) + 10}s"
    assert studio.post(f"/api/runs/{trained}/resume", json={"budget": budget}).json()["budget"] == budget
    assert wait_for(studio, trained, ("done",), timeout=120)["steps"] > steps


def test_requests_from_other_sites_cannot_use_the_api(studio: TestClient) -> None:
    evil = {"Origin": "http://evil.example"}
    one_line(studio.post("/api/texts", content=b"text", headers=evil), 403, "cross-site request refused")
    one_line(studio.post("/api/runs/x/stop", headers={"Sec-Fetch-Site": "cross-site"}), 403, "cross-site")
    one_line(studio.get("/api/runs", headers=evil), 403, "cross-site")
    for site in ("cross-site", "same-site"):  # an <img src> on another site, or another port of this machine
        one_line(studio.get("/api/runs/x/download", headers={"Sec-Fetch-Site": site}), 403, "cross-site")
        one_line(studio.get("/api/runs/x/report", headers={"Sec-Fetch-Site": site}), 403, "cross-site")
    assert upload(studio, "a.txt", b"some text\n").status_code == 201
    own = studio.post("/api/texts", content=b"more text\n", headers={"Origin": OWN, "Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 201
    assert studio.get("/", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200  # a link to the studio


def test_a_page_under_a_rebound_name_gets_400_and_one_line(studio: TestClient) -> None:
    """DNS rebinding: the attacker's page, now served from 127.0.0.1, sends its own name as Origin and Host."""
    rebound = {"Host": REBOUND, "Origin": f"http://{REBOUND}", "Sec-Fetch-Site": "same-origin"}
    for response in (
        studio.get("/api/runs", headers=rebound),
        studio.post("/api/texts", params={"name": "a.txt"}, content=b"some text\n", headers=rebound),
        studio.post("/api/runs", json={"texts": ["builtin:shakespeare"]}, headers=rebound),
        studio.delete("/api/runs/x", headers=rebound),
        studio.get("/", headers=rebound),
    ):
        message = one_line(response, 400, f"Host '{REBOUND}' refused")
        assert message.startswith(f"Host '{REBOUND}' refused: this server answers only to 127.0.0.1, localhost, [::1]")
    assert studio.get("/api/texts").json() == [] and studio.get("/api/runs").json()["runs"] == []
    for name in ("localhost:8000", "[::1]:8000", "127.0.0.1"):
        assert studio.get("/api/studio", headers={"Host": name}).status_code == 200, name
    for docs in ("/docs", "/redoc"):  # Swagger UI and ReDoc would load from a CDN into the studio's origin
        one_line(studio.get(docs), 404, "not found")
    assert "/api/runs" in studio.get("/openapi.json").json()["paths"]  # the page reads its limits there


def test_the_model_cache_keeps_the_most_recently_used_few(tmp_path: Path) -> None:
    loads: list[str] = []
    cache = ModelCache(lambda run_dir: loads.append(run_dir.name) or run_dir.name)  # type: ignore[arg-type, func-returns-value]
    runs = []
    for i in range(MAX_MODELS + 2):
        (tmp_path / f"r{i}" / "best").mkdir(parents=True)
        (tmp_path / f"r{i}" / "best" / "config.json").write_text("{}")
        runs.append(tmp_path / f"r{i}")
    for run in runs:
        assert cache.get(run.name, run) == run.name  # type: ignore[comparison-overlap]
    cache.get("r2", runs[2])  # used again: now the most recent
    assert len(cache.models) == MAX_MODELS and list(cache.models) == ["r3", "r4", "r2"][-MAX_MODELS:]
    cache.get("r0", runs[0])  # dropped long ago: loaded again
    assert loads == [f"r{i}" for i in range(MAX_MODELS + 2)] + ["r0"] and len(cache.models) == MAX_MODELS


def test_an_upload_being_stored_does_not_hold_up_other_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large text arrives slowly and is then decoded; requests sent meanwhile are answered. Deterministic:
    the body pauses halfway, and the decoding waits, until a request sent at that moment has its answer.
    Were either done on the event loop, no request could be answered then and the wait would time out."""
    halfway, decoding = threading.Event(), threading.Event()
    answered_while_streaming, answered_while_decoding = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}
    iter_text = textweaver.app.studio.workspace.iter_text

    def slow_decoding(path: Path, options: Any) -> Iterator[str]:
        decoding.set()
        seen["decoding"] = answered_while_decoding.wait(30)
        yield from iter_text(path, options)

    monkeypatch.setattr(textweaver.app.studio.workspace, "iter_text", slow_decoding)
    line = b"It is a truth universally acknowledged, that a single man in possession of a good fortune.\n"

    def body() -> Iterator[bytes]:
        for i in range(64):
            if i == 32:
                halfway.set()
                seen["streaming"] = answered_while_streaming.wait(30)
            yield line * 700  # 64 KB a chunk, 4 MB in all

    app = create_app(tmp_path / "ws")
    result: dict[str, httpx.Response] = {}
    with serve_app(app) as url:

        def send() -> None:
            result["upload"] = httpx.post(f"{url}api/texts", params={"name": "novel.txt"}, content=body(), timeout=120)

        sender = threading.Thread(target=send)
        sender.start()
        with httpx.Client(base_url=url, timeout=120) as other:
            assert halfway.wait(60)
            assert other.get("api/studio").status_code == 200
            answered_while_streaming.set()
            assert decoding.wait(60)
            assert other.get("api/texts").json() == []  # still being decoded: not listed yet
            answered_while_decoding.set()
            sender.join(120)
    app.state.trainer.close()
    assert seen == {"streaming": True, "decoding": True}
    assert result["upload"].status_code == 201 and result["upload"].json()["characters"] == 64 * 700 * len(line)


def test_samples_txt_is_read_back_as_records(tmp_path: Path) -> None:
    (tmp_path / "samples.txt").write_text(
        "===== step 500 | prompt 'ROMEO:'\n--- temperature 0.2\nthe king\nand queen\n--- temperature 1.0\n<b>x</b>\n",
        encoding="utf-8",
    )
    assert read_samples(tmp_path) == [
        {"step": 500, "prompt": "ROMEO:", "samples": {"0.2": "the king\nand queen", "1.0": "<b>x</b>"}}
    ]


def test_sizes_and_the_cli_refusals(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert parse_size("200MB") == 200 * 2**20 and parse_size("1.5gb") == 3 * 2**29 and parse_size("512") == 512
    one_line_error(*run_cli(["studio", "--max-upload", "lots"], capsys), r"--max-upload: cannot read 'lots' as a size")
    one_line_error(*run_cli(["studio", "--port", "0", "--workspace", str(tmp_path)], capsys), r"--port must be")


def test_start_from_auto_leaves_the_choice_to_train_and_none_asks_for_random_weights(tmp_path: Path) -> None:
    """The studio's "Start from": auto (no --init-from: train starts English or Chinese prose from its base),
    none (--init-from none, with any model), a base (model auto only)."""
    from textweaver.app.studio.trainer import train_command
    from textweaver.app.studio.workspace import RunRequest, Workspace

    workspace = Workspace(tmp_path / "ws", max_upload=1 << 20)

    def command(**options: Any) -> list[str]:
        record = workspace.new_run(RunRequest(texts=["builtin:shakespeare"], budget="2m", **options))
        return train_command(workspace, record, workspace.run_dir(record.name))

    assert "--init-from" not in command()
    scratch = command(init_from="none", model="gru small")
    assert scratch[scratch.index("--init-from") + 1] == "none" and "--model" in scratch
    tuned = command(init_from="builtin:chinese")
    assert tuned[tuned.index("--init-from") + 1] == "builtin:chinese"
    with pytest.raises(TextweaverError, match="keeps its base's model"):
        command(init_from="builtin:english", model="gru small")
