"""The Train panel of an exported page (export(..., "web", train=True)) in headless Chromium: the visitor's text
fine-tunes the model in the browser (web/train.js), Generate then uses the new weights, a reload keeps them,
"Download model" gives a .safetensors file textweaver loads, and "Forget" returns to the exported weights.

Any console error, uncaught exception or request leaving the page's origin fails a test (as in
tests/test_browser.py); tests/browser.py says what the browser needs. Numbers go to tests/artifacts/.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from textweaver import load
from textweaver.config import ModelConfig
from textweaver.data.tokenizer import CharTokenizer
from textweaver.export.site import export
from textweaver.models import build_model
from textweaver.run import checkpoint
from textweaver.training.setup import _optimizer

from browser import ARTIFACTS, WatchedPage, chromium, serve_folder, watched_pages
from conftest import SHAKESPEARE, XIYOUJI

pytestmark = pytest.mark.slow

VISITOR_TEXT = SHAKESPEARE.parent / "pride_heldback.txt"  # English prose the Shakespeare model never saw
PROMPT = "It is a truth"
TRAIN_TIMEOUT_MS = 180_000
SLICE = 1 << 20  # web/train-text.js reads files in slices of this many bytes
# Records every value the "Validation loss" element shows, the one measured before the first step included.
WATCH_VALIDATION_LOSS = """() => {
  window.shownValLosses = [];
  const out = document.getElementById("train-val-loss");
  new MutationObserver(() => window.shownValLosses.push(out.textContent))
    .observe(out, { childList: true, characterData: true, subtree: true });
}"""


def small_run(directory: Path, steps: int = 40) -> Path:
    """A 1 x 48 LSTM trained ``steps`` steps on Shakespeare: 40 are far from done, so fine-tuning has much to gain."""
    text = SHAKESPEARE.read_text(encoding="utf-8")
    tokenizer = CharTokenizer(["<unk>", *sorted(set(text))])
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    torch.manual_seed(0)
    config = ModelConfig(kind="lstm", n_layer=1, n_embd=48, context=32, tie_weights=True)
    model = build_model(dataclasses.replace(config, vocab_size=len(tokenizer)))
    optimizer = _optimizer(model, 0.1, 3e-3, torch.device("cpu"))
    rows = ids[: len(ids) - len(ids) % 8].view(8, -1)
    for k in range(steps):
        pos = k * 32 % (rows.shape[1] - 33)
        loss, _ = model(rows[:, pos : pos + 32], None, rows[:, pos + 1 : pos + 33])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    checkpoint.save(directory / "best", model, model.config, tokenizer, ["First Citizen:"], train_config={},
                    metrics={}, corpus={})  # fmt: skip
    return directory


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_run(tmp_path_factory.mktemp("page-training") / "run")


@pytest.fixture(scope="module")
def site(run_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = export(run_dir, tmp_path_factory.mktemp("site") / "site", "web", train=True).directory
    with serve_folder(folder) as url:
        yield url, folder


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    profile = tmp_path_factory.mktemp("chromium-profile")  # IndexedDB lives here across reloads
    with chromium(profile, viewport={"width": 1200, "height": 900}, accept_downloads=True) as context:
        yield context


class Page(WatchedPage):
    """The exported page with its train panel, its errors and outside requests recorded (WatchedPage)."""

    def open(self) -> None:
        self.page.goto(self.url)
        self.page.wait_for_selector("#train-card[data-state='idle']")

    def choose(self, path: Path) -> str:
        """Chooses a file in "Your text"; the panel's line about it once read."""
        self.page.get_by_label("Your text", exact=True).set_input_files(str(path))
        self.page.wait_for_selector("#train-card[data-state='ready'], #train-card[data-state='unreadable']")
        return self.page.text_content("#train-text-status")

    def load_model(self) -> str:
        self.page.click("#load")
        self.page.wait_for_selector("body[data-loaded='true']", timeout=60_000)
        return self.page.text_content("#load-status")

    def greedy(self, length: int) -> str:
        self.page.fill("#prompt", PROMPT)
        self.page.set_checked("#greedy", True)
        self.page.eval_on_selector(
            "#length", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }", length
        )
        self.page.eval_on_selector("#status", "el => { el.textContent = ''; }")
        self.page.click("#generate")
        self.page.wait_for_function("() => /^(Done|Stopped|Error)/.test(document.getElementById('status').textContent)")
        assert self.page.text_content("#status").startswith("Done"), self.page.text_content("#status")
        return self.page.text_content("#output-text")


