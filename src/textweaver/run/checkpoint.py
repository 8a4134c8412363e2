"""Run directories and checkpoints: atomic writes, checksummed loads, CPU float32 weights.

A run directory holds ``best/`` (lowest validation loss) and ``last/`` (latest state), each
with ``model.safetensors``, ``config.json`` (architecture, tokenizer summary, training config,
metrics, format version, file checksums), ``tokenizer.json`` and ``prompts.json`` (start
sentences for random prompts); ``last/`` also has ``trainer.pt`` (optimizer, RNG and data
position, for ``--resume``).

A checkpoint is written into a temporary sibling folder and swapped in with renames, so a crash
at any moment leaves the previous checkpoint loadable (see :func:`recover`).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from textweaver import __version__
from textweaver.config import PRETRAINED, ModelConfig
from textweaver.data.tokenizer import Tokenizer
from textweaver.data.vocab import tokenizer_from_json
from textweaver.errors import TextweaverError
from textweaver.models import LanguageModel, build_model

FORMAT_VERSION = 1
WEIGHTS, CONFIG, TOKENIZER, PROMPTS, TRAINER = (
    "model.safetensors", "config.json", "tokenizer.json", "prompts.json", "trainer.pt",
)  # fmt: skip
CHECKSUMMED = (WEIGHTS, TOKENIZER, PROMPTS)
# a model fine-tuned in an exported page and downloaded from it (web/train.js): one .safetensors file whose
# metadata holds the checkpoint's config.json, tokenizer.json and prompts.json
PAGE_MODEL = "textweaver-page-model"


@dataclass
class Checkpoint:
    directory: Path
    model_config: ModelConfig
    tokenizer: Tokenizer
    prompts: list[str]
    train_config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    corpus: dict[str, Any] = field(default_factory=dict)

    def build_model(self, device: torch.device | str = "cpu") -> LanguageModel:
        """The model with its trained weights, in eval mode."""
        model = build_model(self.model_config)
        fit_weights(model, _load_weights(self.directory / WEIGHTS), self.directory / WEIGHTS)
        return model.to(device).eval()


def fit_weights(model: LanguageModel, state: dict[str, torch.Tensor], where: Path | str) -> None:
    """Load ``state`` into ``model``; every weight must be there (a tied output layer excepted) and fit."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"head.weight"} if model.config.tie_weights else set()
    if set(missing) - tied or unexpected:
        raise TextweaverError(
            f"{where}: weights do not fit the model in config.json "
            f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]}): "
            "the checkpoint was assembled from different runs"
        )


