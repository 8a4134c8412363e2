"""An exported model checked against PyTorch: generation in onnxruntime the way the page does it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from textweaver.config import ModelConfig
from textweaver.export.onnx import empty_state, signature
from textweaver.generation.generator import SLIDE_KEEP
from textweaver.run import checkpoint


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
