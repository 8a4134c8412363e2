"""Incremental text generation from a trained model.

The prompt is read once (one batched forward pass), then each new token costs one step: the
RNN carries its hidden state, the transformer its key/value cache. The context is never
recomputed per token. When a transformer's cache reaches its context length, the cache is
rebuilt from the most recent ``SLIDE_KEEP`` of the context in one forward pass, so every
prediction sees between 3/4 and all of the last ``context`` tokens and the window keeps
moving (unlike a frozen window that repeats itself).
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from textweaver.config import option
from textweaver.data.corpus import detect_encoding
from textweaver.data.tokenizer import Tokenizer
from textweaver.errors import TextweaverError
from textweaver.generation.sampling import SamplingOptions, next_tokens
from textweaver.models import LanguageModel, RNNLanguageModel
from textweaver.models.rnn import INT8_MIN_WIDTH, CellWeights
from textweaver.run.log import write_atomically

SLIDE_KEEP = 0.75
PROMPT_CHUNK = 4096  # tokens an RNN reads per forward pass while it takes in a long prompt
HISTORY_SLACK = 4096  # generated tokens kept beyond the last context before the history buffer is compacted
MAX_TOKENS = 10_000_000  # tokens per request: beyond that, generate in several calls
MAX_SAMPLES = 1024  # samples generated at once (each holds its own state; more would only exhaust memory)


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str | None = option(
        None, "Start text. Default: a random start sentence from the training corpus.", flags=("--prompt", "-p"),
        show_default=False,
    )  # fmt: skip
    length: int = option(
        500, "Tokens to generate: characters for char models; words, spaces and punctuation marks for word models.",
        flags=("--length", "-n"),
    )  # fmt: skip
    num_samples: int = option(1, "Samples generated together as one batch; printed separated by a line of five dashes.")
    seed: int | None = option(None, "Random seed: the same seed and options give the same text.", show_default=False)
    stop: str | None = option(None, "End a sample when this text appears (it is not printed).", show_default=False)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)

    def validate(self) -> None:
        if not 1 <= self.length <= MAX_TOKENS:
            raise TextweaverError(f"--length must be between 1 and {MAX_TOKENS:,}, got {self.length}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise TextweaverError(f"--seed must be between 0 and 2**63 - 1, got {self.seed}")
        for name, text in (("--prompt", self.prompt), ("--stop", self.stop)):
            try:
                (text or "").encode("utf-8")
            except UnicodeEncodeError as e:
                raise TextweaverError(
                    f"{name} is not valid text: undecodable byte or lone surrogate at position {e.start}: "
                    "pass UTF-8 text"
                ) from None
        if not 1 <= self.num_samples <= MAX_SAMPLES:
            raise TextweaverError(f"--num-samples must be between 1 and {MAX_SAMPLES}, got {self.num_samples}")
        if self.stop == "":
            raise TextweaverError("--stop must not be empty: leave it out to generate the full length")
        self.sampling.validate()


class Generator:
    """Holds a model, its tokenizer and the corpus start sentences; makes text on request."""

    def __init__(
        self, model: LanguageModel, tokenizer: Tokenizer, prompts: list[str], device: torch.device, frozen: bool = False
    ) -> None:
        """``frozen``: the model's weights never change (a loaded checkpoint), so an RNN's step weights are
        prepared once; else afresh for every generation (samples during training: an optimizer step is not
        visible to a cache, fused AdamW leaves the parameters' version counters as they were)."""
        self.model, self.tokenizer, self.prompts, self.device = model, tokenizer, prompts, device
        self.frozen = frozen
        self.is_transformer = model.config.kind == "transformer"
        # a wide RNN on the CPU steps with int8 cell weights (models/rnn.py); set False for exact float32
        self.int8 = not self.is_transformer and device.type == "cpu" and model.config.n_embd >= INT8_MIN_WIDTH
        self._weights: tuple[bool, CellWeights] | None = None  # (int8, weights) of a frozen model

    def random_prompt(self, seed: int | None = None) -> str:
        if not self.prompts:
            return "\n" if "\n" in self.tokenizer.index else self.tokenizer.vocab[min(1, len(self.tokenizer) - 1)]
        return random.Random(seed).choice(self.prompts)

    def prompt_ids(self, prompt: str, warn: bool = True) -> torch.Tensor:
        unknown = self.tokenizer.unknown(prompt)
        if unknown and warn:
            shown = ", ".join(repr(t) for t in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
            print(f"textweaver: warning: prompt has {len(unknown)} unknown token(s), read as <unk>: {shown}",
                  file=sys.stderr)  # fmt: skip
        ids = self.tokenizer.encode(prompt)
        if len(ids) == 0:
            raise TextweaverError("the prompt is empty after normalisation: give some text, or no --prompt")
        return torch.from_numpy(ids)

    def stream(self, request: GenerationRequest, warn: bool = True) -> Iterator[list[str]]:
        """Yield, per step, the new text of every sample (``""`` once a sample has stopped).

        The first yield is the prompt itself (the same for every sample).
        """
        request.validate()
        prompt = request.prompt or self.random_prompt(request.seed)
        ids = self.prompt_ids(prompt, warn)
        yield [prompt] * request.num_samples
        gen = torch.Generator(device=self.device)
        gen.manual_seed(request.seed if request.seed is not None else random.SystemRandom().randrange(2**63))
        stoppers = [_StopWatch(request.stop) for _ in range(request.num_samples)]
        decoders = [self.tokenizer.piece_decoder() for _ in range(request.num_samples)]  # bpe: whole characters only
        for tokens in self._token_steps(ids, request, gen):
            pieces = []
            for s, decode, tok in zip(stoppers, decoders, tokens, strict=True):
                pieces.append(s.feed(decode(tok)))
            yield pieces
            if all(s.done for s in stoppers):
                return
        tails = [s.flush() for s in stoppers]
        if any(tails):
            yield tails

    def generate(self, request: GenerationRequest, warn: bool = True) -> list[str]:
        """Full texts (prompt + continuation), one per sample."""
        return join_samples(self.stream(request, warn), request.num_samples)

    @torch.inference_mode()
    def _token_steps(
        self, prompt_ids: torch.Tensor, request: GenerationRequest, gen: torch.Generator
    ) -> Iterator[list[int]]:
        model, B, n = self.model, request.num_samples, request.length
        model.eval()
        context = model.config.context
        keep = max(1, int(context * SLIDE_KEEP))
        window = request.sampling.repetition_window if request.sampling.repetition_penalty != 1.0 else 0
        logits, state, cached = self._read_prompt(prompt_ids.to(self.device), B)
        rnn = model if isinstance(model, RNNLanguageModel) else None
        if rnn is not None:  # cells updated in place, weights taken once
            cells, weights = [list(t.unbind(0)) for t in state], self._cell_weights(rnn)
        if rnn is not None and not window:  # the common case, in the fewest operations per token
            for _ in range(n):
                token = next_tokens(logits, request.sampling, gen)
                yield token.tolist()
                logits = rnn.step_cells(token, cells, weights)
            return
        # only the last `span` tokens can matter from here on (the transformer's window, the repetition
        # window), so the history is a buffer of span + HISTORY_SLACK that moves its tail to the front when full
        span = max(context, window, 1)
        history = torch.empty(B, span + HISTORY_SLACK, dtype=torch.long, device=self.device)
        tail = prompt_ids[-span:]
        history[:, : len(tail)] = tail.to(self.device)
        filled = len(tail)
        for _ in range(n):
            if filled == history.shape[1]:
                history[:, :span] = history[:, filled - span : filled].clone()
                filled = span
            recent = history[:, max(0, filled - window) : filled] if window else None
            token = next_tokens(logits, request.sampling, gen, recent)  # (B,)
            history[:, filled] = token
            filled += 1
            yield token.tolist()
            if rnn is not None:
                logits = rnn.step_cells(token, cells, weights)
            elif cached + 1 > context:
                logits, state = model(history[:, filled - keep : filled])
                logits, cached = logits[:, -1], keep
            else:
                logits, state = model.step(token, state)
                cached += 1

    def _cell_weights(self, rnn: RNNLanguageModel) -> CellWeights:
        """The step weights: prepared once for a frozen model (int8 packing costs ~10-40 ms), else per generation."""
        if not self.frozen:
            return rnn.cell_weights(int8=self.int8)
        if self._weights is None or self._weights[0] != self.int8:
            self._weights = (self.int8, rnn.cell_weights(int8=self.int8))
        return self._weights[1]

    def _read_prompt(self, ids: torch.Tensor, batch: int) -> tuple[torch.Tensor, Any, int]:
        """Logits ``(batch, V)`` after the prompt, the model state, and how many positions it caches.

        The prompt is read once for all samples (they share it) and then copied per sample, so a
        long prompt costs neither ``batch`` times the work nor ``batch`` times the memory. An RNN
        reads it in chunks (memory bounded however long the prompt); a transformer sees its last
        ``context`` tokens.
        """
        if self.is_transformer:
            window = ids[-self.model.config.context :]
            logits, cache = self.model(window[None])
            state: Any = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in cache]
            cached = len(window)
        else:
            rnn_state = None
            for chunk in ids.split(PROMPT_CHUNK):
                logits, rnn_state = self.model(chunk[None], rnn_state)
            assert rnn_state is not None
            state = tuple(t.expand(-1, batch, -1).contiguous() for t in rnn_state)
            cached = len(ids)
        return logits[:, -1].expand(batch, -1), state, cached


def join_samples(steps: Iterable[list[str]], num_samples: int) -> list[str]:
    """The full text of every sample from :meth:`Generator.stream`'s per-step pieces."""
    parts: list[list[str]] = [[] for _ in range(num_samples)]
    for pieces in steps:
        for part, piece in zip(parts, pieces, strict=True):
            part.append(piece)
    return ["".join(part) for part in parts]


class _StopWatch:
    """Cuts a sample's text at the stop string, holding back text that may be its beginning."""

    def __init__(self, stop: str | None) -> None:
        self.stop, self.pending, self.done = stop, "", False

    def feed(self, piece: str) -> str:
        if self.done:
            return ""
        if self.stop is None:
            return piece
        self.pending += piece
        at = self.pending.find(self.stop)
        if at >= 0:
            self.done = True
            out, self.pending = self.pending[:at], ""
            return out
        hold = next((k for k in range(min(len(self.stop) - 1, len(self.pending)), 0, -1)
                     if self.stop.startswith(self.pending[-k:])), 0)  # fmt: skip
        out = self.pending[: len(self.pending) - hold]
        self.pending = self.pending[len(out) :]
        return out

    def flush(self) -> str:
        out, self.pending = ("" if self.done else self.pending), ""
        return out


def describe(request: GenerationRequest) -> dict[str, Any]:
    s = request.sampling
    return {
        "length": request.length, "num_samples": request.num_samples, "seed": request.seed,
        "temperature": s.temperature, "top_k": s.top_k, "top_p": s.top_p,
        "repetition_penalty": s.repetition_penalty, "stop": request.stop,
    }  # fmt: skip


# ---- the CLI's prompt and output files -----------------------------------------------------------


def read_prompt_file(path: Path) -> str:
    """The start text stored in ``path``: strict UTF-8, as stored (only a byte-order mark is dropped,
    as corpus files lose theirs; a final newline stays part of the prompt)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TextweaverError(f"--prompt-file {path}: no such file: check the path") from None
    except IsADirectoryError:
        raise TextweaverError(f"--prompt-file {path}: is a folder: name a text file") from None
    except OSError as e:
        raise TextweaverError(f"--prompt-file {path}: cannot read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        guess = detect_encoding(path, e.start)
        advice = (
            f"it looks like {guess}: convert it to UTF-8 (iconv -f {guess} -t utf-8 {path} > prompt-utf8.txt)"
            if guess and guess != "utf-8"
            else "save it as UTF-8"
        )
        raise TextweaverError(f"--prompt-file {path}: invalid utf-8 at byte offset {e.start}: {advice}") from None
    if not text:
        raise TextweaverError(
            f"--prompt-file {path}: empty: write the start text into it, or leave the option out for a random "
            "corpus sentence"
        )
    return text


def check_output(path: Path) -> None:
    """Refuse an --output that cannot be written before any time is spent generating."""
    if path.is_dir():
        raise TextweaverError(f"--output {path}: is a folder: name a file in it, e.g. {path / 'sample.txt'}")
    if not path.parent.is_dir():
        raise TextweaverError(f"--output {path}: the folder {path.parent} does not exist: create it or choose another")


def write_output(path: Path, text: str) -> None:
    """``--output``: the whole text or nothing (an older file stays as it was)."""
    try:
        write_atomically(path, text.encode("utf-8"))
    except OSError as e:
        raise TextweaverError(f"--output {path}: cannot write ({e.strerror or e}): nothing was written") from None
