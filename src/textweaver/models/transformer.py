"""A decoder-only transformer: pre-LayerNorm blocks, causal scaled-dot-product attention,
rotary or learned positions, tied embedding/head, and a key/value cache for generation.

Memory: parameters ~ 12 x layers x width^2 + vocab x width (+ context x width if learned
positions). Training activations ~ batch x context x width x layers x ~16 floats plus
batch x heads x context^2 per layer when SDPA falls back to the math kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from textweaver.config import ModelConfig

Pair = tuple[torch.Tensor, torch.Tensor]  # rotary (cos, sin) tables, or one layer's (keys, values)
KVCache = list[Pair]  # per layer: keys, values (B, H, L, D)


def rotary_tables(context: int, head_dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float32), inv_freq)  # (T, D/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (B, H, T, D) by position; cos/sin are (T, D/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.dropout = c.n_head, c.dropout
        self.qkv = nn.Linear(c.n_embd, 3 * c.n_embd)
        self.proj = nn.Linear(c.n_embd, c.n_embd)
        self.resid_drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, rotary: Pair | None, past: Pair | None) -> tuple[torch.Tensor, Pair]:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        past_len = 0
        if past is not None:
            past_len = past[0].shape[2]
            k = torch.cat((past[0], k), dim=2)  # (B, H, L, D)
            v = torch.cat((past[1], v), dim=2)
        mask = None
        if past_len and T > 1:  # queries at past_len..past_len+T-1 see keys up to themselves
            mask = torch.ones(T, past_len + T, dtype=torch.bool, device=x.device).tril(diagonal=past_len)
        causal = bool(past_len == 0 and T > 1)  # bool(): sizes are tensors while tracing for ONNX export
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y)), (k, v)


class Block(nn.Module):
    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(c.n_embd)
        self.attn = CausalSelfAttention(c)
        self.ln2 = nn.LayerNorm(c.n_embd)
        self.mlp = nn.Sequential(
            nn.Linear(c.n_embd, 4 * c.n_embd), nn.GELU(), nn.Linear(4 * c.n_embd, c.n_embd), nn.Dropout(c.dropout)
        )

    def forward(self, x: torch.Tensor, rotary: Pair | None, past: Pair | None) -> tuple[torch.Tensor, Pair]:
        a, kv = self.attn(self.ln1(x), rotary, past)
        x = x + a
        return x + self.mlp(self.ln2(x)), kv


class TransformerLanguageModel(nn.Module):
    rot_cos: torch.Tensor  # (context, head_dim / 2) rotary tables, buffers
    rot_sin: torch.Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.context, c.n_embd) if c.positional == "learned" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_weights:
            self.head.weight = self.wte.weight
        cos, sin = rotary_tables(c.context, c.n_embd // c.n_head)
        self.register_buffer("rot_cos", cos, persistent=False)
        self.register_buffer("rot_sin", sin, persistent=False)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * c.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: torch.Tensor, state: KVCache | None = None, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, KVCache]:
        """Logits ``(B, T, V)`` and the key/value cache; with ``targets`` ``(B, T)`` the mean
        cross-entropy instead of the logits."""
        T = idx.shape[1]
        past_len = state[0][0].shape[2] if state else 0
        if past_len + T > self.config.context:
            raise ValueError(f"{past_len + T} positions exceed the context of {self.config.context}")
        x = self.wte(idx)  # (B, T, C)
        rotary = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(past_len, past_len + T, device=idx.device))
        else:
            rotary = (self.rot_cos[past_len : past_len + T], self.rot_sin[past_len : past_len + T])
        x = self.drop(x)
        cache: KVCache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, rotary, state[i] if state else None)
            cache.append(kv)
        logits = self.head(self.ln_f(x))  # (B, T, V)
        if targets is not None:
            return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1)), cache
        return logits, cache

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: KVCache | None) -> tuple[torch.Tensor, KVCache]:
        """Logits ``(B, V)`` for the next token after ``token`` ``(B,)``, attending to the cache."""
        logits, state = self(token[:, None], state)
        return logits[:, -1], state
