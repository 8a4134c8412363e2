"""Export a trained model: ONNX with a single-step signature, or a static web page that runs it.

The ONNX graph is one generation step, so any runtime can generate incrementally (batch and P are
dynamic):

- LSTM: ``tokens`` (B, 1) int64, ``h``, ``c`` (layers, B, width) -> ``logits`` (B, V), ``h_out``, ``c_out``
- GRU: the same without ``c`` / ``c_out``
- transformer: ``tokens`` (B, 1), ``past_kv`` (layers, 2, B, heads, P, head_dim) -> ``logits`` (B, V),
  ``present_kv`` (layers, 2, B, heads, P + 1, head_dim)

Start from zeros (RNN) or an empty cache (P = 0) and feed each output state back. A transformer's
P + 1 may not exceed its context: when the cache is full, rebuild it from the last 3/4 of the
context by stepping through those tokens from an empty cache (``generation/generator.py`` does the same in one
batched pass). :class:`OnnxStepper` is that loop in Python; ``web/worker.js`` is the same in
JavaScript.

``--format web`` adds the page (``web/``), the vendored onnxruntime-web and a ``config.json`` that
tells the page to run the model in the browser; ``app/serve.py`` serves the same page in server mode.
``--quantize`` stores the large weight matrices as int8 (one scale per row) or float16; a Cast
(and Mul) node restores float32 when the model loads, so the signature and the math stay float32.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from textweaver import __version__
from textweaver.config import ModelConfig
from textweaver.data.tokenizer import segments_chinese
from textweaver.errors import TextweaverError
from textweaver.generation.generator import SLIDE_KEEP
from textweaver.models import LanguageModel, num_parameters
from textweaver.run import checkpoint
from textweaver.run import lock as runlock

FORMATS = ("onnx", "web")
QUANTIZE = ("int8", "fp16")
OPSET = 17
MODEL_FILE, MANIFEST, PAGE_CONFIG = "model.onnx", "export.json", "config.json"
WEB_DIR = Path(__file__).parent.parent / "web"
# the page, by path under web/ and under the exported folder alike (app.js imports ./shared/util.js, which the
# studio imports too)
UI_FILES = ("index.html", "style.css", "app.js", "worker.js", "sampling.js", "tokenizer.js", "shared/util.js")
VENDOR = Path("vendor") / "onnxruntime-web"
RUNTIME_FILES = ("ort.wasm.bundle.min.js", "ort-wasm-simd-threaded.wasm", "LICENSE", "VERSION")
MAX_LENGTH = 2000  # the page's length slider and the server's cap
QUANTIZE_MIN_ELEMENTS = 4096  # smaller tensors (biases, norms, rotary tables) stay float32


@dataclass(frozen=True)
class ExportResult:
    directory: Path
    files: dict[str, int]  # relative path -> bytes

    @property
    def model_bytes(self) -> int:
        return self.files[MODEL_FILE]

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


def export(
    run_dir: str | Path,
    out: str | Path,
    fmt: str = "onnx",
    quantize: str | None = None,
    title: str | None = None,
    description: str | None = None,
) -> ExportResult:
    """Write ``model.onnx``, ``tokenizer.json`` and ``prompts.json`` to ``out``; ``fmt="web"`` adds the page."""
    if fmt not in FORMATS:
        raise TextweaverError(f"unknown --format {fmt!r}: use onnx (model files) or web (a static page)")
    if quantize is not None and quantize not in QUANTIZE:
        raise TextweaverError(f"unknown --quantize {quantize!r}: use int8 or fp16, or leave it out for float32")
    if quantize is not None and fmt != "web":
        raise TextweaverError(
            "--quantize is for --format web (a smaller download); --format onnx writes the float32 "
            "reference model: drop --quantize or use --format web"
        )
    ckpt = checkpoint.load(run_dir)
    if fmt == "web" and ckpt.tokenizer.level == "bpe":  # tokenizer.js has no BPE
        raise TextweaverError(
            "the web page cannot tokenize --level bpe models yet: export --format onnx, or train with --level char"
        )
    if fmt == "web" and segments_chinese(ckpt.tokenizer):  # tokenizer.js has no jieba
        raise TextweaverError(
            "the web page cannot segment Chinese into the words of this --level word model: export --format onnx, "
            "or train with --level char"
        )
    out = Path(out).absolute()  # a name even for '.'
    _check_out(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.with_name(f".{out.name}{runlock.LOCK}")  # beside it: the folder itself is replaced whole
    with runlock.held(lock, f"the export folder {out}"):
        tmp = out.with_name(f".{out.name}.tmp")  # written whole, then swapped in: no half-written exports
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            files = _write(ckpt, tmp, fmt, quantize, title, description)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    return ExportResult(out, files)


def _check_out(out: Path) -> None:
    """``out`` may be new, empty, or an earlier export (which is replaced); nothing else is overwritten."""
    if out.exists() and not out.is_dir():
        raise TextweaverError(f"{out}: exists and is not a folder: choose another --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise TextweaverError(
            f"{out}: not empty and not an earlier textweaver export: choose a new --out folder or empty it"
        )


def _write(
    ckpt: checkpoint.Checkpoint, directory: Path, fmt: str, quantize: str | None, title: str | None,
    description: str | None,
) -> dict[str, int]:  # fmt: skip
    model_path = directory / MODEL_FILE
    write_onnx(ckpt, model_path)
    error = rollout_max_error(ckpt, model_path, steps=24)
    if not error <= 1e-3:
        raise TextweaverError(f"ONNX logits differ from PyTorch by {error:.2g}: please report this bug")
    if quantize is not None:
        import onnx

        onnx.save(quantize_weights(onnx.load(str(model_path)), quantize), str(model_path))
    (directory / "tokenizer.json").write_text(ckpt.tokenizer.to_json(), encoding="utf-8")
    (directory / "prompts.json").write_text(json.dumps(ckpt.prompts, ensure_ascii=False), encoding="utf-8")
    if fmt == "web":
        for name in UI_FILES:
            (directory / name).parent.mkdir(exist_ok=True)
            shutil.copyfile(WEB_DIR / name, directory / name)
        (directory / VENDOR).mkdir(parents=True)
        for name in RUNTIME_FILES:
            source = WEB_DIR / VENDOR / name
            if not source.is_file():
                raise TextweaverError(
                    f"{source}: missing from the installation: run scripts/update_onnxruntime_web.sh or reinstall"
                )
            shutil.copyfile(source, directory / VENDOR / name)
        config = page_config(ckpt, "onnx", title, description)
        config["model"]["file"], config["model"]["quantize"] = MODEL_FILE, quantize
        (directory / PAGE_CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    files = {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file()}
    # the checkpoint by its folder's name (best, last): a published export names no folder of this machine
    manifest = {
        "textweaver_version": __version__, "format": fmt, "quantize": quantize,
        "checkpoint": ckpt.directory.name, "files": files, "signature": signature(ckpt.model_config),
    }  # fmt: skip
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return files


def page_config(
    ckpt: checkpoint.Checkpoint, mode: str, title: str | None = None, description: str | None = None
) -> dict[str, Any]:
    """The page's ``config.json``: ``mode`` "onnx" (in the browser) or "server" (the JSON API)."""
    c = ckpt.model_config
    files = [Path(str(f.get("path", "")).removeprefix("builtin:")).stem for f in ckpt.corpus.get("files", [])]
    names = [n.replace("_", " ").replace("-", " ") for n in files if n]
    corpus = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "") or "a text corpus"
    if description is None:
        chars = ckpt.corpus.get("train_chars")
        kind = "transformer" if c.kind == "transformer" else c.kind.upper()
        description = (
            f"A {ckpt.tokenizer.level}-level {kind} ({c.n_layer} layer{'s' * (c.n_layer > 1)} of {c.n_embd}, "
            f"{len(ckpt.tokenizer):,} tokens in its vocabulary) trained on {corpus}"
            + (f" ({chars:,} characters)" if isinstance(chars, int) else "")
            + "."
        )
        bpc = ckpt.metrics.get("best_val_bpc", ckpt.metrics.get("val_bpc"))
        if isinstance(bpc, int | float):
            description += f" Validation loss {bpc:.2f} bits per character."
    model = {"kind": c.kind, "n_layer": c.n_layer, "n_embd": c.n_embd, "n_head": c.n_head,
             "context": c.context, "vocab_size": c.vocab_size, "slide_keep": SLIDE_KEEP}  # fmt: skip
    return {
        "mode": mode,
        "title": title or (corpus[:1].upper() + corpus[1:]),
        "description": description,
        "level": ckpt.tokenizer.level,
        "max_length": MAX_LENGTH,
        "model": model,
        "textweaver_version": __version__,
    }


