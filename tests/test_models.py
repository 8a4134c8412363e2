"""Models: incremental steps equal the full forward pass, and each model learns real text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from textweaver import load
from textweaver.config import ModelConfig
from textweaver.data.vocab import VocabCounter
from textweaver.errors import TextweaverError
from textweaver.models import build_model, detach_state, num_parameters, set_unigram_prior
from textweaver.models.rnn import GATE_TABLE_MAX_BYTES, Int8Matrix

from conftest import SHAKESPEARE, XIYOUJI

KINDS = ["lstm", "gru", "transformer"]


def small(kind: str, vocab: int = 50, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = ModelConfig(kind=kind, vocab_size=vocab, n_layer=2, n_embd=32, n_head=4, context=48, **kw)  # type: ignore[arg-type]
    return build_model(cfg).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_step_by_step_logits_equal_the_full_forward_pass(kind: str) -> None:
    model = small(kind)
    x = torch.randint(0, 50, (3, 40))
    full, _ = model(x)
    state, steps = None, []
    for t in range(x.shape[1]):
        logits, state = model.step(x[:, t], state)
        steps.append(logits)
    assert torch.allclose(torch.stack(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("table_bytes", [GATE_TABLE_MAX_BYTES, 0])
def test_generation_steps_equal_the_full_forward_pass(
    kind: str, table_bytes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The generator's path: per-layer cells updated in place; the first layer's input gates looked up
    per token when the table is small enough, computed otherwise."""
    monkeypatch.setattr("textweaver.models.rnn.GATE_TABLE_MAX_BYTES", table_bytes)
    model = small(kind)
    x = torch.randint(0, 50, (3, 40))
    full, _ = model(x)
    weights = model.cell_weights()
    gates = 32 * (4 if kind == "lstm" else 3)
    assert weights.table.shape == ((50, gates) if table_bytes else (50, 32)) and weights.gate_table == bool(table_bytes)
    cells = [list(torch.zeros(2, 3, 32).unbind(0)) for _ in range(2 if kind == "lstm" else 1)]
    with torch.inference_mode():
        steps = [model.step_cells(x[:, t], cells, weights) for t in range(x.shape[1])]
    assert torch.allclose(torch.stack(steps, dim=1), full, atol=1e-5)


@pytest.mark.parametrize("name", ["builtin:english", "builtin:chinese"])
def test_int8_generation_steps_predict_real_text_as_well_as_float32(name: str) -> None:
    """The bases are wide enough for int8 cell weights at generation: on text the base never saw,
    the step-by-step loss stays within 0.5% of the float32 forward pass."""
    model = load(name)
    generator = model.generator
    assert generator.int8  # 2x512: wide enough
    net = generator.model
    text = (SHAKESPEARE if name.endswith("english") else XIYOUJI).read_text(encoding="utf-8")[:1500]
    ids = torch.tensor(model.tokenizer.encode(text))[None]  # (1, T)
    with torch.inference_mode():
        full, _ = net(ids[:, :-1])
        exact = F.cross_entropy(full[0].float(), ids[0, 1:]).item()  # log-softmax of log-probs: the same
        weights = net.cell_weights(int8=True)
        assert all(isinstance(layer[0], Int8Matrix) for layer in weights.layers)
        cells = [list(torch.zeros(2, 1, 512).unbind(0)) for _ in range(2)]
        steps = torch.cat([net.step_cells(ids[:, t], cells, weights) for t in range(ids.shape[1] - 1)])
        int8 = F.cross_entropy(steps.float(), ids[0, 1:]).item()
    assert abs(int8 - exact) < 0.005 * exact, (int8, exact)


@pytest.mark.parametrize("kind", KINDS)
def test_prefill_then_continue_equals_the_full_forward_pass(kind: str) -> None:
    model = small(kind)
    x = torch.randint(0, 50, (2, 30))
    full, _ = model(x)
    first, state = model(x[:, :11])
    second, _ = model(x[:, 11:], state)
    assert torch.allclose(torch.cat([first, second], dim=1), full, atol=1e-5)


@pytest.mark.parametrize("positional", ["rotary", "learned"])
def test_transformer_kv_cache_matches_for_both_position_kinds(positional: str) -> None:
    model = small("transformer", positional=positional)
    x = torch.randint(0, 50, (1, 48))
    full, _ = model(x)
    state = None
    for t in range(48):
        logits, state = model.step(x[:, t], state)
    assert torch.allclose(logits, full[:, -1], atol=1e-5)


def test_transformer_refuses_positions_beyond_its_context() -> None:
    model = small("transformer")
    with pytest.raises(ValueError, match="exceed the context"):
        model(torch.zeros(1, 49, dtype=torch.long))


def test_tied_weights_share_one_matrix_and_count_once() -> None:
    tied, untied = small("transformer"), small("transformer", tie_weights=False)
    assert tied.head.weight is tied.wte.weight
    assert num_parameters(untied) - num_parameters(tied) == 50 * 32


