"""The studio's page in headless Chromium, as a new user would go: a text file in, a training watched
live (and found again after a reload), stopped, generated from, published as a zip whose page then
generates offline; a refused file explained inline; a phone's width; a run named in Chinese downloads
its page, model and report under its own name. Any error on a page fails the test, except the one
console line a refused upload's 422 makes, where a test expects it.

Needs Debian's chromium and the playwright package, launched as tests/test_browser.py does (whose
flags, static file server and exported-page driver it reuses). Screenshots of each step go to
tests/artifacts/studio-*.png (git-ignored).
"""

from __future__ import annotations

import re
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import onnx
import pytest

from textweaver.app.studio.app import create_app

from browser import ARTIFACTS, chromium, serve_app, serve_folder
from conftest import SHAKESPEARE, XIYOUJI
from test_browser import PageRun

pytestmark = pytest.mark.slow

TIMEOUT_MS = 180_000  # a training process starting and evaluating on a busy two-core machine
EVAL_EVERY = 25  # steps between evaluations: lstm tiny then draws a chart point every few seconds
# a file dropped on the drop zone, as a browser delivers it
DROP = """(zone, [name, text]) => {
  const data = new DataTransfer();
  data.items.add(new File([text], name, { type: "text/plain" }));
  zone.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
}"""
VAL_POINTS = "() => Number(document.getElementById('live-chart').dataset.valPoints || 0)"


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), viewport={"width": 1200, "height": 900},
                  accept_downloads=True) as context:  # fmt: skip
        context.set_default_timeout(TIMEOUT_MS)
        yield context


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`textweaver studio`'s app under uvicorn on 127.0.0.1, with a fresh workspace."""
    app = create_app(tmp_path_factory.mktemp("studio") / "workspace")
    with serve_app(app) as url:
        yield url
    app.state.trainer.close()


def open_studio(context: Any, url: str) -> PageRun:
    """The studio page, every request outside its origin blocked and recorded, console errors collected."""
    run = PageRun(context, url)
    run.page.goto(url)
    run.page.wait_for_selector("body[data-ready='true']")
    return run


