"""Export: the ONNX step model equals PyTorch, quantized models stay close, the web folder is self-contained."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from textweaver import load
from textweaver.config import ModelConfig
from textweaver.data.tokenizer import CharTokenizer, WordTokenizer
from textweaver.errors import TextweaverError
from textweaver.export.check import OnnxStepper, rollout_max_error
from textweaver.export.onnx import signature
from textweaver.export.site import MANIFEST, MODEL_FILE, RUNTIME_FILES, UI_FILES, VENDOR, export
from textweaver.generation.sampling import SamplingOptions, probabilities
from textweaver.models import build_model
from textweaver.run import checkpoint

from conftest import SHAKESPEARE, XIYOUJI, one_line_error, run_cli

# URLs that occur in shipped text files without ever being requested: a console warning's link.
HARMLESS_URLS = {"https://web.dev/cross-origin-isolation-guide/"}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # one-token steps of tiny models: a second thread only adds waiting


def make_run(
    root: Path, kind: str, positional: str = "rotary", width: int = 32, cutoffs: list[int] | None = None
) -> Path:
    """A checkpoint with random weights, scaled so logits spread over several units."""
    text = SHAKESPEARE.read_text(encoding="utf-8")
    tokenizer = CharTokenizer(["<unk>", *sorted(set(text))])
    config = ModelConfig(kind=kind, vocab_size=len(tokenizer), n_layer=2, n_embd=width, n_head=4, context=32,
                         positional=positional, cutoffs=cutoffs or [])  # fmt: skip
    torch.manual_seed(0)
    model = build_model(config)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0 if kind == "transformer" else 4.0)
    run = root / f"{kind}-{positional}-{width}-{len(cutoffs or [])}"
    checkpoint.save(run / "best", model, config, tokenizer, ["First Citizen:", "Before we proceed any further,"],
                    train_config={"preset": "test"}, metrics={"val_bpc": 3.1},
                    corpus={"files": [{"path": str(SHAKESPEARE)}], "train_chars": len(text)})  # fmt: skip
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export-runs")
    return {
        "lstm": make_run(root, "lstm"),
        "gru": make_run(root, "gru"),
        "transformer": make_run(root, "transformer"),
        "transformer-learned": make_run(root, "transformer", positional="learned"),
        "lstm-wide": make_run(root, "lstm", width=64),  # big enough that most weights get quantized
        "lstm-adaptive": make_run(root, "lstm", cutoffs=[16, 40]),  # the head chosen for large vocabularies
    }


@pytest.mark.parametrize(("kind", "steps"), [("lstm", 200), ("gru", 200), ("transformer", 200),
                                             ("transformer-learned", 80), ("lstm-adaptive", 200)])  # fmt: skip
def test_onnx_logits_equal_pytorch_over_a_rollout(kind: str, steps: int, runs: dict[str, Path], tmp_path: Path) -> None:
    """Within 1e-4 at every step; the transformer (context 32) slides its window every 8 tokens."""
    result = export(runs[kind], tmp_path / "onnx")
    assert sorted(result.files) == ["model.onnx", "prompts.json", "tokenizer.json"]
    ckpt = checkpoint.load(runs[kind])
    assert rollout_max_error(ckpt, result.directory / MODEL_FILE, steps=steps) < 1e-4
    assert rollout_max_error(ckpt, result.directory / MODEL_FILE, steps=40, batch=3, seed=1) < 1e-4  # dynamic batch


def generator_vs_onnx(run: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch, prompt: str, length: int,
                      num_samples: int = 1) -> list[float]:  # fmt: skip
    """Per step, the largest |logit difference| between the shipping :class:`Generator` and the exported
    model stepped as the web page steps it, fed the tokens the generator sampled; relative to the
    largest |logit| of that step."""
    import textweaver.generation.generator as generate_module

    model = load(run)
    recorded: list[tuple[np.ndarray, np.ndarray]] = []
    real_next_tokens = generate_module.next_tokens

    def spy(logits: torch.Tensor, *args: object) -> torch.Tensor:
        tokens = real_next_tokens(logits, *args)  # type: ignore[arg-type]
        recorded.append((logits.float().numpy().copy(), tokens.numpy().copy()))
        return tokens

    monkeypatch.setattr(generate_module, "next_tokens", spy)
    model.generate_many(prompt, length, num_samples=num_samples, seed=3, temperature=1.0)
    monkeypatch.undo()
    stepper = OnnxStepper(model_file, model.checkpoint.model_config, num_samples)
    onnx_logits = stepper.prefill(np.tile(model.tokenizer.encode(prompt), (num_samples, 1)))
    errors = []
    for logits, tokens in recorded:
        errors.append(float(np.abs(logits - onnx_logits).max() / np.abs(logits).max()))
        onnx_logits = stepper.push(tokens)
    assert len(errors) == length
    return errors


@pytest.mark.parametrize("kind", ["lstm", "gru", "transformer", "transformer-learned", "lstm-adaptive"])
def test_the_exported_model_follows_the_shipping_generator_past_the_window_slide(
    kind: str, runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 40-character prompt (longer than the transformer's context of 32) and 120 sampled tokens: the
    transformer slides its window 15 times. Float32 export: within 1e-5 of the logits' scale at every step."""
    model_file = export(runs[kind], tmp_path / "onnx").directory / MODEL_FILE
    prompt = SHAKESPEARE.read_text(encoding="utf-8")[:40]
    errors = generator_vs_onnx(runs[kind], model_file, monkeypatch, prompt, 120, num_samples=2)
    assert max(errors) < 1e-5, f"step {int(np.argmax(errors))}: {max(errors):.2e}"