# ---- ONNX --------------------------------------------------------------------------------------


def signature(config: ModelConfig) -> dict[str, list[str]]:
    if config.kind == "transformer":
        return {"inputs": ["tokens", "past_kv"], "outputs": ["logits", "present_kv"]}
    if config.kind == "lstm":
        return {"inputs": ["tokens", "h", "c"], "outputs": ["logits", "h_out", "c_out"]}
    return {"inputs": ["tokens", "h"], "outputs": ["logits", "h_out"]}


class _RNNStep(nn.Module):
    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, *state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits, new = self.model(tokens, tuple(state))  # (B, 1, V), (layers, B, width) each
        return (logits[:, -1], *new)


class _TransformerStep(nn.Module):
    def __init__(self, model: LanguageModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor, past_kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        past = [(past_kv[i, 0], past_kv[i, 1]) for i in range(self.model.config.n_layer)]  # (B, H, P, D) each
        logits, cache = self.model(tokens, past)
        present = torch.stack([torch.stack(kv) for kv in cache])  # (L, 2, B, H, P + 1, D)
        return logits[:, -1], present


def empty_state(config: ModelConfig, batch: int, past: int = 0) -> list[torch.Tensor]:
    """The state inputs for the first step: zeros, or an empty cache (``past`` positions for tracing)."""
    if config.kind == "transformer":
        head = config.n_embd // config.n_head
        return [torch.zeros(config.n_layer, 2, batch, config.n_head, past, head)]
    count = 2 if config.kind == "lstm" else 1
    return [torch.zeros(config.n_layer, batch, config.n_embd) for _ in range(count)]


def write_onnx(ckpt: checkpoint.Checkpoint, path: Path) -> None:
    """Trace one generation step of the checkpoint's model into ``path`` (float32)."""
    import onnx

    config = ckpt.model_config
    model = ckpt.build_model("cpu")
    names = signature(config)
    if config.kind == "transformer":
        wrapper: nn.Module = _TransformerStep(model)
        state = empty_state(config, 2, past=min(3, config.context - 1))
        axes = {"past_kv": {2: "batch", 4: "past"}, "present_kv": {2: "batch", 4: "past_plus_one"}}
    else:
        wrapper = _RNNStep(model)
        state = empty_state(config, 2)
        axes = {name: {1: "batch"} for name in (*names["inputs"][1:], *names["outputs"][1:])}
    axes |= {"tokens": {0: "batch"}, "logits": {0: "batch"}}
    tokens = torch.ones(2, 1, dtype=torch.long)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings say nothing a user can act on
        torch.onnx.export(
            wrapper, (tokens, *state), str(path), input_names=names["inputs"], output_names=names["outputs"],
            dynamic_axes=axes, opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )  # fmt: skip
    proto = onnx.load(str(path))
    _share_transposed_copies(proto.graph)
    onnx.helper.set_model_props(proto, {
        "textweaver_version": __version__, "kind": config.kind, "n_layer": str(config.n_layer),
        "n_embd": str(config.n_embd), "n_head": str(config.n_head), "context": str(config.context),
        "vocab_size": str(config.vocab_size), "parameters": str(num_parameters(model)),
    })  # fmt: skip
    proto.producer_name = "textweaver"
    onnx.save(proto, str(path))


def _share_transposed_copies(graph: Any) -> None:
    """The exporter stores a tied embedding twice, once transposed for the head: keep one copy."""
    from onnx import helper, numpy_helper

    matrices = {i.name: numpy_helper.to_array(i) for i in graph.initializer if len(i.dims) == 2}
    copies: dict[str, str] = {}
    for name, a in matrices.items():
        for other, b in matrices.items():
            free = name not in copies and other not in copies and other not in copies.values()
            if free and other != name and b.shape == a.shape[::-1] and np.array_equal(b, a.T):
                copies[other] = name
    if not copies:
        return
    kept = [i for i in graph.initializer if i.name not in copies]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [helper.make_node("Transpose", [source], [copy]) for copy, source in copies.items()]
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)


