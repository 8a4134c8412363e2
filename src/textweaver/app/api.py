"""The Python API: ``train(...)`` a model, ``load(run_dir)`` it, ``generate`` text."""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from textweaver.config import TrainConfig, parse_duration
from textweaver.data.corpus import LISTED_FILES, CorpusOptions, describe_file, resolve_paths, summarize_files
from textweaver.data.dataset import encode_file
from textweaver.device import select_device
from textweaver.errors import TextweaverError
from textweaver.generation.generator import GenerationRequest, Generator
from textweaver.generation.sampling import SamplingOptions
from textweaver.models import num_parameters
from textweaver.report.report import after_training
from textweaver.run import checkpoint
from textweaver.training.evaluate import score
from textweaver.training.loop import TrainResult
from textweaver.training.loop import train as _train


def train(
    corpus: str | Path | Sequence[str | Path],
    out: str | Path,
    *,
    resume: bool = False,
    progress: bool = False,
    **options: Any,
) -> TrainResult:
    """Train on ``corpus`` (files, directories or ``builtin:shakespeare``) into run directory ``out``.

    ``options`` are :class:`~textweaver.config.TrainConfig` fields (``model="gru"``, ``max_time="3m"``,
    ``max_steps=500`` ...); durations accept seconds or strings such as ``"5m"``. With ``resume`` the
    run keeps its stored settings; of the options passed here, those that may change on a resume
    (budgets, evaluation, runtime) replace them.
    """
    corpus_list = [corpus] if isinstance(corpus, str | Path) else list(corpus)
    for name in ("max_time", "checkpoint_every"):
        if isinstance(options.get(name), str):
            options[name] = parse_duration(options[name], "--" + name.replace("_", "-"))
    try:
        config = TrainConfig(**options)
    except TypeError as e:
        raise TextweaverError(f"unknown training option: {e}") from None
    return _train(
        corpus_list, out, config, resume=resume, progress=progress, given=list(options), finished=after_training
    )


def load(run_dir: str | Path, device: str = "cpu") -> TextModel:
    """A trained model from a run directory (its ``best/``, else ``last/``) or a checkpoint folder."""
    return TextModel(checkpoint.load(run_dir), select_device(device))


