"""`textweaver report`: one self-contained HTML file per run, written by training when it ends.

The browser test opens the report from disk in Debian's chromium (see tests/test_browser.py) with
the network cut; its screenshots go to tests/artifacts/report-desktop.png and report-phone.png.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from textweaver import load, train
from textweaver.errors import TextweaverError
from textweaver.export.site import WEB_DIR
from textweaver.models import num_parameters
from textweaver.report.report import REPORT_FILE, write_report
from textweaver.run.log import RunLog

from browser import ARTIFACTS, chromium
from conftest import SHAKESPEARE, TINY, one_line_error, run_cli

XSS = "<script>alert(1)</script>"
UPLOT = WEB_DIR / "vendor" / "uplot"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LSTM evaluated three times (steps 20, 40, 60): three records, three sets of samples."""
    out = tmp_path_factory.mktemp("report-runs") / "tiny"
    with pytest.MonkeyPatch.context() as patch:  # only the evaluations' records, however slow the machine
        patch.setattr(importlib.import_module("textweaver.training.hooks"), "PROGRESS_EVERY_S", math.inf)
        train([SHAKESPEARE], out, model="lstm", max_steps=60, **{**TINY, "eval_every": 20})
    return out


@pytest.fixture
def copied_run(run: Path, tmp_path: Path) -> Path:
    """A copy of ``run`` that a test may change."""
    return Path(shutil.copytree(run, tmp_path / "copy", ignore=shutil.ignore_patterns(REPORT_FILE, "cache")))


def records(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def page_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    assert match, "no data block"
    return json.loads(match[1])  # type: ignore[no-any-return]


def test_training_writes_the_report_when_it_ends(run: Path) -> None:
    page = (run / REPORT_FILE).read_text(encoding="utf-8")
    assert [p["step"] for p in page_data(page)["points"]] == [20, 40, 60]
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]  # no temporary file left


def test_a_failing_report_never_fails_the_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: Any) -> Path:
        raise RuntimeError("the report broke\nsecond line")

    monkeypatch.setattr("textweaver.report.report.write_report", broken)
    result = train([SHAKESPEARE], tmp_path / "run", model="lstm", max_steps=3, **TINY)
    assert result.steps == 3 and (tmp_path / "run" / "best").is_dir()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert warnings == [
        f"warning: no report.html written (the report broke); retry with: textweaver report {tmp_path / 'run'}"
    ]


def test_the_report_shows_summary_charts_samples_and_configuration(run: Path, tmp_path: Path) -> None:
    page = write_report(run, tmp_path / "r.html").read_text(encoding="utf-8")
    for heading in ("Summary", "Loss", "Learning rate", "Speed", "Samples", "Configuration"):
        assert f">{heading}</h2>" in page
    model, last = load(run), records(run)[-1]
    assert f"<dt>Parameters</dt><dd>{num_parameters(model.model):,}</dd>" in page
    assert f"<dt>Corpus</dt><dd>{SHAKESPEARE.name} (" in page
    assert f"{last['best_val_loss']:.4f} nats/token, {min(r['val_bpc'] for r in records(run)):.4f} bits/char" in page
    assert "60 steps" in page and "<dt>Started from</dt>" not in page  # trained from scratch
    # the chart data: every record's numbers, in the loss unit of a character model
    data = page_data(page)
    assert data["unit"] == "nats/char"
    assert data["points"] == [
        {k: r[k] for k in ("step", "elapsed_s", "train_loss", "val_loss", "lr", "tokens_per_s")} for r in records(run)
    ]
    assert data["labels"]["lr"].startswith("Learning rate over training time, from ")
    # the samples of each evaluation, newest first, with their temperatures
    assert [int(s) for s in re.findall(r"<summary>Step (\d+)</summary>", page)] == [60, 40, 20]
    assert page.count("<h3>Temperature ") == 3 * len(model.checkpoint.train_config["sample_temperatures"])
    # the options, the model's shape
    assert '<th scope="row">max_steps</th><td>60</td>' in page and '<th scope="row">n_layer</th>' in page


def test_the_report_shows_the_automatic_recipe_and_the_fine_tuning_source(copied_run: Path) -> None:
    config_path = copied_run / "last" / "config.json"
    config = json.loads(config_path.read_text())
    config["train"]["extra"] = {
        "recipe": {"summary": "lstm 2x256, batch 16 x 64", "reasons": ["2x256: the size that learns fastest"]},
        "init_from": {"source": "builtin:english", "model": "lstm 2x512", "vocab_size": 5000, "added_tokens": 12},
    }
    config_path.write_text(json.dumps(config))
    page = write_report(copied_run).read_text(encoding="utf-8")
    assert "<p>lstm 2x256, batch 16 x 64</p><ul><li>2x256: the size that learns fastest</li></ul>" in page
    assert "<dt>Started from</dt><dd>builtin:english (lstm 2x512, 5,000 tokens, 12 added)</dd>" in page


