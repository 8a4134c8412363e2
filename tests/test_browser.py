"""The page in headless Chromium: the static export (offline) and `textweaver serve` generate text.

Screenshots and the measured numbers go to tests/artifacts/ (git-ignored); tests/browser.py says
what the browser needs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import textweaver.generation.generator as generate_module
from textweaver import load, train
from textweaver.app.http import MAX_PROMPT_CHARS, MAX_STOP_CHARS
from textweaver.config import ModelConfig
from textweaver.data.tokenizer import CharTokenizer
from textweaver.export.site import export
from textweaver.generation.sampling import MAX_PENALTY, MIN_PENALTY, SamplingOptions, next_tokens, probabilities
from textweaver.models import build_model
from textweaver.run import checkpoint

from browser import ARTIFACTS, WatchedPage, chromium, serve_app, serve_folder, watched_pages
from conftest import SHAKESPEARE, TINY, XIYOUJI

pytestmark = pytest.mark.slow

LOAD_TIMEOUT_MS = 120_000
# Press generate, then stop as soon as the first text shows (a tiny model could finish before a
# separate click arrives).
STOP_AT_FIRST_TEXT = """() => new Promise((resolve) => {
  const out = document.getElementById("output-text");
  new MutationObserver((_, observer) => {
    if (out.textContent.length === 0) return;
    observer.disconnect();
    document.getElementById("stop").click();
    resolve();
  }).observe(out, { childList: true, characterData: true, subtree: true });
  document.getElementById("generate").click();
})"""


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile"), viewport={"width": 1200, "height": 900}) as context:
        yield context


@pytest.fixture(scope="module")
def lstm_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("browser-runs") / "lstm"
    train([SHAKESPEARE], out, model="lstm", max_steps=40, **TINY)
    return out


@pytest.fixture(scope="module")
def static_site(lstm_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    site = export(lstm_run, tmp_path_factory.mktemp("site") / "site", "web").directory
    with serve_folder(site) as url:
        yield url, site


@pytest.fixture(scope="module")
def api_server(lstm_run: Path) -> Iterator[str]:
    """`textweaver serve`'s app under uvicorn on 127.0.0.1."""
    from textweaver.app.serve import create_app

    with serve_app(create_app(lstm_run)) as url:
        yield url


class PageRun(WatchedPage):
    """The exported page (or serve's), its errors and outside requests recorded (WatchedPage)."""

    def open_and_load(self) -> float:
        start = time.perf_counter()
        self.page.goto(self.url)
        self.page.wait_for_function("() => document.getElementById('prompt').value.length > 0")
        self.page.click("#load")
        self.page.wait_for_selector("body[data-loaded='true']", timeout=LOAD_TIMEOUT_MS)
        seconds = time.perf_counter() - start
        self.page.click("summary")  # open "Advanced" for the seed
        return seconds

    def set_range(self, selector: str, value: float) -> None:
        self.page.eval_on_selector(
            selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input', {bubbles: true})); }", value
        )

    def generate(self, length: int, seed: int | None = 1) -> tuple[str, float]:
        self.set_range("#length", length)
        self.page.fill("#seed", "" if seed is None else str(seed))
        self.page.eval_on_selector("#status", "el => { el.textContent = ''; }")  # not the last run's "Done"
        self.page.click("#generate")
        self.page.wait_for_function("() => /^(Done|Stopped|Error)/.test(document.getElementById('status').textContent)",
                                    timeout=LOAD_TIMEOUT_MS)  # fmt: skip
        status = self.page.text_content("#status")
        assert status.startswith("Done"), status  # an error the worker reported, shown on the page
        rate = float(self.page.text_content("#rate").replace(",", ""))
        return self.page.text_content("#output-text"), rate


@pytest.fixture
def open_page(browser_context: Any) -> Iterator[Callable[[str], PageRun]]:
    """Opens pages; any of them with a page error or a request leaving its origin fails the test."""
    with watched_pages(browser_context, PageRun) as open_one:
        yield open_one


