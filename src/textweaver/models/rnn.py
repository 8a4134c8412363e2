"""The classic char-rnn model: embedding -> stacked LSTM or GRU (dropout between) -> linear head.

Memory: parameters ~ 4 (LSTM) or 3 (GRU) x layers x 2 x width^2, plus 2 x vocab x width
(1 x with tied weights). Training activations ~ batch x context x width x layers x 6 floats.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from textweaver.config import ModelConfig
from textweaver.models.heads import AdaptiveHead

RNNState = tuple[torch.Tensor, ...]

# Generation stores the cell matrices of an RNN this wide or wider in int8 (weight-only, one scale per
# row; the input vector in bfloat16): a step reads 4x fewer bytes, and one stream of a 2x512 LSTM is
# memory-bound (bench/results/generation_bases.md). Narrower models keep exact float32 steps.
INT8_MIN_WIDTH = 384
# the first layer's input gates are precomputed per token (V x gates) when that table stays this small
GATE_TABLE_MAX_BYTES = 16 * 2**20
# fbgemm's input quantized to 7 bits: exact on CPUs without VNNI, whose 8-bit products can saturate
REDUCE_RANGE = True


class Int8Matrix(NamedTuple):
    """A (N, K) matrix as int8 rows and one scale per row: W ~ weight * scales[:, None]."""

    weight: torch.Tensor  # (N, K) int8
    scales: torch.Tensor  # (N,) bfloat16
    packed: Any = None  # the same rows packed for fbgemm's dynamic-int8 product, where this torch has it

    @classmethod
    def of(cls, w: torch.Tensor) -> Int8Matrix:
        scales = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)  # (N,)
        weight = torch.round(w / scales[:, None]).to(torch.int8)
        return cls(weight, scales.to(torch.bfloat16), _fbgemm_pack(weight, scales))


def _fbgemm_pack(weight: torch.Tensor, scales: torch.Tensor) -> Any:
    """``weight`` (int8 rows, ``scales`` per row) packed for ``torch.ops.quantized.linear_dynamic``, which
    quantizes the input vector too and multiplies in int8: the product alone ~3x ``_weight_int8pack_mm``'s for
    one row on an AVX-512 CPU, generation 1.1x (one stream) to 3.4x (64) faster (bench/results/
    generation_bases.md). None where this torch has no fbgemm (or has dropped quantized tensors, which 2.13
    deprecates): the weight-only product serves then."""
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "quantized tensor creation functions are deprecated"
            zeros = torch.zeros(len(scales), dtype=torch.long)
            q = torch._make_per_channel_quantized_tensor(weight, scales.double(), zeros, 0)
            return torch.ops.quantized.linear_prepack(q, None)
    except (AttributeError, RuntimeError):
        return None


Matrix = torch.Tensor | Int8Matrix


class CellWeights(NamedTuple):
    """What :meth:`RNNLanguageModel.step_cells` runs with, taken once per generation.

    LSTM layers are ``(w, b)``: ``w = [w_ih | w_hh]`` (G, C_in + C) read with ``[x, h]`` in one product,
    ``b = b_ih + b_hh`` (the first layer with a gate table: ``w_hh`` read with ``h`` alone, no bias).
    GRU layers keep ``(w_ih, w_hh, b_ih, b_hh)``: the reset gate scales the hidden part alone.
    """

    table: torch.Tensor  # the embedding (V, C), or with gate_table the first layer's input gates (V, G), biases in
    gate_table: bool
    layers: list[tuple[Matrix, ...]]


def _times(x: torch.Tensor, w: Matrix, b: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ w.T + b`` in float32 (B, N); an int8 matrix quantizes ``x`` to int8 (fbgemm) or reads it in bfloat16."""
    if isinstance(w, Int8Matrix) and w.packed is not None:
        out = torch.ops.quantized.linear_dynamic(x, w.packed, REDUCE_RANGE)  # (B, N) float32
        return out if b is None else out + b
    if isinstance(w, Int8Matrix):
        out = torch._weight_int8pack_mm(x.to(torch.bfloat16), w.weight, w.scales)  # (B, N) bfloat16
        return out.float() if b is None else b + out  # the sum promotes to float32
    return F.linear(x, w, b)


class RNNLanguageModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.n_embd)
        rnn = nn.LSTM if c.kind == "lstm" else nn.GRU
        self.rnn = rnn(
            c.n_embd, c.n_embd, num_layers=c.n_layer, batch_first=True,
            dropout=c.dropout if c.n_layer > 1 else 0.0,
        )  # fmt: skip
        self.drop = nn.Dropout(c.dropout)
        self.head: nn.Linear | AdaptiveHead
        if c.cutoffs:  # a large vocabulary: adaptive softmax, untied
            self.head = AdaptiveHead(c.n_embd, c.vocab_size, c.cutoffs)
        else:
            self.head = nn.Linear(c.n_embd, c.vocab_size)
            if c.tie_weights:
                self.head.weight = self.embed.weight
        nn.init.normal_(self.embed.weight, std=0.1)

    def forward(
        self, idx: torch.Tensor, state: RNNState | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, RNNState]:
        """Logits ``(B, T, V)`` (log-probabilities with an adaptive head) and the new state; with
        ``targets`` ``(B, T)`` the mean cross-entropy instead of the logits."""
        x = self.drop(self.embed(idx))  # (B, T, C)
        packed = None if state is None else (state if self.config.kind == "lstm" else state[0])
        y, new = self.rnn(x, packed)  # (B, T, C)
        y = self.drop(y)
        new_state = tuple(new) if isinstance(new, tuple) else (new,)
        if targets is not None and isinstance(self.head, AdaptiveHead):
            return self.head.loss(y.reshape(-1, y.shape[-1]), targets.reshape(-1)), new_state
        logits = self.output(y)  # (B, T, V)
        if targets is not None:
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1)), new_state
        return logits, new_state

    def output(self, y: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(..., C)`` -> logits ``(..., V)``."""
        if isinstance(self.head, AdaptiveHead):
            return self.head.log_prob(y)
        return F.linear(y, self.head.weight, self.head.bias)

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: RNNState | None) -> tuple[torch.Tensor, RNNState]:
        """Logits ``(B, V)`` for the next token after ``token`` ``(B,)``; O(1) per token."""
        logits, new_state = self(token[:, None], state)  # (B, 1, V): one token of the forward pass
        return logits[:, 0], new_state

    def step_cells(self, token: torch.Tensor, cells: list[list[torch.Tensor]], weights: CellWeights) -> torch.Tensor:
        """:meth:`step` for generation loops: ``cells`` is ``[h per layer]`` (GRU) or ``[h per layer,
        c per layer]`` (LSTM), updated in place; ``weights`` come from :meth:`cell_weights`, taken
        once per generation. No stacking, no module-call or autograd overhead (call it under
        ``torch.inference_mode()``).

        Runs the layers as single cells: for one time step this is ~15x faster on the CPU than
        ``nn.LSTM``, whose oneDNN kernel has a large fixed cost per call (it wins for training).
        """
        hs, table = cells[0], weights.gate_table
        x = weights.table.index_select(0, token)  # (B, C), or the first layer's input gates (B, G)
        if self.config.kind == "lstm":
            cs, width = cells[1], self.config.n_embd
            for layer, (w, *b) in enumerate(weights.layers):
                if layer == 0 and table:
                    gates = x + _times(hs[0], w)  # (B, 4C)
                else:
                    gates = _times(torch.cat([x, hs[layer]], dim=1), w, b[0])  # type: ignore[arg-type]
                i, f, _, o = torch.sigmoid(gates).chunk(4, dim=1)
                c = cs[layer] = torch.addcmul(f * cs[layer], i, gates[:, 2 * width : 3 * width].tanh())
                x = hs[layer] = o * c.tanh()
        else:
            for layer, (w_ih, w_hh, b_ih, b_hh) in enumerate(weights.layers):
                gi = x if layer == 0 and table else _times(x, w_ih, b_ih)  # type: ignore[arg-type]  # (B, 3C)
                i_r, i_z, i_n = gi.chunk(3, dim=1)
                h_r, h_z, h_n = _times(hs[layer], w_hh, b_hh).chunk(3, dim=1)  # type: ignore[arg-type]
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                x = hs[layer] = n + z * (hs[layer] - n)  # (1 - z) * n + z * h
        return self.output(x)

    @torch.no_grad()
    def cell_weights(self, int8: bool = False) -> CellWeights:
        """The weights :meth:`step_cells` runs with; take them afresh whenever the model may have changed.

        The first layer's input gates depend on the token alone, so with a small enough vocabulary they are
        one precomputed row per token (``embed @ w_ih.T + b_ih``: a lookup instead of a matrix product).
        With ``int8`` the remaining cell matrices are stored in int8 (:class:`Int8Matrix`).
        """
        layers = [tuple(w) for w in self.rnn.all_weights]  # w_ih, w_hh, b_ih, b_hh per layer
        w_ih, w_hh, b_ih, b_hh = layers[0]
        lstm, vocab, gates = self.config.kind == "lstm", self.config.vocab_size, w_ih.shape[0]
        gate_table = vocab * gates * w_ih.element_size() <= GATE_TABLE_MAX_BYTES
        if gate_table:  # (V, G); an LSTM's hidden bias joins it (a GRU's stays with h, under the reset gate)
            table = torch.addmm(b_ih + b_hh if lstm else b_ih, self.embed.weight, w_ih.T)
        else:
            table = self.embed.weight  # (V, C)
        quantize: Callable[[torch.Tensor], Matrix] = Int8Matrix.of if int8 else (lambda w: w)
        if not lstm:
            return CellWeights(table, gate_table, [(quantize(a), quantize(b), c, d) for a, b, c, d in layers])
        joined: list[tuple[Matrix, ...]] = [(quantize(torch.cat([a, b], dim=1)), c + d) for a, b, c, d in layers]
        if gate_table:
            joined[0] = (quantize(w_hh),)
        return CellWeights(table, gate_table, joined)