def quantize_weights(proto: Any, mode: str) -> Any:
    """Store each large weight matrix as int8 (symmetric, one scale per row) or float16.

    A Cast (int8: Cast then Mul by the scales) node recreates the float32 tensor under its old
    name; runtimes fold these constants when the model loads, so steps run at float32 speed.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    kept, added, nodes = [], [], []
    for init in graph.initializer:
        w = numpy_helper.to_array(init)
        matrix = [d for d in w.shape if d > 1]
        if init.data_type != TensorProto.FLOAT or w.size < QUANTIZE_MIN_ELEMENTS or len(matrix) < 2:
            kept.append(init)
            continue
        name = init.name
        if mode == "fp16":
            added.append(numpy_helper.from_array(w.astype(np.float16), f"{name}__fp16"))
            nodes.append(helper.make_node("Cast", [f"{name}__fp16"], [name], to=TensorProto.FLOAT))
            continue
        axis = w.ndim - 2  # rows of the matrix (the last two axes)
        reduce = tuple(a for a in range(w.ndim) if a != axis)
        scale = np.abs(w).max(axis=reduce, keepdims=True) / 127.0
        scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
        q = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        added += [numpy_helper.from_array(q, f"{name}__int8"), numpy_helper.from_array(scale, f"{name}__scale")]
        nodes += [
            helper.make_node("Cast", [f"{name}__int8"], [f"{name}__float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{name}__float", f"{name}__scale"], [name]),
        ]
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    onnx.checker.check_model(proto)
    return proto


class OnnxStepper:
    """Generates with an exported model in onnxruntime the way the web page does, one token per step."""

    def __init__(self, path: str | Path, config: ModelConfig, batch: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.config, self.batch = config, batch
        self.keep = max(1, int(config.context * SLIDE_KEEP))
        self.history: list[np.ndarray] = []  # (B,) ids, most recent last
        self.reset()

    def reset(self) -> None:
        self.state = [s.numpy() for s in empty_state(self.config, self.batch)]
        self.cached = 0

    def step(self, tokens: np.ndarray) -> np.ndarray:
        """Logits (B, V) after ``tokens`` (B,), attending to the state; no window management."""
        names = signature(self.config)
        feeds = dict(zip(names["inputs"], [tokens.reshape(-1, 1).astype(np.int64), *self.state], strict=True))
        logits, *self.state = self.session.run(names["outputs"], feeds)
        self.cached += 1
        return np.asarray(logits)

    def prefill(self, prompt: np.ndarray) -> np.ndarray:
        """Read a prompt (B, T): a transformer reads only its last ``context`` tokens."""
        start = max(0, prompt.shape[1] - self.config.context) if self.config.kind == "transformer" else 0
        self.history = [prompt[:, t] for t in range(prompt.shape[1])][-self.config.context :]
        logits = np.empty(0)
        for t in range(start, prompt.shape[1]):
            logits = self.step(prompt[:, t])
        return logits

    def push(self, tokens: np.ndarray) -> np.ndarray:
        """Logits after one more token, rebuilding a full transformer cache from the last 3/4 of the context."""
        self.history = [*self.history, tokens][-self.config.context :]
        if self.config.kind == "transformer" and self.cached + 1 > self.config.context:
            self.reset()
            for t in self.history[-self.keep :]:
                logits = self.step(t)
            return logits
        return self.step(tokens)


def rollout_max_error(
    ckpt: checkpoint.Checkpoint, path: str | Path, steps: int = 200, batch: int = 1, seed: int = 0
) -> float:
    """Largest |logit difference| between PyTorch and ONNX over a sampled rollout of ``steps`` tokens.

    Both sides follow ``generation/generator.py``'s window rule; PyTorch rebuilds a full cache in one pass, the
    ONNX model by stepping, so the comparison covers the web page's way of sliding too.
    """
    config = ckpt.model_config
    model = ckpt.build_model("cpu")
    stepper = OnnxStepper(path, config, batch)
    gen = torch.Generator().manual_seed(seed)
    history = torch.randint(1, config.vocab_size, (batch, 8), generator=gen)  # (B, T) a random prompt
    keep = max(1, int(config.context * SLIDE_KEEP))
    worst = 0.0
    with torch.inference_mode():
        start = max(0, history.shape[1] - config.context) if config.kind == "transformer" else 0
        logits, state = model(history[:, start:])
        logits, cached = logits[:, -1], history.shape[1] - start
        onnx_logits = stepper.prefill(history.numpy())
        for _ in range(steps):
            worst = max(worst, float(np.abs(logits.numpy() - onnx_logits).max()))
            token = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)  # (B, 1)
            history = torch.cat((history, token), dim=1)
            if config.kind == "transformer" and cached + 1 > config.context:
                logits, state = model(history[:, -keep:])
                logits, cached = logits[:, -1], keep
            else:
                logits, state = model.step(token[:, 0], state)
                cached += 1
            onnx_logits = stepper.push(token[:, 0].numpy())
    return max(worst, float(np.abs(logits.numpy() - onnx_logits).max()))
