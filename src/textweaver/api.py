"""The Python API: ``train(...)`` a model, ``load(run_dir)`` it, ``generate`` text."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from textweaver import checkpoint
from textweaver.config import TrainConfig, parse_duration
from textweaver.corpus import CorpusOptions, resolve_paths
from textweaver.dataset import encode_file
from textweaver.device import select_device
from textweaver.errors import TextweaverError
from textweaver.evaluate import score
from textweaver.generate import GenerationRequest, Generator
from textweaver.models import num_parameters
from textweaver.sampling import SamplingOptions
from textweaver.train import TrainResult
from textweaver.train import train as _train


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
    ``max_steps=500`` ...); durations accept seconds or strings such as ``"5m"``.
    """
    corpus_list = [corpus] if isinstance(corpus, str | Path) else list(corpus)
    for name in ("max_time", "checkpoint_every"):
        if isinstance(options.get(name), str):
            options[name] = parse_duration(options[name], "--" + name.replace("_", "-"))
    try:
        config = TrainConfig(**options)
    except TypeError as e:
        raise TextweaverError(f"unknown training option: {e}") from None
    return _train(corpus_list, out, config, resume=resume, progress=progress)


def load(run_dir: str | Path, device: str = "cpu") -> TextModel:
    """A trained model from a run directory (its ``best/``, else ``last/``) or a checkpoint folder."""
    return TextModel(checkpoint.load(run_dir), select_device(device))


class TextModel:
    def __init__(self, ckpt: checkpoint.Checkpoint, device: torch.device) -> None:
        self.checkpoint = ckpt
        self.device = device
        self.model = ckpt.build_model(device)
        self.tokenizer = ckpt.tokenizer
        self.generator = Generator(self.model, self.tokenizer, ckpt.prompts, device)

    def random_prompt(self, seed: int | None = None) -> str:
        """A start sentence drawn from the training corpus."""
        return self.generator.random_prompt(seed)

    def request(
        self,
        prompt: str | None = None,
        length: int = 500,
        temperature: float = 0.8,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float = 1.0,
        num_samples: int = 1,
        seed: int | None = None,
        stop: str | None = None,
    ) -> GenerationRequest:
        sampling = SamplingOptions(temperature, top_k, top_p, repetition_penalty)
        request = GenerationRequest(prompt, length, num_samples, seed, stop, sampling)
        request.validate()
        return request

    def generate(self, prompt: str | None = None, length: int = 500, **options: Any) -> str:
        """Prompt plus ``length`` generated tokens (characters for char models)."""
        return self.generator.generate(self.request(prompt, length, **options))[0]

    def generate_many(
        self, prompt: str | None = None, length: int = 500, num_samples: int = 4, **options: Any
    ) -> list[str]:
        """``num_samples`` continuations generated together as one batch."""
        return self.generator.generate(self.request(prompt, length, num_samples=num_samples, **options))

    def stream(self, prompt: str | None = None, length: int = 500, **options: Any) -> Iterator[str]:
        """The prompt, then the new text piece by piece as it is sampled."""
        for pieces in self.generator.stream(self.request(prompt, length, **options)):
            if pieces[0]:
                yield pieces[0]

    def evaluate(self, path: str | Path, batch_size: int = 32) -> dict[str, float | int]:
        """Loss of the model on a text file: nats/token, bits/char, perplexity, unknown-token rate."""
        files = resolve_paths([path])
        train_cfg = self.checkpoint.train_config
        options = CorpusOptions(encoding=train_cfg.get("encoding", "utf-8"), errors=train_cfg.get("errors", "strict"))
        ids, chars = encode_file(files[0], self.tokenizer, options)
        if len(ids) < 2:
            raise TextweaverError(f"{path}: too short to evaluate (needs at least 2 tokens)")
        result = score(self.model, ids, batch_size, None, self.device)
        scored_chars = chars * result.tokens / len(ids)
        return {
            "nats_per_token": result.nats_per_token,
            "bits_per_char": result.nats / max(scored_chars, 1e-9) / math.log(2),
            "perplexity": math.exp(min(result.nats_per_token, 700.0)),
            "tokens": int(result.tokens),
            "chars": int(chars),
            "unk_rate": float((ids == 0).mean()),
        }

    def info(self) -> dict[str, Any]:
        c = self.checkpoint
        return {
            "checkpoint": str(c.directory),
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
            "level": self.tokenizer.level,
            "vocab_size": len(self.tokenizer),
            "corpus": [f.get("path") for f in c.corpus.get("files", [])],
            "train_tokens": c.corpus.get("train_tokens"),
            "metrics": c.metrics,
        }