def save(
    directory: Path,
    model: torch.nn.Module,
    model_config: ModelConfig,
    tokenizer: Tokenizer,
    prompts: list[str],
    *,
    train_config: dict[str, Any],
    metrics: dict[str, Any],
    corpus: dict[str, Any],
    trainer_state: dict[str, Any] | None = None,
) -> None:
    """Write a complete checkpoint to ``directory`` atomically (temp folder + rename)."""
    recover(directory)
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file(_cpu_float_state(model), str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / WEIGHTS).chmod(0o666 & ~_umask())  # safetensors writes 0600 whatever the umask; the rest follow it
        (tmp / TOKENIZER).write_text(tokenizer.to_json(), encoding="utf-8")
        (tmp / PROMPTS).write_text(json.dumps(prompts, ensure_ascii=False, indent=0), encoding="utf-8")
        if trainer_state is not None:
            torch.save(trainer_state, tmp / TRAINER)
        config = {
            "format_version": FORMAT_VERSION,
            "textweaver_version": __version__,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": asdict(model_config),
            "tokenizer": {"level": tokenizer.level, "vocab_size": len(tokenizer),
                          "lowercase": tokenizer.lowercase, "normalize": tokenizer.normalize},
            "train": train_config,
            "metrics": metrics,
            "corpus": corpus,
            "checksums": {name: _sha256(tmp / name) for name in CHECKSUMMED},
        }  # fmt: skip
        (tmp / CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
        for f in tmp.iterdir():
            _fsync(f)
        _fsync(tmp)
    except (OSError, SafetensorError, RuntimeError) as e:  # torch.save reports write errors as RuntimeError
        shutil.rmtree(tmp, ignore_errors=True)
        reason = getattr(e, "strerror", None) or str(e).splitlines()[0]
        raise TextweaverError(
            f"{directory}: cannot write the checkpoint ({reason}); the previous one is intact: "
            "free disk space or choose another --out"
        ) from None
    old = directory.with_name(f".{directory.name}.old")
    if directory.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(directory, old)
    os.replace(tmp, directory)
    _fsync(directory.parent)
    shutil.rmtree(old, ignore_errors=True)


def recover(directory: Path) -> None:
    """Finish a swap that a crash interrupted: if the checkpoint ``directory`` is gone but its ``.old``
    copy is whole, put it back. Everything that reads or writes a checkpoint calls this first (loading
    does, through :func:`resolve`; training does for ``last/`` before deciding whether to resume)."""
    old = directory.with_name(f".{directory.name}.old")
    if not directory.exists() and (old / CONFIG).is_file():
        os.replace(old, directory)


def builtin_model_dir(name: str) -> Path:
    if name not in PRETRAINED:
        raise TextweaverError(f"unknown built-in model builtin:{name}: available are " + ", ".join(
            "builtin:" + n for n in PRETRAINED))  # fmt: skip
    return Path(str(resources.files("textweaver") / "assets" / "pretrained" / name))


def resolve(path: str | Path) -> Path:
    """The checkpoint folder meant by ``path``: a checkpoint itself, a run's ``best/`` then
    ``last/``, ``builtin:NAME`` for a model shipped with textweaver, or a ``.safetensors`` file downloaded from
    a page that fine-tuned its model (:func:`unpack_page_model`)."""
    if str(path).startswith("builtin:"):
        return builtin_model_dir(str(path).removeprefix("builtin:"))
    p = Path(path)
    if p.suffix == ".safetensors" and p.is_file():
        return unpack_page_model(p)
    recover(p)
    if not p.exists():
        raise TextweaverError(f"{p}: no such run directory: give the --out folder of a training run")
    for candidate in (p, p / "best", p / "last"):
        recover(candidate)
        if (candidate / CONFIG).is_file():
            return candidate
    raise TextweaverError(
        f"{p}: not a textweaver checkpoint (no config.json here or in best/ or last/): "
        "give a training run's --out folder"
    )


def unpack_page_model(path: Path) -> Path:
    """A model downloaded from a page as a checkpoint folder (a temporary one, removed when textweaver ends)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise TextweaverError(f"{path}: unreadable .safetensors file ({e}): download the model again") from None
    if meta.get("format") != PAGE_MODEL or not all(k in meta for k in (CONFIG, TOKENIZER, PROMPTS)):
        raise TextweaverError(
            f"{path}: not a model downloaded from a textweaver page (its metadata lacks format={PAGE_MODEL!r}): "
            "give a training run's --out folder, or the file a page's Download model gave"
        )
    try:
        config = json.loads(meta[CONFIG])
        config.pop("checksums", None)  # the page changed the weights; the file has its own integrity check
    except (json.JSONDecodeError, AttributeError) as e:
        raise TextweaverError(f"{path}: damaged metadata ({e}): download the model again") from None
    folder = Path(tempfile.mkdtemp(prefix="textweaver-page-model-"))
    atexit.register(shutil.rmtree, folder, True)
    shutil.copyfile(path, folder / WEIGHTS)
    (folder / CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")
    (folder / TOKENIZER).write_text(meta[TOKENIZER], encoding="utf-8")
    (folder / PROMPTS).write_text(meta[PROMPTS], encoding="utf-8")
    return folder


def load(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint (weights are loaded by :meth:`Checkpoint.build_model`)."""
    directory = resolve(path)
    try:
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TextweaverError(f"{directory / CONFIG}: unreadable ({e}): restore the checkpoint or retrain") from None
    version = config.get("format_version") if isinstance(config, dict) else None
    if not isinstance(version, int):
        raise TextweaverError(f"{directory / CONFIG}: no format_version: not a textweaver checkpoint")
    if version > FORMAT_VERSION:
        raise TextweaverError(
            f"{directory}: checkpoint format {version} is newer than this textweaver reads ({FORMAT_VERSION}): "
            "upgrade textweaver (pip install -U textweaver)"
        )
    for name, expected in config.get("checksums", {}).items():
        if not (directory / name).is_file():
            raise TextweaverError(
                f"{directory / name}: missing from the checkpoint: restore it or use the other of best/ and last/"
            )
        if _sha256(directory / name) != expected:
            raise TextweaverError(
                f"{directory / name}: corrupted or truncated (checksum differs from config.json): "
                "restore it, or use the other of best/ and last/"
            )
    try:
        model_config = ModelConfig(**config["model"])
        tokenizer = tokenizer_from_json((directory / TOKENIZER).read_text(encoding="utf-8"))
        prompts = json.loads((directory / PROMPTS).read_text(encoding="utf-8"))
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as e:
        raise TextweaverError(f"{directory}: damaged checkpoint ({e}): restore it or retrain") from None
    if model_config.vocab_size != len(tokenizer):
        raise TextweaverError(
            f"{directory}: tokenizer.json has {len(tokenizer)} tokens but the model expects "
            f"{model_config.vocab_size}: the files come from different runs"
        )
    return Checkpoint(
        directory=directory, model_config=model_config, tokenizer=tokenizer, prompts=list(prompts),
        train_config=config.get("train", {}), metrics=config.get("metrics", {}), corpus=config.get("corpus", {}),
    )  # fmt: skip


def load_trainer_state(directory: Path) -> dict[str, Any]:
    path = directory / TRAINER
    if not path.is_file():
        raise TextweaverError(f"{path}: missing, so the run cannot resume: start a new run with another --out")
    try:
        state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for damaged pickles
        raise TextweaverError(f"{path}: damaged ({type(e).__name__}): resume is impossible; start a new run") from None
    return state


def load_state(c: Checkpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's weights as stored: CPU float32, a tied matrix once."""
    return _load_weights(c.directory / WEIGHTS)


def weights_digest(directory: Path) -> str:
    """SHA-256 of a checkpoint's weights file: what a fine-tuned run records of its source."""
    return _sha256(directory / WEIGHTS)


def _load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The weights as float32 whatever they were stored as (shipped base models keep float16, see
    :func:`half_weights`)."""
    try:
        state = load_file(str(path))
        return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    except (SafetensorError, OSError, ValueError) as e:
        raise TextweaverError(
            f"{path}: unreadable weights ({e}): restore it, or use the other of best/ and last/"
        ) from None


def half_weights(directory: Path) -> None:
    """Store a checkpoint's weights as float16 (half the file; they load as float32) and update its checksum.
    For shipped models only: a run's own checkpoints stay float32 so that resuming is exact."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in _load_weights(directory / WEIGHTS).items()}
    if any(not torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise TextweaverError(f"{directory}: a weight does not fit float16: keep the float32 weights")
    tmp = directory / f".{WEIGHTS}.tmp"
    save_file(state, str(tmp), metadata={"format": "pt"})
    tmp.chmod(0o666 & ~_umask())  # safetensors writes 0600 whatever the umask
    os.replace(tmp, directory / WEIGHTS)
    config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    config["checksums"][WEIGHTS] = _sha256(directory / WEIGHTS)
    (directory / CONFIG).write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")


def _cpu_float_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict as contiguous CPU float32, tied tensors stored once, so it loads anywhere."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        t = tensor.detach().to("cpu")
        out[name] = (t.float() if t.is_floating_point() else t).contiguous().clone()
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