@pytest.mark.parametrize(("quantize", "tolerance"), [("fp16", 0.01), ("int8", 0.08)])
@pytest.mark.parametrize("kind", ["lstm-wide", "transformer"])
def test_quantized_exports_follow_the_generator_within_their_own_tolerance(
    kind: str, quantize: str, tolerance: float, runs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = export(runs[kind], tmp_path / "site", "web", quantize=quantize).directory
    prompt = SHAKESPEARE.read_text(encoding="utf-8")[:40]
    errors = generator_vs_onnx(runs[kind], site / MODEL_FILE, monkeypatch, prompt, 80)
    assert max(errors) < tolerance, f"step {int(np.argmax(errors))}: {max(errors):.3f}"
    assert max(errors) > 1e-6  # really the quantized weights


def test_onnx_signature_is_one_step_with_dynamic_batch_and_cache(runs: dict[str, Path], tmp_path: Path) -> None:
    shapes = {}
    for kind in ("lstm", "gru", "transformer"):
        model = onnx.load(str(export(runs[kind], tmp_path / kind).directory / MODEL_FILE))
        dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in [*model.graph.input, *model.graph.output]}  # fmt: skip
        shapes[kind] = dims
        assert {p.key: p.value for p in model.metadata_props}["kind"] == kind
        names = signature(checkpoint.load(runs[kind]).model_config)  # what OnnxStepper and the page feed
        assert [v.name for v in model.graph.input] == names["inputs"]
        assert [v.name for v in model.graph.output] == names["outputs"]
    vocab = shapes["lstm"]["logits"][1]
    assert shapes["lstm"] == {
        "tokens": ["batch", 1], "h": [2, "batch", 32], "c": [2, "batch", 32],
        "logits": ["batch", vocab], "h_out": [2, "batch", 32], "c_out": [2, "batch", 32],
    }  # fmt: skip
    assert set(shapes["gru"]) == {"tokens", "h", "logits", "h_out"}
    assert shapes["transformer"]["past_kv"] == [2, 2, "batch", 4, "past", 8]
    assert shapes["transformer"]["present_kv"][4] != shapes["transformer"]["past_kv"][4]  # grows by one


def test_the_logits_compared_are_not_trivially_small(runs: dict[str, Path], tmp_path: Path) -> None:
    ckpt = checkpoint.load(runs["transformer"])
    stepper = OnnxStepper(export(runs["transformer"], tmp_path / "t").directory / MODEL_FILE, ckpt.model_config)
    logits = stepper.prefill(np.array([[5, 6, 7]]))
    assert logits.shape == (1, ckpt.model_config.vocab_size) and logits.std() > 0.5