@pytest.fixture
def open_page(browser_context: Any) -> Iterator[Callable[[str], Page]]:
    """Opens pages; any of them with a page error or a request leaving its origin fails the test."""
    with watched_pages(browser_context, Page) as open_one:
        yield open_one


def validation_loss(model: torch.nn.Module, ids: list[int], train: dict[str, Any]) -> float:
    """The page's validation loss, computed by PyTorch: web/train-text.js's split (the last tenth, at least one
    window per stream), then at most 16 consecutive windows of `batch` streams, state carried (train.js)."""
    batch, context = train["batch"], train["context"]
    least = batch * (context + 1) + 1
    n_val = min(len(ids) - least, max(math.ceil(len(ids) * train["val_fraction"]), least))
    val = torch.tensor(ids[len(ids) - n_val :])
    stream = (len(val) - 1) // batch
    starts = torch.arange(batch)[:, None] * stream
    losses, state = [], None
    with torch.no_grad():
        for k in range(min(16, (stream - 1) // context)):
            at = starts + k * context + torch.arange(context + 1)
            loss, state = model(val[at[:, :-1]], state, val[at[:, 1:]])
            losses.append(loss.item())
    return sum(losses) / len(losses)


def test_a_visitor_fine_tunes_the_model_in_the_page_and_keeps_it(
    open_page: Callable[[str], Page], site: tuple[str, Path], run_dir: Path, tmp_path: Path
) -> None:
    url, folder = site
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    vocab = set(checkpoint.load(run_dir).tokenizer.vocab[1:])
    text = VISITOR_TEXT.read_text(encoding="utf-8")
    page = open_page(url)
    page.open()
    assert page.page.text_content("#train-weights") == "This page uses the exported weights."
    assert page.page.is_disabled("#train-start") and page.page.is_disabled("#train-download")

    line = page.choose(VISITOR_TEXT)
    unknown = sum(ch not in vocab for ch in text)
    assert unknown > 0  # the prose has characters Shakespeare lacks: the visitor is told how many
    assert f"{len(text):,} characters" in line, line
    assert f"{unknown:,} characters not in the model's vocabulary (read as unknown)" in line, line

    page.page.get_by_label("Time budget", exact=True).select_option("0.5")
    page.page.evaluate(WATCH_VALIDATION_LOSS)
    page.page.get_by_role("button", name="Start training").click()
    assert not page.page.is_disabled("#train-stop")
    page.page.wait_for_selector("#train-card[data-state='done'], #train-card[data-state='error']",
                                timeout=TRAIN_TIMEOUT_MS)  # fmt: skip
    status = page.page.text_content("#train-status")
    assert page.page.get_attribute("#train-card", "data-state") == "done", status
    shown = [float(v) for v in page.page.evaluate("window.shownValLosses") if re.fullmatch(r"\d+\.\d{3}", v)]
    before = shown[0]  # measured on the visitor's validation tail before the first step
    after = float(page.page.get_by_label("Validation loss", exact=True).text_content())
    assert after == shown[-1] and after < before - 0.2, (before, after, status)
    assert f"validation loss {before:.3f} → {after:.3f}" in status, status
    chart = page.page.locator("#train-chart")
    assert chart.get_attribute("role") == "img" and "loss" in chart.get_attribute("aria-label")
    tokens_per_s = float(page.page.text_content("#train-rate").replace(",", ""))
    steps = int(page.page.text_content("#train-step").replace(",", ""))
    assert tokens_per_s > 0 and steps > 20
    assert "fine-tuned weights" in page.page.text_content("#train-weights")

    assert "fine-tuned" in page.load_model()
    tuned_text = page.greedy(80)
    assert len(tuned_text) == 80 and set(tuned_text) <= vocab

    ARTIFACTS.mkdir(exist_ok=True)
    page.page.screenshot(path=str(ARTIFACTS / "page-training-desktop.png"), full_page=True)
    page.page.set_viewport_size({"width": 390, "height": 844})
    # no sideways scroll, once the chart's ResizeObserver has followed the new width (a frame or two)
    page.page.wait_for_function("() => document.documentElement.scrollWidth <= window.innerWidth", timeout=5000)
    page.page.screenshot(path=str(ARTIFACTS / "page-training-phone.png"), full_page=True)
    page.page.set_viewport_size({"width": 1200, "height": 900})

    page.page.reload()  # the fine-tuned weights are kept in this browser
    page.page.wait_for_selector("#train-card[data-state='idle']")
    assert "fine-tuned weights" in page.page.text_content("#train-weights")
    assert "fine-tuned" in page.load_model()
    assert page.greedy(80) == tuned_text

    with page.page.expect_download() as download_info:
        page.page.get_by_role("button", name="Download model").click()
    download = download_info.value
    stem = re.sub(r"[^\w.-]+", "-", config["title"]).strip("-")
    assert download.suggested_filename == f"{stem}-fine-tuned.safetensors"
    path = tmp_path / download.suggested_filename
    download.save_as(path)

    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        names = list(f.keys())
    assert metadata["format"] == "textweaver-page-model"
    assert metadata["tokenizer.json"] == (folder / "tokenizer.json").read_text(encoding="utf-8")
    assert sorted(names) == sorted(p["name"] for p in config["train"]["parameters"])

    # the downloaded file is a checkpoint again: the page's validation loss and the page's greedy text
    downloaded = checkpoint.load(path)
    model = downloaded.build_model("cpu")
    ids = downloaded.tokenizer.encode(text)
    assert validation_loss(model, ids, config["train"]) == pytest.approx(after, abs=2e-3)
    assert load(path).generate(PROMPT, 80, temperature=0) == PROMPT + tuned_text

    page.page.get_by_role("button", name="Forget").click()
    page.page.wait_for_function(
        "() => document.getElementById('train-weights').textContent === 'This page uses the exported weights.'"
    )
    exported_text = page.greedy(80)
    assert exported_text == load(run_dir).generate(PROMPT, 80, temperature=0).removeprefix(PROMPT)
    assert exported_text != tuned_text
    page.page.reload()
    page.page.wait_for_selector("#train-card[data-state='idle']")
    assert page.page.text_content("#train-weights") == "This page uses the exported weights."
    assert page.page.is_disabled("#train-download") and page.page.is_disabled("#train-forget")

    page.choose(VISITOR_TEXT)  # "Stop training" ends a run early: its weights are kept all the same
    page.page.get_by_label("Time budget", exact=True).select_option("10")
    page.page.get_by_role("button", name="Start training").click()
    page.page.wait_for_function("() => Number(document.getElementById('train-step').textContent) >= 10")
    page.page.get_by_role("button", name="Stop training").click()
    page.page.wait_for_selector("#train-card[data-state='done']", timeout=30_000)
    assert page.page.text_content("#train-status").startswith("Stopped: "), page.page.text_content("#train-status")
    assert "fine-tuned weights" in page.page.text_content("#train-weights")
    page.page.get_by_role("button", name="Forget").click()
    page.page.wait_for_function(
        "() => document.getElementById('train-weights').textContent === 'This page uses the exported weights.'"
    )

    record = {"model": "lstm 1x48", "batch": config["train"]["batch"], "context": config["train"]["context"],
              "tokens_per_s": tokens_per_s, "steps_in_30_s": steps, "val_loss_before": before,
              "val_loss_after": after}  # fmt: skip
    metrics = ARTIFACTS / "browser-metrics.json"
    data = json.loads(metrics.read_text()) if metrics.exists() else {}
    metrics.write_text(json.dumps({**data, "page-training": record}, indent=2))
    print(f"page training: {record}")
    page.page.close()


def test_training_that_only_worsens_the_validation_loss_leaves_the_weights_as_they_were(
    open_page: Callable[[str], Page], tmp_path: Path
) -> None:
    """The page keeps the weights with the lowest validation loss it measured, the starting ones included, as
    Python keeps best/: at a rate far too high every step makes a trained model worse, and nothing changes."""
    run_dir = small_run(tmp_path / "run", steps=400)
    hot = export(run_dir, tmp_path / "site", "web", train=True).directory
    config = json.loads((hot / "config.json").read_text(encoding="utf-8"))
    config["train"]["schedule"]["peak"] = 5.0
    (hot / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with serve_folder(hot) as url:
        page = open_page(url)
        page.open()
        page.choose(VISITOR_TEXT)
        page.page.get_by_label("Time budget", exact=True).select_option("0.5")
        page.page.evaluate(WATCH_VALIDATION_LOSS)
        page.page.get_by_role("button", name="Start training").click()
        page.page.wait_for_selector("#train-card[data-state='done'], #train-card[data-state='error']",
                                    timeout=TRAIN_TIMEOUT_MS)  # fmt: skip
        status = page.page.text_content("#train-status")
        assert page.page.get_attribute("#train-card", "data-state") == "done", status
        shown = [float(v) for v in page.page.evaluate("window.shownValLosses") if re.fullmatch(r"\d+\.\d{3}", v)]
        before, worst = shown[0], max(shown)
        assert worst > before + 0.1, shown  # the steps did make it worse
        assert float(page.page.get_by_label("Validation loss", exact=True).text_content()) == before
        assert f"never fell below its {before:.3f} at the start" in status and "weights are unchanged" in status, status
        assert page.page.text_content("#train-weights") == "This page uses the exported weights."
        assert page.page.is_disabled("#train-download")
        page.load_model()
        assert page.greedy(80) == load(run_dir).generate(PROMPT, 80, temperature=0).removeprefix(PROMPT)
        page.page.close()


def test_a_text_that_is_not_utf8_is_refused_in_one_line_naming_the_byte(
    open_page: Callable[[str], Page], site: tuple[str, Path], tmp_path: Path
) -> None:
    url, _ = site
    page = open_page(url)
    page.open()
    # over 1 MB of Chinese (3 bytes a character): characters straddle the reader's 1 MB slices
    good = (XIYOUJI.read_text(encoding="utf-8") * 40).encode()
    assert len(good) > SLICE + 1000 and good[SLICE] & 0xC0 == 0x80
    (tmp_path / "long.txt").write_bytes(good)
    line = page.choose(tmp_path / "long.txt")
    assert f"{len(good.decode()):,} characters" in line, line  # read whole, no character lost at the slices

    # the second slice starts inside a character: break that character there, and the problem starts in the first
    lead = max(i for i in range(SLICE - 3, SLICE) if good[i] & 0xC0 != 0x80)  # the broken character's first byte
    cases = {
        "early.txt": (b"The start is fine.\n" * 50 + b"\xff and then not", 19 * 50),
        "sliced.txt": (good[:SLICE] + b"A" + good[SLICE + 1 :], lead),
        "cut.txt": (b"Ends inside a character: \xe4\xb8", 25),
        "cut-after-a-slice.txt": (good[: SLICE + 1], lead),  # the last slice holds one byte of the last character
    }
    for name, (data, offset) in cases.items():
        with pytest.raises(UnicodeDecodeError) as python:
            data.decode("utf-8")
        assert python.value.start == offset  # where Python's own decoder finds the problem too
        (tmp_path / name).write_bytes(data)
        line = page.choose(tmp_path / name)
        assert page.page.get_attribute("#train-card", "data-state") == "unreadable", line
        assert "\n" not in line and "not UTF-8" in line and re.search(rf"\bbyte offset {offset}\b", line), line
        assert page.page.is_disabled("#train-start")

    page.page.fill("#train-paste", "Too short to learn from.")
    page.page.wait_for_function("() => document.getElementById('train-text-status').textContent.includes('too short')")
    assert page.page.is_disabled("#train-start")
    page.page.fill("#train-paste", VISITOR_TEXT.read_text(encoding="utf-8"))
    page.page.wait_for_selector("#train-card[data-state='ready']")
    assert "the pasted text: 10,001 characters" in page.page.text_content("#train-text-status")
    assert not page.page.is_disabled("#train-start")
    page.page.close()


def test_a_page_exported_without_the_training_files_has_no_train_panel(
    open_page: Callable[[str], Page], run_dir: Path, tmp_path: Path
) -> None:
    folder = export(run_dir, tmp_path / "site", "web").directory
    assert "train" not in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    with serve_folder(folder) as url:
        page = open_page(url)
        requested: list[str] = []
        page.page.on("request", lambda r: requested.append(r.url))
        page.page.goto(url)
        page.page.wait_for_function("() => document.getElementById('prompt').value.length > 0")
        assert page.page.locator("#train-card").is_hidden()
        page.load_model()
        assert page.greedy(20)
        assert not [u for u in requested if "train" in u.removeprefix(url) or "uplot" in u], requested
        page.page.close()


# In the page's origin: one step of train/step.onnx in onnxruntime-web (WebAssembly, as train.js runs it) from
# the exported weights widened as train.js does, zero moments and state, the given batch, rate and step number;
# returns the loss, the norm and the new weights.
BROWSER_STEP = """async ({ ids, targets, lr }) => {
  const ort = await import("./vendor/onnxruntime-web/ort.wasm.bundle.min.js");
  const { widen } = await import("./train-store.js");
  const config = await (await fetch("config.json")).json();
  const bytes = async (url) => new Uint8Array(await (await fetch(url)).arrayBuffer());
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmBinary = await bytes("vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm");
  const step = await bytes(config.train.files.step);
  const session = await ort.InferenceSession.create(step, { executionProviders: ["wasm"] });
  const weights = widen(await bytes(config.train.files.weights));
  const { batch, context, parameters, state } = config.train;
  const feeds = {
    ids: new ort.Tensor("int64", BigInt64Array.from(ids, BigInt), [batch, context]),
    targets: new ort.Tensor("int64", BigInt64Array.from(targets, BigInt), [batch, context]),
    lr: new ort.Tensor("float32", Float32Array.of(lr), []), step: new ort.Tensor("float32", Float32Array.of(1), []),
  };
  for (const p of parameters) {
    const values = new Float32Array(weights.slice(p.offset, p.offset + p.bytes));
    feeds[`p.${p.name}`] = new ort.Tensor("float32", values, p.shape);
    for (const m of ["m", "v"]) {
      feeds[`${m}.${p.name}`] = new ort.Tensor("float32", new Float32Array(values.length), p.shape);
    }
  }
  const dims = [config.model.n_layer, batch, config.model.n_embd];
  for (const s of state) feeds[s] = new ort.Tensor("float32", new Float32Array(dims[0] * dims[1] * dims[2]), dims);
  const out = await session.run(feeds);
  const updated = {};
  for (const p of parameters) updated[p.name] = Array.from(out[`p.${p.name}.out`].data);
  return { loss: out.loss.data[0], norm: out.grad_norm.data[0], updated };
}"""


def test_the_page_widens_every_float16_as_numpy_does(open_page: Callable[[str], Page], site: tuple[str, Path]) -> None:
    """train-store.js's widen() on all 65,536 float16 bit patterns (subnormals, infinities, NaN) against numpy."""
    import numpy as np

    url, _ = site
    page = open_page(url)
    page.open()
    got = page.page.evaluate("""async () => {
      const { widen } = await import("./train-store.js");
      const bits = new Uint16Array(65536).map((_, i) => i);
      return Array.from(new Float32Array(widen(new Uint8Array(bits.buffer))), (v) => Number.isNaN(v) ? "NaN" : v);
    }""")
    halves = np.arange(65536, dtype="<u2").view("<f2").astype(np.float32)
    assert got[0x7E00] == "NaN" and got[0x7C00] == float("inf") and got[1] == 2.0**-24
    np.testing.assert_array_equal(np.array([np.nan if v == "NaN" else v for v in got], np.float32), halves)
    page.page.close()


def test_a_step_in_the_browser_equals_pytorchs_own_step(
    open_page: Callable[[str], Page], site: tuple[str, Path], run_dir: Path
) -> None:
    """Loss and gradient norm to float32 rounding, and the weights AdamW's first step gives wherever its sign
    is decided (a gradient clearly away from zero): onnxruntime-web's step is textweaver train's."""
    import numpy as np

    url, folder = site
    train = json.loads((folder / "config.json").read_text(encoding="utf-8"))["train"]
    model = checkpoint.load(run_dir).build_model("cpu")
    text = VISITOR_TEXT.read_text(encoding="utf-8")
    ids = torch.tensor(checkpoint.load(run_dir).tokenizer.encode(text)[: train["batch"] * (train["context"] + 1)])
    rows = ids.view(train["batch"], train["context"] + 1)
    x, y, lr = rows[:, :-1], rows[:, 1:], 3e-3
    page = open_page(url)
    page.open()
    got = page.page.evaluate(BROWSER_STEP, {"ids": x.flatten().tolist(), "targets": y.flatten().tolist(), "lr": lr})

    with torch.no_grad():  # the page trains from the exported weights: float16, widened
        for p in model.parameters():
            p.copy_(p.half().float())
    optimizer = _optimizer(model, 0.1, lr, torch.device("cpu"))  # the run's weight decay and clipping: defaults
    loss, _ = model(x, None, y)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}  # type: ignore[union-attr]
    optimizer.step()
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert got["norm"] == pytest.approx(norm.item(), rel=1e-4)
    for name, p in model.named_parameters():
        g = grads[name].numpy().ravel()
        decided = np.abs(g) > 1e-3 * np.abs(g).max()  # Adam's first step is lr * sign(g) there
        ours = np.asarray(got["updated"][name], np.float32)
        np.testing.assert_allclose(ours[decided], p.detach().numpy().ravel()[decided], rtol=1e-5, atol=2e-6,
                                   err_msg=name)  # fmt: skip
        assert decided.mean() > 0.5, name
    page.page.close()