def check_page(run: PageRun, vocab: set[str], name: str) -> dict[str, float]:
    ARTIFACTS.mkdir(exist_ok=True)
    load_s = run.open_and_load()
    prompt = run.page.input_value("#prompt")
    run.page.click("#reset")
    run.page.wait_for_function(f"() => document.getElementById('prompt').value !== {json.dumps(prompt)}")

    text, rate = run.generate(300)
    assert len(text) == 300 and set(text) <= vocab, text  # a char model: 300 tokens are 300 characters
    assert run.page.text_content("#output-prompt") == run.page.input_value("#prompt")
    assert not run.page.is_disabled("#copy")
    again, _ = run.generate(300)
    assert again == text  # the seed makes it repeatable

    long_text, long_rate = run.generate(2000, seed=None)
    assert len(long_text) == 2000 and set(long_text) <= vocab

    run.set_range("#length", 2000)
    run.page.evaluate(STOP_AT_FIRST_TEXT)
    run.page.wait_for_function("() => document.getElementById('status').textContent.startsWith('Stopped')")
    assert 0 < len(run.page.text_content("#output-text")) < 2000

    run.page.screenshot(path=str(ARTIFACTS / f"{name}-desktop.png"), full_page=True)
    run.page.set_viewport_size({"width": 390, "height": 844})
    assert run.page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")  # no sideways scroll
    run.page.screenshot(path=str(ARTIFACTS / f"{name}-phone.png"), full_page=True)
    print(f"\nscreenshots: {ARTIFACTS / name}-desktop.png, -phone.png")

    assert run.outside == [], f"requests outside the origin: {run.outside}"
    assert run.errors == [], run.errors  # any page error, a refusal by the Content Security Policy among them
    return {"page_load_s": load_s, "tokens_per_s_300": rate, "tokens_per_s_2000": long_rate}


def record(name: str, numbers: dict[str, Any]) -> None:
    path = ARTIFACTS / "browser-metrics.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = numbers
    path.write_text(json.dumps(data, indent=2))
    print(f"{name}: {numbers}")


def test_static_export_generates_in_the_browser_and_offline(
    browser_context: Any, open_page: Callable[[str], PageRun], static_site: tuple[str, Path], lstm_run: Path
) -> None:
    url, site = static_site
    vocab = set(checkpoint.load(lstm_run).tokenizer.vocab[1:])
    run = open_page(url)
    numbers = check_page(run, vocab, "static")
    browser_context.set_offline(True)  # the network is cut: the loaded page still generates
    try:
        run.set_range("#length", 120)
        text, _ = run.generate(120, seed=2)
        assert len(text) == 120 and set(text) <= vocab
    finally:
        browser_context.set_offline(False)
    record("static", {**numbers, **json.loads((site / "export.json").read_text())["files"]})
    run.page.close()


def test_serve_gives_the_same_page_backed_by_python(
    open_page: Callable[[str], PageRun], api_server: str, lstm_run: Path
) -> None:
    vocab = set(checkpoint.load(lstm_run).tokenizer.vocab[1:])
    run = open_page(api_server)
    assert run.page.goto(api_server + "config.json").json()["mode"] == "server"
    record("serve", check_page(run, vocab, "serve"))
    run.page.close()


def test_a_cjk_transformer_generates_past_its_context_from_int8_weights(
    open_page: Callable[[str], PageRun], tmp_path: Path
) -> None:
    """Chinese text, the key/value cache rebuilt in JavaScript (context 64, 300 tokens), a quantized model."""
    run = tmp_path / "xiyouji"
    train([XIYOUJI], run, model="transformer", max_steps=30, **TINY)
    vocab = set(checkpoint.load(run).tokenizer.vocab[1:])
    site = export(run, tmp_path / "site", "web", quantize="int8").directory
    with serve_folder(site) as url:
        page = open_page(url)
        page.open_and_load()
        text, _ = page.generate(300)
        assert len(text) == 300 and set(text) <= vocab
        assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) > 100  # mostly CJK ideographs
        page.page.screenshot(path=str(ARTIFACTS / "cjk-desktop.png"), full_page=True)
        assert page.outside == [] and page.errors == []
        page.page.close()


def test_an_adaptive_softmax_lstm_generates_chinese_in_the_page(
    open_page: Callable[[str], PageRun], tmp_path: Path
) -> None:
    """The head chosen for large vocabularies: the ONNX graph returns log-probabilities, which the
    worker samples from like logits."""
    run = tmp_path / "adaptive"
    train([XIYOUJI], run, model="lstm", softmax="adaptive", max_steps=30, **TINY)
    ckpt = checkpoint.load(run)
    assert ckpt.model_config.cutoffs
    vocab = set(ckpt.tokenizer.vocab[1:])
    site = export(run, tmp_path / "site", "web").directory
    with serve_folder(site) as url:
        page = open_page(url)
        page.open_and_load()
        text, _ = page.generate(200)
        assert len(text) == 200 and set(text) <= vocab
        assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) > 60
        assert page.outside == [] and page.errors == []
        page.page.close()


def test_artifacts_folder_is_ignored_by_git() -> None:
    assert "tests/artifacts/" in (Path(__file__).parents[1] / ".gitignore").read_text().split()


PROMPT = "ROMEO: let me see thee"  # letters the model writes: the penalty window starts in the prompt
PENALTY = 1.5


