"""Specification of textweaver.models.rnn: the generator's per-layer cell steps, in float32 and in int8."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from textweaver import load
from textweaver.models.rnn import GATE_TABLE_MAX_BYTES, Int8Matrix

from conftest import SHAKESPEARE, XIYOUJI, small


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
        packed = net.cell_weights(int8=True)
        assert all(isinstance(layer[0], Int8Matrix) for layer in packed.layers)
        # where torch has fbgemm (x86 wheels) the input is quantized too (dynamic int8); else the weight-only product
        fbgemm = "fbgemm" in torch.backends.quantized.supported_engines
        assert all((layer[0].packed is not None) == fbgemm for layer in packed.layers)
        weight_only = packed._replace(layers=[(layer[0]._replace(packed=None), *layer[1:]) for layer in packed.layers])
        for weights in (packed, weight_only):
            cells = [list(torch.zeros(2, 1, 512).unbind(0)) for _ in range(2)]
            steps = torch.cat([net.step_cells(ids[:, t], cells, weights) for t in range(ids.shape[1] - 1)])
            int8 = F.cross_entropy(steps.float(), ids[0, 1:]).item()
            assert abs(int8 - exact) < 0.005 * exact, (int8, exact)
