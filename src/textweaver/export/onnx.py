"""A trained model as ONNX: one generation step, and its weights stored smaller (quantize).

The ONNX graph is one generation step, so any runtime can generate incrementally (batch and P are
dynamic):

- LSTM: ``tokens`` (B, 1) int64, ``h``, ``c`` (layers, B, width) -> ``logits`` (B, V), ``h_out``, ``c_out``
- GRU: the same without ``c`` / ``c_out``
- transformer: ``tokens`` (B, 1), ``past_kv`` (layers, 2, B, heads, P, head_dim) -> ``logits`` (B, V),
  ``present_kv`` (layers, 2, B, heads, P + 1, head_dim)

Start from zeros (RNN) or an empty cache (P = 0) and feed each output state back. A transformer's
P + 1 may not exceed its context: when the cache is full, rebuild it from the last 3/4 of the
context by stepping through those tokens from an empty cache (``generation/generator.py`` does the same in one
batched pass). :class:`export.check.OnnxStepper` is that loop in Python; ``web/worker.js`` is the same in
JavaScript. ``export/site.py`` writes the model with the page around it.

``--quantize`` stores the large weight matrices as int8 (one scale per row) or float16; a Cast
(and Mul) node restores float32 when the model loads, so the signature and the math stay float32.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from textweaver import __version__
from textweaver.config import ModelConfig
from textweaver.models import LanguageModel, num_parameters
from textweaver.run import checkpoint

QUANTIZE = ("int8", "fp16")
OPSET = 17
QUANTIZE_MIN_ELEMENTS = 4096  # smaller tensors (biases, norms, rotary tables) stay float32


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