def test_detach_state_cuts_the_graph_but_keeps_values() -> None:
    model = small("lstm").train()
    _, state = model(torch.randint(0, 50, (2, 5)))
    assert all(s.requires_grad for s in state)
    detached = detach_state(state)
    assert not any(s.requires_grad for s in detached)
    assert all(torch.equal(a, b) for a, b in zip(state, detached, strict=True))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"kind": "cnn"}, "unknown model"),
        ({"kind": "transformer", "n_embd": 30, "n_head": 4}, "not divisible"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_invalid_configs_are_refused_with_a_reason(changes: dict[str, object], message: str) -> None:
    cfg = ModelConfig(vocab_size=10, **changes)  # type: ignore[arg-type]
    with pytest.raises(TextweaverError, match=message):
        build_model(cfg)


def _ids(path: Path, chars: int) -> tuple[torch.Tensor, int]:
    text = path.read_text(encoding="utf-8")[:chars]
    counter = VocabCounter("char")
    counter.update(text)
    tok = counter.build()
    return torch.from_numpy(tok.encode(text)), len(tok)


@pytest.mark.parametrize(
    ("kind", "corpus"),
    [("lstm", SHAKESPEARE), ("gru", SHAKESPEARE), ("transformer", SHAKESPEARE), ("transformer", XIYOUJI)],
)
def test_each_model_overfits_a_small_real_text(kind: str, corpus: Path) -> None:
    """200 full-batch steps on 1,500 characters memorise them: the loss falls from ln(vocab)
    (~3.9 nats for the Shakespeare excerpt, ~6.2 for the Chinese one) to under 0.5."""
    ids, vocab = _ids(corpus, 1500)
    torch.manual_seed(0)
    model = build_model(ModelConfig(kind=kind, vocab_size=vocab, n_layer=2, n_embd=64, n_head=4, context=32)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3 if kind == "transformer" else 1e-2)
    windows = ids[: (len(ids) - 1) // 32 * 32 + 1]
    x, y = windows[:-1].view(-1, 32), windows[1:].view(-1, 32)
    for _ in range(200):
        logits, _ = model(x)
        loss = F.cross_entropy(logits.view(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5


@settings(max_examples=30, deadline=None)
@given(vocab=st.integers(8, 400), data=st.data())
def test_adaptive_softmax_log_probabilities_sum_to_one_and_give_the_training_loss(
    vocab: int, data: st.DataObject
) -> None:
    n_cuts = data.draw(st.integers(1, min(3, vocab - 1)))
    cutoffs = sorted(data.draw(st.sets(st.integers(1, vocab - 1), min_size=n_cuts, max_size=n_cuts)))
    model = small("lstm", vocab=vocab, cutoffs=cutoffs)
    x = torch.randint(0, vocab, (2, 12))
    y = torch.randint(0, vocab, (2, 12))
    log_p, _ = model(x)  # (B, T, V)
    assert log_p.shape == (2, 12, vocab)
    assert torch.allclose(torch.logsumexp(log_p, dim=-1), torch.zeros(2, 12), atol=1e-5)
    loss, _ = model(x, None, y)  # the training path computes each cluster only where needed
    assert loss.item() == pytest.approx(F.cross_entropy(log_p.reshape(-1, vocab), y.reshape(-1)).item(), abs=1e-5)


def test_adaptive_softmax_steps_equal_the_full_forward_pass_and_are_cheaper() -> None:
    model = small("lstm", vocab=4000, cutoffs=[500, 1000])
    full = small("lstm", vocab=4000)
    x = torch.randint(0, 4000, (3, 20))
    logits, _ = model(x)
    state, steps = None, []
    for t in range(20):
        step_logits, state = model.step(x[:, t], state)
        steps.append(step_logits)
    assert torch.allclose(torch.stack(steps, 1), logits, atol=1e-5)
    # the frequent tokens' softmax is 502 columns wide instead of 4,000; the rare ones sit on narrow tails
    assert model.head.head.weight.shape == (502, 32)
    assert sum(p.numel() for p in model.head.parameters()) < 0.5 * full.head.weight.numel()


def test_the_unigram_prior_makes_a_fresh_adaptive_model_predict_the_frequencies() -> None:
    model = small("lstm", vocab=300, cutoffs=[40, 100])
    counts = np.random.default_rng(0).zipf(1.5, 300).astype(np.int64)
    set_unigram_prior(model, counts)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("bias"):
                p.zero_()  # only the biases speak: the distribution is the prior itself
    log_p, _ = model(torch.zeros(1, 1, dtype=torch.long))
    expected = np.log((counts + 1) / (counts + 1).sum())
    assert np.allclose(log_p[0, 0].detach().numpy(), expected, atol=1e-4)


def test_adaptive_softmax_is_refused_for_the_transformer_and_for_bad_cutoffs() -> None:
    for kind, cutoffs in (("transformer", [10]), ("lstm", [30, 20]), ("lstm", [50]), ("lstm", [0])):
        with pytest.raises(TextweaverError, match="cutoffs"):
            ModelConfig(kind=kind, vocab_size=50, cutoffs=cutoffs).validate()