@pytest.mark.parametrize(("quantize", "max_ratio"), [("int8", 0.35), ("fp16", 0.6)])
def test_quantized_web_export_is_smaller_loads_and_stays_close(
    quantize: str, max_ratio: float, runs: dict[str, Path], tmp_path: Path
) -> None:
    full = export(runs["lstm-wide"], tmp_path / "full", "web")
    small = export(runs["lstm-wide"], tmp_path / "small", "web", quantize=quantize)
    assert small.model_bytes < max_ratio * full.model_bytes
    assert json.loads((small.directory / "config.json").read_text())["model"]["quantize"] == quantize
    config = checkpoint.load(runs["lstm-wide"]).model_config
    prompt = np.array([[3, 1, 4, 1, 5, 9, 2, 6]])
    exact = OnnxStepper(full.directory / MODEL_FILE, config).prefill(prompt)
    approx = OnnxStepper(small.directory / MODEL_FILE, config).prefill(prompt)
    assert np.abs(exact - approx).max() < 0.05 * np.abs(exact).max()
    assert exact.argmax() == approx.argmax()


def test_web_folder_is_self_contained_and_declares_its_csp(runs: dict[str, Path], tmp_path: Path) -> None:
    site = export(runs["transformer"], tmp_path / "site", "web").directory
    files = {str(p.relative_to(site)) for p in site.rglob("*") if p.is_file()}
    expected = {*UI_FILES, "config.json", "model.onnx", "tokenizer.json", "prompts.json", MANIFEST}
    assert files == expected | {str(VENDOR / name) for name in RUNTIME_FILES}
    config = json.loads((site / "config.json").read_text())
    assert config["mode"] == "onnx" and config["model"]["kind"] == "transformer" and config["max_length"] == 2000
    assert config["title"] == "Shakespeare 8k" and "3.10 bits per character" in config["description"]
    html = (site / "index.html").read_text()
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html)
    assert csp is not None
    for rule in ("default-src 'self'", "connect-src 'self'", "script-src 'self' 'wasm-unsafe-eval'"):
        assert rule in csp.group(1)
    assert "MIT License" in (site / VENDOR / "LICENSE").read_text()
    assert (site / VENDOR / "VERSION").read_text().split()[0] == "1.30.0"


def test_no_shipped_file_points_outside_the_site(runs: dict[str, Path], tmp_path: Path) -> None:
    site = export(runs["lstm"], tmp_path / "site", "web").directory
    for path in site.rglob("*"):
        if path.suffix in (".html", ".js", ".css"):
            urls = set(re.findall(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s\"'`)]*", path.read_text(), re.I))
            allowed = HARMLESS_URLS if VENDOR.name in path.parts else set()
            assert urls <= allowed, f"{path.name} names {urls - allowed}"
    css = (site / "style.css").read_text()
    assert "@import" not in css and "url(" not in css  # no web fonts, no remote images


def test_export_replaces_an_earlier_export_but_never_other_files(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "site"
    export(runs["gru"], out, "web")
    (out / "stale.txt").write_text("left from before")
    export(runs["gru"], out, "onnx")
    assert not (out / "stale.txt").exists() and not (out / "index.html").exists()
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(TextweaverError, match="not empty and not an earlier textweaver export"):
        export(runs["gru"], foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_a_second_export_into_a_folder_being_written_is_refused(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import os

    from textweaver.run import lock as runlock

    out = tmp_path / "site"
    with runlock.held(tmp_path / f".site{runlock.LOCK}", "another export"):  # an export under way
        one_line_error(*run_cli(["export", str(runs["lstm"]), "--out", str(out)], capsys), f"pid {os.getpid()}")
        assert not out.exists() and not (tmp_path / ".site.tmp").exists()
    export(runs["lstm"], out)  # released: it goes ahead
    assert (out / "model.onnx").is_file()


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "tflite"], r"unknown --format 'tflite': use onnx .* or web"),
    (["--format", "web", "--quantize", "int4"], "unknown --quantize 'int4': use int8 or fp16"),
    (["--quantize", "int8"], "--quantize is for --format web"),
])  # fmt: skip
def test_bad_export_options_get_one_line(
    args: list[str], message: str, runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one_line_error(*run_cli(["export", str(runs["lstm"]), "--out", str(tmp_path / "x"), *args], capsys), message)


def test_export_of_a_folder_that_is_no_run_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["export", str(tmp_path), "--out", str(tmp_path / "x"), "--format", "web"], capsys)
    assert code == 2 and "not a textweaver checkpoint" in err