def test_text_from_the_corpus_cannot_inject_markup(copied_run: Path) -> None:
    """Samples, prompts and the run's name are text, never HTML: a corpus may well contain <script>."""
    named = copied_run.rename(copied_run.with_name("<b>run"))
    RunLog(named, tensorboard=False).samples(99, XSS, {0.5: f"{XSS} and </script><!-- more"})
    page = write_report(named).read_text(encoding="utf-8")
    assert XSS not in page and "<b>" not in page and "<!-- more" not in page
    assert '<span class="prompt">&lt;script&gt;alert(1)&lt;/script&gt;</span> and &lt;/script&gt;&lt;!-- more' in page
    assert page_data(page)["name"] == "<b>run"  # the data block keeps it as data
    assert page.count("<script") == 4 and page.count("</script>") == 4  # data, uPlot, chart.js, page script


def test_the_policy_allows_exactly_the_inlined_scripts_and_styles(run: Path) -> None:
    page = (run / REPORT_FILE).read_text(encoding="utf-8")
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page)
    assert csp
    policy = dict(part.strip().split(" ", 1) for part in csp[1].split(";"))
    assert policy["default-src"] == "'none'" and policy["img-src"] == "data:"

    def digest(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    styles = re.findall(r"<style>(.*?)</style>", page, re.S)
    assert len(scripts) == 3 and len(styles) == 1
    assert policy["script-src"].split() == [digest(s) for s in scripts]
    assert policy["style-src"] == digest(styles[0])
    assert not re.search(r'\s(?:src|href)="(?!data:)', page)  # nothing to fetch: no file, no network


def test_the_report_is_written_atomically(copied_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = copied_run / REPORT_FILE
    target.write_text("an earlier report")
    real_replace, renamed = os.replace, []

    def replace(src: Any, dst: Any) -> None:
        renamed.append((Path(src), Path(dst), Path(src).read_text(encoding="utf-8"), target.read_text()))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(TextweaverError, match="No space left on device"):
        write_report(copied_run)
    ((src, dst, written, before),) = renamed
    assert src.parent == dst.parent == copied_run and dst == target  # a sibling, renamed over the report
    assert written.startswith("<!doctype html>") and written.rstrip().endswith("</html>")  # complete first
    assert before == target.read_text() == "an earlier report"  # the old one stays whole
    assert not src.exists()  # and the temporary file is gone
    monkeypatch.setattr(os, "replace", real_replace)
    assert write_report(copied_run) == target and target.read_text().startswith("<!doctype html>")
    assert not [p.name for p in copied_run.iterdir() if p.name.endswith(".tmp")]


def test_report_command_writes_the_run_folder_report_and_prints_its_path(
    copied_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(["report", str(copied_run)], capsys)
    assert code == 0, err
    assert out == f"{copied_run / REPORT_FILE}\n"
    assert (copied_run / REPORT_FILE).read_text(encoding="utf-8").startswith("<!doctype html>")


def test_report_of_a_run_still_training_reads_what_is_there(copied_run: Path) -> None:
    with (copied_run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 80, "elapsed_s": 9.5, "train_loss": 2.0')  # a record being written right now
    shutil.rmtree(copied_run / "last")  # being swapped in: best/ is there
    page = write_report(copied_run).read_text(encoding="utf-8")
    assert [p["step"] for p in page_data(page)["points"]] == [20, 40, 60]


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda d: None, [], r"no such run directory: give the --out folder of a training run$"),
        (lambda d: d.mkdir(), [], r"not a training run \(no metrics.jsonl, best/ or last/\)"),
        (lambda d: (d / "cache").mkdir(parents=True), [], r"no metrics yet: the run's first evaluation"),
        (lambda d: d.mkdir() or (d / "metrics.jsonl").write_text('{"step": 1'), [], r"no metrics yet"),
        (lambda d: d.mkdir() or (d / "metrics.jsonl").write_text('{"step": 1}\n'), [],
         r"no readable checkpoint \(config.json in last/ or best/\): restore the checkpoint or retrain"),
        ("run", ["--out", "{tmp}/missing/r.html"], r"missing: no such folder: create it or choose another --out"),
        ("run", ["--out", "{tmp}"], r"is a folder: give --out a file name, such as .*report.html"),
    ],
)  # fmt: skip
def test_bad_run_folders_and_outputs_get_one_line(
    make: Any, extra: list[str], message: str, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = run if make == "run" else tmp_path / "run"
    if make != "run":
        make(run_dir)
    before = sorted(tmp_path.rglob("*"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in extra]
    one_line_error(*run_cli(["report", str(run_dir), *args], capsys), message)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_vendored_uplot_matches_its_pinned_checksums() -> None:
    readme = (UPLOT / "README.md").read_text()
    pinned = dict(reversed(m) for m in re.findall(r"^\s+([0-9a-f]{64})  (\S+)$", readme, re.M))
    assert set(pinned) == {"uPlot.iife.min.js", "uPlot.min.css"}
    for name, digest in pinned.items():
        assert hashlib.sha256((UPLOT / name).read_bytes()).hexdigest() == digest, name
    assert "MIT" in (UPLOT / "LICENSE").read_text() and "uPlot 1.6.32" in readme


# ---- in the browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as browser:
        yield browser


@pytest.mark.slow
def test_report_opens_offline_in_the_browser_with_an_accessible_loss_chart(
    browser: Any, copied_run: Path, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    RunLog(copied_run, tensorboard=False).samples(99, XSS, {0.5: f"{XSS} more text"})
    report = write_report(copied_run)
    context = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)
    outside, errors, dialogs = [], [], []

    def only_local(route: Any) -> None:
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    page = context.new_page()
    page.on("console", lambda m: m.type == "error" and errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.add_init_script(
        "window.cspViolations = [];"
        "document.addEventListener('securitypolicyviolation', (e) => window.cspViolations.push(e.violatedDirective));"
    )
    page.goto(report.as_uri())

    chart = page.get_by_role("img", name=re.compile("loss"))
    name = chart.get_attribute("aria-label")
    assert re.fullmatch(r"Training and validation loss over time: copy, latest validation loss \d\.\d{3} nats/char",
                        name or ""), name  # fmt: skip
    assert chart.locator("canvas").evaluate(DRAWN), "the loss chart's canvas is blank"
    for label in ("Learning rate over training time", "Training speed in tokens per second"):
        assert page.get_by_role("img", name=re.compile(label)).locator("canvas").evaluate(DRAWN), label
    page.screenshot(path=str(ARTIFACTS / "report-desktop.png"), full_page=True)

    page.set_viewport_size({"width": 360, "height": 780})
    page.wait_for_function("() => document.querySelector('#loss-chart canvas').getBoundingClientRect().right <= 360")
    widths = page.evaluate(
        "() => ({page: document.documentElement.scrollWidth,"
        " chart: document.querySelector('#loss-chart .uplot').getBoundingClientRect().right})"
    )
    assert widths["page"] <= 360 and widths["chart"] <= 360, widths
    page.screenshot(path=str(ARTIFACTS / "report-phone.png"), full_page=True)

    # the studio's use: several runs, records appended live, then removed
    live = page.evaluate(LIVE_CHART)
    assert live["before"].endswith("b, latest validation loss 2.500 nats/char"), live
    assert live["after"].endswith("b, latest validation loss 2.000 nats/char"), live
    assert live["destroyed"] == [None, None, 0], live

    assert page.evaluate("window.cspViolations") == [] and errors == [] and dialogs == []
    assert outside == []
    context.close()


DRAWN = "(c) => c.width > 0 && c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v) => v !== 0)"
LIVE_CHART = """() => {
  const element = document.createElement("div");
  document.querySelector("main").append(element);
  const chart = window.TextweaverChart.lossChart(element, { title: "live", height: 200 });
  chart.setRuns([
    { name: "a", points: [{ elapsed_s: 1, train_loss: 3, val_loss: 3.1 }] },
    { name: "b", points: [{ elapsed_s: 2, train_loss: 2.6, val_loss: 2.5 }] },
  ]);
  const before = element.getAttribute("aria-label");
  chart.append("b", { elapsed_s: 5, train_loss: 2.2 });
  chart.append("b", { elapsed_s: 6, train_loss: 2.1, val_loss: 2.0 });
  const after = element.getAttribute("aria-label");
  chart.destroy();
  const destroyed = [element.getAttribute("role"), element.getAttribute("aria-label"),
                     element.querySelectorAll("canvas").length];
  element.remove();
  return { before, after, destroyed };
}"""