def sampling_controls(run: PageRun, greedy: bool = False, penalty: str = "1", stop: str = "") -> None:
    """The page's greedy box, repetition penalty and stop string (under "Advanced", which is open)."""
    run.page.set_checked("#greedy", greedy)
    run.page.fill("#repetition-penalty", penalty)
    run.page.fill("#stop-string", stop)


def test_greedy_penalty_and_stop_string_in_the_browser_follow_python(
    open_page: Callable[[str], PageRun], static_site: tuple[str, Path], lstm_run: Path
) -> None:
    """Greedy decoding is deterministic, so the ONNX model in the page must write what PyTorch writes,
    with the repetition penalty too; the stop string ends the text where Python's does."""
    model = load(lstm_run)
    run = open_page(static_site[0])
    run.open_and_load()
    run.page.fill("#prompt", PROMPT)
    assert run.page.text_content("#repetition-window") == str(SamplingOptions().repetition_window)

    sampling_controls(run, greedy=True)
    assert run.page.is_disabled("#temperature") and "greedy" in run.page.text_content("#temperature-value")
    greedy, _ = run.generate(200, seed=1)
    assert run.generate(200, seed=1)[0] == greedy
    assert PROMPT + greedy == model.generate(PROMPT, 200, temperature=0)

    sampling_controls(run, greedy=True, penalty=str(PENALTY))
    penalised, _ = run.generate(200, seed=1)
    assert PROMPT + penalised == model.generate(PROMPT, 200, temperature=0, repetition_penalty=PENALTY)
    assert penalised != greedy

    stop = greedy[80:83]
    sampling_controls(run, greedy=True, stop=stop)
    cut, _ = run.generate(200, seed=1)
    assert cut == greedy[: greedy.index(stop)] and PROMPT + cut == model.generate(PROMPT, 200, temperature=0, stop=stop)
    assert "ended at the stop string" in run.page.text_content("#status")
    # (a stop string typed as \n, a line break: the float32 transformer test, whose text has one)

    sampling_controls(run, penalty="0")
    run.page.click("#generate")
    assert run.page.text_content("#status").startswith("Error: the repetition penalty must be between 0.000001 and")
    assert run.outside == [] and run.errors == []
    run.page.close()


def test_the_page_samples_with_a_repetition_penalty_as_python_does(
    open_page: Callable[[str], PageRun], static_site: tuple[str, Path]
) -> None:
    """Sampled text cannot match (the page has its own random numbers), so compare the odds themselves:
    sampling.js's probabilities in Chromium against generation/sampling.py's, penalty and window included."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 40, generator=gen) * 3  # positive and negative logits: divided and multiplied
    recent = [3, 3, 7, 12, 0, 25, 39, 7]  # repeated ids count once; <unk> (0) stays impossible
    options = [SamplingOptions(1.0, repetition_penalty=PENALTY), SamplingOptions(0.7, top_k=8, repetition_penalty=0.8),
               SamplingOptions(1.2, top_p=0.9, repetition_penalty=2.0)]  # fmt: skip
    run = open_page(static_site[0])
    run.page.goto(static_site[0])
    result = run.page.evaluate(
        """async ([logits, recent, cases]) => {
          const s = await import("./sampling.js");
          return {
            limits: s.LIMITS,
            probs: cases.map((o) => Array.from(s.probabilities(logits, o, recent))),
            greedy: s.sample(logits, { ...cases[0], temperature: 0 }, Math.random, recent),
          };
        }""",
        [logits[0].tolist(), recent, [{"temperature": o.temperature, "topK": o.top_k, "topP": o.top_p,
                                       "repetitionPenalty": o.repetition_penalty} for o in options]],
    )  # fmt: skip
    assert result["limits"] == {"min_repetition_penalty": MIN_PENALTY, "max_repetition_penalty": MAX_PENALTY,
                                "repetition_window": SamplingOptions().repetition_window}  # fmt: skip
    ids = torch.tensor([recent])
    for o, js in zip(options, result["probs"], strict=True):
        expected = probabilities(logits, o, ids)[0].double()
        got = torch.tensor(js, dtype=torch.float64)
        assert torch.allclose(got / got.sum(), expected / expected.sum(), atol=1e-6), o
    plain = probabilities(logits, SamplingOptions(1.0))[0]
    assert not torch.allclose(plain, probabilities(logits, options[0], ids)[0])  # the penalty is not a no-op
    assert result["greedy"] == int(next_tokens(logits, SamplingOptions(0.0, repetition_penalty=PENALTY), None, ids))
    run.page.close()


def test_the_served_page_sends_greedy_penalty_and_stop_to_the_api(
    open_page: Callable[[str], PageRun], api_server: str, lstm_run: Path
) -> None:
    model = load(lstm_run)
    run = open_page(api_server)
    sent: list[dict[str, Any]] = []
    run.page.on("request", lambda r: r.url.endswith("/api/generate/stream") and sent.append(r.post_data_json))
    run.open_and_load()
    assert run.page.eval_on_selector("#stop-string", "el => el.maxLength") == MAX_STOP_CHARS  # the server's limits
    assert run.page.eval_on_selector("#prompt", "el => el.maxLength") == MAX_PROMPT_CHARS
    run.page.fill("#prompt", PROMPT)
    sampling_controls(run, greedy=True, penalty=str(PENALTY), stop="\\n")
    text, _ = run.generate(200, seed=1)
    assert sent[-1] == {
        "prompt": PROMPT, "length": 200, "temperature": 0, "top_k": None, "top_p": None,
        "repetition_penalty": PENALTY, "stop": "\n", "seed": 1,
    }  # fmt: skip
    assert PROMPT + text == model.generate(PROMPT, 200, temperature=0, repetition_penalty=PENALTY, stop="\n")
    sampling_controls(run)
    run.generate(20, seed=1)
    assert sent[-1]["temperature"] == 0.8 and sent[-1]["repetition_penalty"] == 1 and sent[-1]["stop"] is None
    assert run.outside == [] and run.errors == []
    run.page.close()


def random_transformer(run: Path, positional: str) -> Path:
    """A float32 transformer (context 32) with random weights scaled so its logits spread over several
    units: what it writes depends on every token in its window and on their positions, so a window slid
    in any other way than generation/generator.py's writes other text within a few tokens."""
    text = SHAKESPEARE.read_text(encoding="utf-8")
    tokenizer = CharTokenizer(["<unk>", *sorted(set(text))])
    config = ModelConfig(kind="transformer", vocab_size=len(tokenizer), n_layer=2, n_embd=32, n_head=4, context=32,
                         positional=positional)  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    checkpoint.save(run / "best", model, config, tokenizer, [PROMPT], train_config={"preset": "test"},
                    metrics={}, corpus={"files": [{"path": str(SHAKESPEARE)}], "train_chars": len(text)})  # fmt: skip
    return run


