"""The static web page: a run exported as ``model.onnx`` and the files that run it in a browser.

``export(run, out)`` writes ``model.onnx`` (export/onnx.py: one generation step; checked against PyTorch by
export/check.py), ``tokenizer.json`` and ``prompts.json``; ``fmt="web"`` adds the page (``web/``), the vendored
onnxruntime-web and a ``config.json`` that tells the page to run the model in the browser; ``app/serve.py``
serves the same page in server mode with :func:`page_config`. The folder is written whole and then swapped in,
so an interrupted export leaves the previous one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textweaver import __version__
from textweaver.data.tokenizer import segments_chinese
from textweaver.errors import TextweaverError
from textweaver.export.check import rollout_max_error
from textweaver.export.onnx import QUANTIZE, quantize_weights, signature, write_onnx
from textweaver.export.train_step import check_trainable, write_training
from textweaver.generation.generator import SLIDE_KEEP
from textweaver.run import checkpoint
from textweaver.run import lock as runlock

FORMATS = ("onnx", "web")
MODEL_FILE, MANIFEST, PAGE_CONFIG = "model.onnx", "export.json", "config.json"
WEB_DIR = Path(__file__).parent.parent / "web"
# the page, by path under web/ and under the exported folder alike (app.js imports ./shared/util.js, which the
# studio imports too)
UI_FILES = ("index.html", "style.css", "app.js", "worker.js", "sampling.js", "tokenizer.js", "shared/util.js")
# the Train panel (app.js imports it when config.json has "train"): its worker, its loss chart, the vendored uPlot
TRAIN_UI_FILES = (
    "train-panel.js", "train-store.js", "train.js", "train-text.js", "shared/chart.js",
    "vendor/uplot/uPlot.iife.min.js", "vendor/uplot/uPlot.min.css", "vendor/uplot/LICENSE",
)  # fmt: skip
VENDOR = Path("vendor") / "onnxruntime-web"
RUNTIME_FILES = ("ort.wasm.bundle.min.js", "ort-wasm-simd-threaded.wasm", "LICENSE", "VERSION")
MAX_LENGTH = 2000  # the page's length slider and the server's cap


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
    train: bool = False,
) -> ExportResult:
    """Write ``model.onnx``, ``tokenizer.json`` and ``prompts.json`` to ``out``; ``fmt="web"`` adds the page, and
    ``train`` the files that fine-tune the model in it (export/train_step.py: LSTM and GRU models)."""
    if fmt not in FORMATS:
        raise TextweaverError(f"unknown --format {fmt!r}: use onnx (model files) or web (a static page)")
    if quantize is not None and quantize not in QUANTIZE:
        raise TextweaverError(f"unknown --quantize {quantize!r}: use int8 or fp16, or leave it out for float32")
    if quantize is not None and fmt != "web":
        raise TextweaverError(
            "--quantize is for --format web (a smaller download); --format onnx writes the float32 "
            "reference model: drop --quantize or use --format web"
        )
    if train and fmt != "web":
        raise TextweaverError("training in the page is for --format web: drop the training files or use --format web")
    ckpt = checkpoint.load(run_dir)
    if train:
        check_trainable(ckpt.model_config)
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
            files = _write(ckpt, tmp, fmt, quantize, title, description, train)
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
    description: str | None, train: bool = False,
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
        for name in UI_FILES + (TRAIN_UI_FILES if train else ()):
            (directory / name).parent.mkdir(parents=True, exist_ok=True)
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
        if train:
            config["train"] = write_training(ckpt, directory)
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