def test_cli_export_lists_the_files_and_how_to_serve_them(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["export", str(runs["lstm"]), "-o", str(tmp_path / "site"), "--format", "web", "--title",
                            "Bard"], capsys)  # fmt: skip
    assert code == 0 and "model.onnx" in out and "python -m http.server -d" in out
    assert json.loads((tmp_path / "site" / "config.json").read_text())["title"] == "Bard"


NODE_CHECK = """
import { probabilities, sample, seededRandom } from "./sampling.js";
import { Tokenizer } from "./tokenizer.js";
const cases = JSON.parse(process.argv[2]);
const out = { probs: [], greedy: [], draws: [], char: [], word: [] };
for (const c of cases.sampling) {
  out.probs.push(Array.from(probabilities(c.logits, c.options)));
  out.greedy.push(sample(c.logits, { temperature: 0 }, Math.random));
  const random = seededRandom(7);
  out.draws.push(Array.from({ length: 300 }, () => sample(c.logits, c.options, random)));
}
const char = new Tokenizer(cases.char);
const word = new Tokenizer(cases.word);
for (const text of cases.texts) {
  out.char.push(char.encode(text));
  out.word.push(word.split(text));
}
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(
    shutil.which("node") is None,
    reason="node is missing, so sampling.js and tokenizer.js go untested: `apt-get install -y nodejs` (.ci/run does)",
)
def test_javascript_sampling_and_tokenizer_mirror_python(tmp_path: Path) -> None:
    web = Path(__file__).parents[1] / "src" / "textweaver" / "web"
    for name in ("sampling.js", "tokenizer.js"):
        shutil.copyfile(web / name, tmp_path / name)
    (tmp_path / "check.mjs").write_text(NODE_CHECK)
    gen = torch.Generator().manual_seed(0)
    options = [SamplingOptions(1.0), SamplingOptions(0.7, top_k=5), SamplingOptions(1.3, top_p=0.8),
               SamplingOptions(0.5, top_k=10, top_p=0.5), SamplingOptions(1.0, top_k=1)]  # fmt: skip
    logits = [torch.randn(1, 30, generator=gen) * 3 for _ in options]
    logits[0][0, 0] = 50.0  # <unk> is the likeliest but must never come out
    texts = ["孙悟空 said: ROMEO's 3 apples…", "naïve café — 西游记。", "emoji 🙂 and tabs\t\tend"]
    chars = sorted(set(XIYOUJI.read_text(encoding="utf-8")[:3000] + "".join(texts)) - {"🙂"})
    words = sorted({t for text in texts for t in WordTokenizer(["<unk>"]).split(text)})
    cases = {
        "sampling": [{"logits": row[0].tolist(), "options": {"temperature": o.temperature, "topK": o.top_k,
                      "topP": o.top_p}} for row, o in zip(logits, options, strict=True)],
        "char": {"level": "char", "vocab": ["<unk>", *chars]},
        "word": {"level": "word", "vocab": ["<unk>", *words]},
        "texts": texts,
    }  # fmt: skip
    done = subprocess.run(["node", str(tmp_path / "check.mjs"), json.dumps(cases)], capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    result = json.loads(done.stdout)
    for row, o, js_probs, greedy, draws in zip(
        logits, options, result["probs"], result["greedy"], result["draws"], strict=True
    ):
        expected = probabilities(row, o)[0].double()
        got = torch.tensor(js_probs, dtype=torch.float64)
        assert torch.allclose(got / got.sum(), expected / expected.sum(), atol=1e-6)
        assert greedy == int(row[0, 1:].argmax()) + 1
        assert set(draws) <= set(torch.nonzero(expected).flatten().tolist()) and 0 not in draws
    char, word = CharTokenizer(["<unk>", *chars]), WordTokenizer(["<unk>", *words])
    assert result["char"] == [char.encode(t).tolist() for t in texts]  # 🙂 is unknown: one <unk>, not two
    assert result["word"] == [word.split(t) for t in texts]