def greedy_margins(run: Path, prompt: str, length: int, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Per step of Python's greedy generation, how far the chosen token's logit is above the next one's."""
    margins: list[float] = []
    real_next_tokens = generate_module.next_tokens

    def spy(logits: torch.Tensor, *args: Any) -> torch.Tensor:
        top = logits[0, 1:].float().topk(2).values  # <unk> (id 0) is never chosen
        margins.append(float(top[0] - top[1]))
        return real_next_tokens(logits, *args)

    monkeypatch.setattr(generate_module, "next_tokens", spy)
    load(run).generate(prompt, length, temperature=0)
    monkeypatch.undo()
    return margins


@pytest.mark.parametrize("positional", ["rotary", "learned"])
def test_a_float32_transformer_in_the_page_writes_pythons_greedy_text_far_past_its_context(
    open_page: Callable[[str], PageRun], positional: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """12 contexts long: worker.js rebuilds the key/value cache from the last 3/4 of the window every 8
    tokens, as generation/generator.py does; the page's text must be Python's, character for character (one token
    each). Then a stop string typed as \\n (a line break) ends the text where Python's ends."""
    run = random_transformer(tmp_path / "run", positional)
    model = load(run)
    length = 12 * model.checkpoint.model_config.context
    # float32 noise (ONNX in WebAssembly vs PyTorch: ~1e-5 of the logits' scale) cannot flip a choice
    assert min(greedy_margins(run, PROMPT, length, monkeypatch)) > 1e-3
    expected = model.generate(PROMPT, length, temperature=0)[len(PROMPT) :]
    assert "\n" in expected  # so the stop string below is met
    site = export(run, tmp_path / "site", "web").directory
    with serve_folder(site) as url:
        page = open_page(url)
        page.open_and_load()
        page.page.fill("#prompt", PROMPT)
        sampling_controls(page, greedy=True)
        text, _ = page.generate(length)
        first_difference = next((i for i, (a, b) in enumerate(zip(text, expected, strict=False)) if a != b), None)
        assert text == expected, f"the page and Python part at character {first_difference} of {len(expected)}"

        sampling_controls(page, greedy=True, stop="\\n")
        cut, _ = page.generate(length)
        assert cut == expected[: expected.index("\n")]
        assert PROMPT + cut == model.generate(PROMPT, length, temperature=0, stop="\n")
        assert "ended at the stop string" in page.page.text_content("#status")