def shot(target: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    target.screenshot(path=str(ARTIFACTS / f"studio-{name}.png"))


def section(page: Any, heading: str) -> Any:
    return page.locator("section").filter(has=page.get_by_role("heading", name=re.compile(heading)))


def start_training(page: Any, budget: str, model: str = "auto", start_from: str = "") -> None:
    page.get_by_label("Time budget").fill(budget)
    page.get_by_label("Start from").select_option(start_from)
    if not start_from:
        page.get_by_label("Model").select_option(model)
    advanced = section(page, "2. Train").locator("details", has=page.get_by_label("Evaluate every"))
    if advanced.get_attribute("open") is None:
        advanced.locator("summary").click()
    page.get_by_label("Evaluate every").fill(str(EVAL_EVERY))
    page.get_by_role("button", name="Start training").click()


def no_errors(run: PageRun, expected: tuple[str, ...] = ()) -> None:
    """No request left the origin, and the page logged no error (console or uncaught) but the ``expected``."""
    assert run.outside == [], f"requests outside the origin: {run.outside}"
    assert [e for e in run.errors if not any(x in e for x in expected)] == [], run.errors


def test_texts_come_by_chooser_drop_or_paste_and_a_refused_file_is_explained_in_one_line(
    context: Any, studio: str
) -> None:
    run = open_studio(context, studio)
    page = run.page
    bad = {"name": "novel.txt", "mimeType": "text/plain", "buffer": "Déjà vu, encore.\n".encode("latin-1") * 50}
    page.get_by_label("Corpus files").set_input_files(bad)
    alert = page.get_by_role("alert").filter(has_text="novel.txt")
    alert.wait_for()
    message = alert.inner_text().strip()
    assert message.startswith("novel.txt: invalid utf-8 at byte offset 1") and "\n" not in message, message
    assert page.locator("#texts li").count() == 2  # only builtin:shakespeare and builtin:jekyll: nothing was stored
    shot(section(page, "1. Text"), "bad-file")

    page.locator("#drop").evaluate(DROP, ["sonnet.txt", "Shall I compare thee to a summer's day?\n"])
    page.locator("#texts li").filter(has_text="sonnet.txt").wait_for()
    assert page.get_by_role("alert").filter(has_text="novel.txt").count() == 0  # the next upload clears it
    page.get_by_label("Paste text").fill("To be, or not to be.\n")
    page.get_by_role("button", name="Add pasted text").click()
    pasted = page.locator("#texts li").filter(has_text="pasted text")
    pasted.wait_for()
    assert "21 characters" in pasted.inner_text() and page.get_by_label("Paste text").input_value() == ""
    for name in ("sonnet.txt", "pasted text"):  # removed again: the next test starts with no text
        page.get_by_role("button", name=f"Remove {name}").click()
        page.get_by_role("button", name=f"Remove {name}").wait_for(state="detached")
    no_errors(run, expected=("the server responded with a status of 422",))  # the refused file's upload
    page.close()


def test_a_text_file_is_trained_watched_stopped_generated_from_and_published(
    context: Any, studio: str, tmp_path: Path
) -> None:
    run = open_studio(context, studio)
    page = run.page

    # text: a real file through the file chooser
    page.get_by_label("Corpus files").set_input_files(SHAKESPEARE)
    text = SHAKESPEARE.read_text(encoding="utf-8")
    item = page.locator("#texts li").filter(has_text=SHAKESPEARE.name)
    item.wait_for()
    assert f"{len(text):,} characters" in item.inner_text() and "script Latin" in item.inner_text()
    assert item.get_by_role("checkbox").is_checked()
    assert not page.get_by_role("checkbox", name="builtin:shakespeare").is_checked()
    shot(section(page, "1. Text"), "1-text")

    # train: 20 s of the smallest model, watched live
    start_training(page, "20s", "lstm tiny")
    chart = page.get_by_role("img", name=re.compile("loss"))
    page.wait_for_function(f"() => ({VAL_POINTS})() >= 2 && document.querySelector('#samples .sample')")
    name = page.text_content("#live-name")
    assert name == "shakespeare_8k-1" and chart.get_attribute("data-run") == name
    assert "latest validation loss" in (chart.get_attribute("aria-label") or "")
    assert page.get_attribute("#live-status", "data-status") == "running"
    assert float(page.get_attribute("#live-progress", "value") or 0) > 0
    assert re.search(r"about \d+:\d\d left", page.text_content("#live-time") or "")
    assert page.locator("#samples .sample").first.get_by_text("temperature 0.5").count() == 1
    shot(section(page, "2. Train"), "2-training")

    # a reloaded page finds the training again and keeps receiving its evaluations
    seen = page.evaluate(VAL_POINTS)
    page.reload()
    page.wait_for_selector("body[data-ready='true']")
    assert page.text_content("#live-name") == name
    page.wait_for_function(f"() => ({VAL_POINTS})() > {seen}")
    shot(page, "3-reconnected")

    page.get_by_role("button", name="Stop", exact=True).click()
    page.wait_for_selector("#live-status[data-status='stopped']")
    assert page.get_by_role("button", name="Resume", exact=True).is_enabled()
    shot(section(page, "2. Train"), "4-stopped")

    # a second run, fine-tuned from the first, to compare with; renamed
    start_training(page, "10s", start_from=name)
    assert page.get_by_label("Model").is_disabled() and page.get_by_label("Model").input_value() == "auto"
    page.wait_for_function("() => document.getElementById('live-name').textContent === 'shakespeare_8k-2'")
    page.wait_for_selector("#live-status[data-status='done']")
    page.once("dialog", lambda dialog: dialog.accept("finetuned"))
    page.get_by_role("button", name="Rename shakespeare_8k-2").click()
    page.get_by_role("button", name="finetuned", exact=True).wait_for()
    for run_name in (name, "finetuned"):
        page.get_by_role("checkbox", name=f"Compare {run_name}").check()
    compare = page.locator("#compare-chart")
    page.wait_for_function("() => (document.getElementById('compare-chart').getAttribute('aria-label') || '')"
                           ".includes('finetuned, latest validation loss')")  # fmt: skip
    assert "shakespeare_8k-1, latest validation loss" in (compare.get_attribute("aria-label") or "")
    shot(section(page, "3. Runs"), "5-runs-compare")

    # generate with the first run
    page.get_by_role("button", name=name, exact=True).click()
    assert page.text_content("#gen-run") == name
    page.get_by_label("Prompt").fill("ROMEO:")
    page.get_by_label("Length").evaluate("(el) => { el.value = 50; el.dispatchEvent(new Event('input')); }")
    page.get_by_label("Temperature").evaluate("(el) => { el.value = 0; el.dispatchEvent(new Event('input')); }")
    assert page.text_content("#temperature-value") == "0 (greedy)"
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function("() => document.getElementById('gen-status').textContent.startsWith('Done')")
    output = page.get_by_role("region", name="Output").inner_text()
    assert output.startswith("ROMEO:") and len(page.text_content("#output-text") or "") == 50, output
    assert page.get_by_role("button", name="Copy").is_enabled()
    shot(section(page, "4. Generate"), "6-generate")

    # publish: the zip of the web page, unzipped and served statically, generates offline
    page.get_by_label("Weights").select_option("int8")
    page.get_by_label("Train panel").check()  # visitors may fine-tune it in the page
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download web page").click()
    download = download_info.value
    assert download.suggested_filename == f"{name}-web.zip"
    archive = tmp_path / download.suggested_filename
    download.save_as(archive)
    with zipfile.ZipFile(archive) as z:
        assert f"{name}/train-panel.js" in z.namelist()
        z.extractall(tmp_path / "site")
    page.wait_for_function("() => document.getElementById('publish-status').textContent.startsWith('Downloaded')")
    with page.expect_download() as report_info:
        page.get_by_role("button", name="Download run report").click()
    report = tmp_path / report_info.value.suggested_filename
    report_info.value.save_as(report)
    assert report.name == f"{name}-report.html" and "<html" in report.read_text(encoding="utf-8")[:500]
    shot(section(page, "5. Publish"), "7-publish")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete finetuned").click()
    page.get_by_role("button", name="finetuned", exact=True).wait_for(state="detached")

    page.set_viewport_size({"width": 390, "height": 844})
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
    page.locator("#live-heading").evaluate("(el) => el.scrollIntoView({block: 'start'})")
    shot(page, "8-phone")
    page.set_viewport_size({"width": 1200, "height": 900})
    no_errors(run)
    page.close()

    with serve_folder(tmp_path / "site" / name) as url:
        offline = PageRun(context, url)  # every request outside the folder's own server is blocked
        offline.open_and_load()
        generated, _ = offline.generate(120)
        assert len(generated) == 120 and set(generated) <= set(text)
        shot(offline.page, "9-published-offline")
        no_errors(offline)
        offline.page.close()


def test_a_run_named_in_chinese_downloads_its_page_model_and_report_under_its_name(
    context: Any, studio: str, tmp_path: Path
) -> None:
    with httpx.Client(base_url=studio, timeout=60) as api:  # trained through the API: the names are the point here
        chinese = XIYOUJI.read_bytes()[:20000].decode("utf-8", "ignore").encode()
        text = api.post("api/texts", params={"name": "西游记.txt"}, content=chinese).json()["id"]
        body = {"texts": [text], "budget": "5m", "model": "lstm tiny", "eval_every": EVAL_EVERY}
        assert api.post("api/runs", json=body).json()["name"] == "西游记-1"
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not api.get("api/runs/西游记-1").json()["has_model"]:  # its first checkpoint: then stop it
            assert time.monotonic() < deadline, api.get("api/runs/西游记-1").json()
            time.sleep(0.5)
        api.post("api/runs/西游记-1/stop")
    run = open_studio(context, studio)
    page = run.page
    page.get_by_role("button", name="西游记-1", exact=True).click()
    page.wait_for_selector("#live-status[data-status='stopped']")
    saved = {}
    for button, filename in (
        ("Download web page", "西游记-1-web.zip"),
        ("Download ONNX", "西游记-1.onnx"),
        ("Download run report", "西游记-1-report.html"),
    ):
        with page.expect_download() as info:
            page.get_by_role("button", name=button).click()
        assert info.value.suggested_filename == filename
        saved[filename] = tmp_path / info.value.suggested_filename
        info.value.save_as(saved[filename])
        page.wait_for_function("() => document.getElementById('publish-status').textContent.startsWith('Downloaded')")
        assert (page.text_content("#publish-status") or "").startswith(f"Downloaded {filename} (")
    with zipfile.ZipFile(saved["西游记-1-web.zip"]) as z:
        assert "西游记-1/index.html" in z.namelist()
    assert onnx.load(str(saved["西游记-1.onnx"])).graph.input[0].name == "tokens"
    assert "<html" in saved["西游记-1-report.html"].read_text(encoding="utf-8")[:500]
    shot(section(page, "5. Publish"), "10-chinese-downloads")
    no_errors(run)
    page.close()