class TextModel:
    def __init__(self, ckpt: checkpoint.Checkpoint, device: torch.device) -> None:
        self.checkpoint = ckpt
        self.device = device
        self.model = ckpt.build_model(device)
        self.tokenizer = ckpt.tokenizer
        self.generator = Generator(self.model, self.tokenizer, ckpt.prompts, device, frozen=True)

    def random_prompt(self, seed: int | None = None) -> str:
        """A start sentence drawn from the training corpus."""
        return self.generator.random_prompt(seed)

    def request(
        self,
        prompt: str | None = None,
        length: int = GenerationRequest.length,
        temperature: float = SamplingOptions.temperature,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = SamplingOptions.repetition_penalty,
        num_samples: int = GenerationRequest.num_samples,
        seed: int | None = None,
        stop: str | None = None,
    ) -> GenerationRequest:
        sampling = SamplingOptions(temperature, top_k, top_p, repetition_penalty)
        request = GenerationRequest(prompt, length, num_samples, seed, stop, sampling)
        request.validate()
        return request

    def generate(self, prompt: str | None = None, length: int = GenerationRequest.length, **options: Any) -> str:
        """Prompt plus ``length`` generated tokens (characters for char models)."""
        return self.generator.generate(self.request(prompt, length, **options))[0]

    def generate_many(
        self, prompt: str | None = None, length: int = GenerationRequest.length, num_samples: int = 4, **options: Any
    ) -> list[str]:
        """``num_samples`` continuations generated together as one batch."""
        return self.generator.generate(self.request(prompt, length, num_samples=num_samples, **options))

    def stream(
        self, prompt: str | None = None, length: int = GenerationRequest.length, **options: Any
    ) -> Iterator[str]:
        """The prompt, then the new text piece by piece as it is sampled."""
        for pieces in self.generator.stream(self.request(prompt, length, **options)):
            if pieces[0]:
                yield pieces[0]

    def evaluate(self, paths: str | Path | Sequence[str | Path], batch_size: int = 32) -> dict[str, Any]:
        """Loss of the model on text files (folders are searched as ``train`` searches them): nats/token,
        bits/char, perplexity and unknown-token rate over all of them, and the same for each file under
        ``"files"``. Each file is scored on its own (a fresh state); the totals weigh files by their
        tokens. Memory stays bounded whatever the files' size: ids go to a scratch file, not to RAM."""
        train_cfg = self.checkpoint.train_config
        files = resolve_paths([paths] if isinstance(paths, str | Path) else list(paths), train_cfg.get("glob", "*.txt"))
        options = CorpusOptions(encoding=train_cfg.get("encoding", "utf-8"), errors=train_cfg.get("errors", "strict"))
        per_file: list[dict[str, Any]] = []
        sums = {"nats": 0.0, "tokens": 0, "scored_chars": 0.0, "chars": 0, "unknown": 0, "ids": 0}
        with tempfile.TemporaryDirectory(prefix="textweaver-eval-") as scratch:
            ids_file = Path(scratch) / "ids.bin"  # one file at a time
            for file in files:
                encoded = encode_file(file, self.tokenizer, options, ids_file)
                if len(encoded.ids) < 2:
                    raise TextweaverError(f"{file}: too short to evaluate (needs at least 2 tokens)")
                result = score(self.model, encoded.ids, batch_size, None, self.device)
                counts = {
                    "nats": result.nats, "tokens": result.tokens, "unknown": encoded.unknown, "ids": len(encoded.ids),
                    "scored_chars": encoded.chars * result.tokens / len(encoded.ids), "chars": encoded.chars,
                }  # fmt: skip
                del encoded  # close the memory map before the next file overwrites its scratch file
                per_file.append({"file": str(file), **_scores(**counts)})
                sums = {k: sums[k] + counts[k] for k in sums}
        total = _scores(**sums)
        total["files"] = per_file
        return total

    def info(self, local: bool = True) -> dict[str, Any]:
        """The model card. ``local=False`` names no folder of this machine (``serve`` publishes it): the
        checkpoint, corpus files and folders and a fine-tuning source by their own names."""
        c = self.checkpoint
        named = (lambda path: path) if local else _own_name
        corpus = summarize_files(c.corpus.get("files", []), LISTED_FILES)
        if not local:
            corpus = [{**f, "path": _own_name(str(f.get("path", "")))} for f in corpus]
        return {
            "checkpoint": named(str(c.directory)),
            "model": c.model_config.kind,
            "preset": c.train_config.get("preset"),
            "parameters": num_parameters(self.model),
            "layers": c.model_config.n_layer,
            "width": c.model_config.n_embd,
            "heads": c.model_config.n_head if c.model_config.kind == "transformer" else None,
            "context": c.model_config.context,
            "output": f"adaptive softmax {c.model_config.cutoffs}" if c.model_config.cutoffs else "softmax",
            "precision": c.train_config.get("precision"),
            "recipe": c.train_config.get("extra", {}).get("recipe", {}).get("summary"),
            "init_from": _started_from(c.train_config.get("extra", {}).get("init_from"), named),
            "level": self.tokenizer.level,
            "vocab_size": len(self.tokenizer),
            "corpus": [describe_file(f) for f in corpus],
            "train_tokens": c.corpus.get("train_tokens"),
            "metrics": c.metrics,
        }


def _started_from(record: dict[str, Any] | None, named: Callable[[str], str]) -> str | None:
    """A fine-tuned run's source, as ``info`` shows it."""
    if not record:
        return None
    added = record.get("added_tokens", 0)
    return f"{named(str(record['source']))} ({record['model']}, {record['vocab_size']:,} tokens, +{added:,})"


def _own_name(path: str) -> str:
    """``/home/me/runs/x/best`` -> ``best``, ``/data/reviews/`` -> ``reviews``; ``builtin:english`` as it is."""
    return Path(path).name or path


def _scores(
    nats: float, tokens: float, scored_chars: float, chars: float, unknown: float, ids: float
) -> dict[str, Any]:
    """Loss figures from summed counts: ``tokens`` scored (their ``scored_chars``) of ``ids`` encoded."""
    nats_per_token = nats / max(tokens, 1)
    return {
        "nats_per_token": nats_per_token,
        "bits_per_char": nats / max(scored_chars, 1e-9) / math.log(2),
        "perplexity": math.exp(min(nats_per_token, 700.0)),
        "tokens": int(tokens),
        "chars": int(chars),
        "unk_rate": unknown / max(ids, 1),
    }
