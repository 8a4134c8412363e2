"""export/train_step.py: a training step traced into ONNX equals textweaver train's own step, in onnxruntime.

The model is first trained a few steps on real text (so its weights and moments are not the initial ones);
then three more steps run both ways from the same weights, batches and carried RNN state: PyTorch's
(model loss, backward, clip_grad_norm_, training/setup.py's fused AdamW) and the graph's, fed its own
outputs. Loss, gradient norm, clipped gradients, moments and weights must agree to float32 rounding, except
where Adam's update is decided by a gradient that is zero up to rounding.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from textweaver.config import ModelConfig
from textweaver.data.tokenizer import CharTokenizer
from textweaver.errors import TextweaverError
from textweaver.export.train_step import (
    BUFFER,
    StepOptions,
    input_names,
    loss_graph,
    output_names,
    parameters,
    step_graph,
)
from textweaver.models import build_model
from textweaver.training.setup import _optimizer

TEXT = (Path(__file__).parent / "data" / "shakespeare_8k.txt").read_text(encoding="utf-8")
BATCH, CONTEXT = 3, 8
OPTIONS = StepOptions(weight_decay=0.1, grad_clip=0.5, grads=True)  # a clip that bites: the norm is ~1-3


def session(proto: object) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]


def windows(ids: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k-th window of each of BATCH contiguous streams (as data/batches.py's StreamWindows reads them)."""
    rows = ids[: len(ids) - len(ids) % BATCH].view(BATCH, -1)
    x = rows[:, k * CONTEXT : (k + 1) * CONTEXT]
    return x, rows[:, k * CONTEXT + 1 : (k + 1) * CONTEXT + 1]


def model_and_ids(config: ModelConfig) -> tuple[torch.nn.Module, torch.Tensor]:
    tokenizer = CharTokenizer(["<unk>", *sorted(set(TEXT))])
    ids = torch.tensor(tokenizer.encode(TEXT), dtype=torch.long)
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(config, vocab_size=len(tokenizer)))
    optimizer = _optimizer(model, OPTIONS.weight_decay, 3e-3, torch.device("cpu"))
    for k in range(20):  # a little real training first: weights and moments away from their start
        x, y = windows(ids, 10 + k)
        loss, _ = model(x, None, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model, ids


@pytest.mark.parametrize("config", [
    ModelConfig(kind="lstm", n_layer=2, n_embd=24, context=CONTEXT, tie_weights=True),
    ModelConfig(kind="gru", n_layer=1, n_embd=20, context=CONTEXT, tie_weights=False),
    ModelConfig(kind="lstm", n_layer=1, n_embd=16, context=CONTEXT, cutoffs=[8, 20]),  # the adaptive head
], ids=["lstm-tied", "gru", "lstm-adaptive"])  # fmt: skip
def test_three_steps_in_onnxruntime_equal_pytorchs_steps(config: ModelConfig) -> None:
    model, ids = model_and_ids(config)
    graph = session(step_graph(model, BATCH, CONTEXT, OPTIONS))
    names = [name for name, _ in parameters(model)]
    n, lr = len(names), 2e-3
    optimizer = _optimizer(model, OPTIONS.weight_decay, lr, torch.device("cpu"))
    weights = [p.detach().numpy().copy() for _, p in parameters(model)]
    moments = [np.zeros_like(w) for w in weights] * 2
    state = None
    decided = [np.ones(w.shape, bool) for w in weights]
    onnx_state = [np.zeros((config.n_layer, BATCH, config.n_embd), np.float32)] * (2 if config.kind == "lstm" else 1)
    for k in range(3):
        x, y = windows(ids, k)
        loss, new_state = model(x, state, y)
        optimizer.zero_grad()
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), OPTIONS.grad_clip)
        grads = [p.grad.numpy().copy() for _, p in parameters(model)]  # type: ignore[union-attr]
        optimizer.step()
        state = tuple(s.detach() for s in new_state)

        rate, step = np.array(lr, np.float32), np.array(k + 1, np.float32)
        feeds = dict(zip(input_names(model), [x.numpy(), y.numpy(), rate, step, *weights, *moments, *onnx_state],
                         strict=True))  # fmt: skip
        out = dict(zip(output_names(model, OPTIONS), graph.run(None, feeds), strict=True))
        assert out["loss"] == pytest.approx(loss.item(), rel=1e-5), f"step {k + 1}"
        assert out["grad_norm"] == pytest.approx(norm.item(), rel=1e-5), f"step {k + 1}"
        weights = [out[f"p.{name}.out"] for name in names]
        moments = [out[f"{m}.{name}.out"] for m in "mv" for name in names]
        onnx_state = [out[f"{s}_out"] for s in ("h", "c")[: len(onnx_state)]]
        for ours, theirs in zip(onnx_state, state, strict=True):
            np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-5, atol=1e-6)
        for i, name in enumerate(names):
            np.testing.assert_allclose(out[f"g.{name}"], grads[i], rtol=1e-4, atol=1e-7, err_msg=name)
            state_of = optimizer.state[dict(model.named_parameters())[name]]
            np.testing.assert_allclose(moments[i], state_of["exp_avg"].numpy(), rtol=1e-4, atol=1e-8, err_msg=name)
            np.testing.assert_allclose(moments[n + i], state_of["exp_avg_sq"].numpy(), rtol=1e-4, atol=1e-10)
            # Adam divides by sqrt(v): where a gradient is zero up to rounding (its two values differ by over
            # 0.1%) at any step so far, the update there is rounding noise scaled up to the learning rate
            # (a gradient that is exactly zero on both sides, a character absent from the batch, decides too)
            ours = out[f"g.{name}"]
            decided[i] &= (np.abs(grads[i]) > 1e3 * np.abs(ours - grads[i])) | ((grads[i] == 0) & (ours == 0))
            theirs = dict(model.named_parameters())[name].detach().numpy()
            assert decided[i].mean() > 0.9, name  # most of it is compared
            np.testing.assert_allclose(weights[i][decided[i]], theirs[decided[i]], rtol=1e-5, atol=1e-6, err_msg=name)


def test_the_loss_graph_gives_the_models_validation_loss_and_state() -> None:
    config = ModelConfig(kind="lstm", n_layer=1, n_embd=16, context=CONTEXT, tie_weights=True)
    model, ids = model_and_ids(config)
    graph = session(loss_graph(model, BATCH, CONTEXT))
    state = [np.zeros((1, BATCH, 16), np.float32)] * 2
    torch_state = None
    for k in range(2):
        x, y = windows(ids, 40 + k)
        with torch.no_grad():
            loss, torch_state = model(x, torch_state, y)
        value, *state = graph.run(None, {"ids": x.numpy(), "targets": y.numpy(), "h": state[0], "c": state[1],
                                         **{f"p.{n}": p.detach().numpy() for n, p in parameters(model)}})  # fmt: skip
        assert value == pytest.approx(loss.item(), rel=1e-5)
        np.testing.assert_allclose(state[0], torch_state[0].numpy(), rtol=1e-5, atol=1e-6)


def test_a_transformer_is_refused_in_one_line() -> None:
    model = build_model(ModelConfig(kind="transformer", vocab_size=30, n_layer=1, n_embd=16, n_head=2, context=8))
    with pytest.raises(TextweaverError, match="LSTM and GRU") as refused:
        step_graph(model, 1, 8, OPTIONS)
    assert "\n" not in str(refused.value)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_the_exported_page_trains_and_generates_with_the_new_weights(kind: str, tmp_path: Path) -> None:
    """The page's way: train/weights.f16 (the weights in float16, half the bytes), widened to float32, feeds the
    step from PyTorch's loss for those weights; the step's new weights, written into that float32 buffer at
    config.json's offsets, make generate.onnx (the buffer as external data) give PyTorch's logits for them."""
    import json
    import shutil

    from textweaver.export.check import OnnxStepper
    from textweaver.export.site import export
    from textweaver.run import checkpoint

    model, ids = model_and_ids(ModelConfig(kind=kind, n_layer=2, n_embd=24, context=32, tie_weights=True))
    tokenizer = CharTokenizer(["<unk>", *sorted(set(TEXT))])
    checkpoint.save(
        tmp_path / "run" / "best", model, model.config, tokenizer, ["First"], train_config={}, metrics={}, corpus={}
    )
    site = export(tmp_path / "run", tmp_path / "site", "web", train=True).directory
    train = json.loads((site / "config.json").read_text(encoding="utf-8"))["train"]
    halves = (site / train["files"]["weights"]).read_bytes()
    layout = train["parameters"]
    assert [p["name"] for p in layout] == [name for name, _ in parameters(model)]
    assert 2 * len(halves) == layout[-1]["offset"] + layout[-1]["bytes"]  # float16: half the float32 buffer
    raw = np.frombuffer(halves, "<f2").astype("<f4").tobytes()  # what the page's widen() makes of it
    weights = [np.frombuffer(raw, "<f4", p["bytes"] // 4, p["offset"]).reshape(p["shape"]) for p in layout]
    with torch.no_grad():
        before, _ = model(ids[None, :64], None, ids[None, 1:65])
        for (_, p), w in zip(parameters(model), weights, strict=True):
            np.testing.assert_allclose(w, p.numpy(), rtol=1e-3, atol=1e-7)  # float16's rounding, no more
            p.copy_(torch.from_numpy(w))  # the page starts from the rounded weights
        after, _ = model(ids[None, :64], None, ids[None, 1:65])
    assert after.item() == pytest.approx(before.item(), rel=1e-3)

    batch, context = train["batch"], train["context"]
    rows = ids[: len(ids) - len(ids) % batch].view(batch, -1)
    x, y = rows[:, :context].numpy(), rows[:, 1 : context + 1].numpy()
    step = ort.InferenceSession(str(site / train["files"]["step"]), providers=["CPUExecutionProvider"])
    zeros = [np.zeros_like(w) for w in weights] * 2
    state = [np.zeros((2, batch, 24), np.float32)] * len(train["state"])
    feeds = [x, y, np.array(1e-2, np.float32), np.array(1, np.float32), *weights, *zeros, *state]
    loss, _, *new = step.run(None, dict(zip([i.name for i in step.get_inputs()], feeds, strict=True)))
    with torch.no_grad():
        assert loss == pytest.approx(model(torch.from_numpy(x), None, torch.from_numpy(y))[0].item(), rel=1e-5)

    page = tmp_path / "page"  # the page's buffer after training: new weights at their offsets
    (page / "train").mkdir(parents=True)
    shutil.copy(site / train["files"]["generate"], page / "train")
    buffer = bytearray(raw)
    for entry, value in zip(layout, new[: len(layout)], strict=True):
        buffer[entry["offset"] : entry["offset"] + entry["bytes"]] = value.astype("<f4").tobytes()
    (page / "train" / BUFFER).write_bytes(bytes(buffer))
    with torch.no_grad():
        for (_, p), value in zip(parameters(model), new[: len(layout)], strict=True):
            p.copy_(torch.from_numpy(value))
    assert not np.allclose(new[0], weights[0])  # the step moved the weights
    stepper = OnnxStepper(page / train["files"]["generate"], model.config)
    tokens = torch.tensor(tokenizer.encode("First Citizen"))
    logits = stepper.prefill(tokens[None].numpy())
    with torch.no_grad():
        expected, _ = model(tokens[None])
    np.testing.assert_allclose(logits, expected[:, -1].numpy(), rtol=1e-4, atol=1e-4)


def test_only_a_web_export_of_an_rnn_trains_in_the_page(tmp_path: Path) -> None:
    from textweaver.export.site import export
    from textweaver.run import checkpoint

    tokenizer = CharTokenizer(["<unk>", *sorted(set(TEXT))])
    config = ModelConfig(kind="transformer", vocab_size=len(tokenizer), n_layer=1, n_embd=16, n_head=2, context=8)
    checkpoint.save(
        tmp_path / "t" / "best",
        build_model(config),
        config,
        tokenizer,
        ["First"],
        train_config={},
        metrics={},
        corpus={},
    )
    for fmt, message in (("onnx", "for --format web"), ("web", "LSTM and GRU")):
        with pytest.raises(TextweaverError, match=message):
            export(tmp_path / "t", tmp_path / "out", fmt, train=True)
    assert not (tmp_path / "out").exists()


def page_model_file(path: Path, run: Path, weights: list[np.ndarray], names: list[str]) -> Path:
    """A .safetensors file as the page's Download model writes it (by hand: header length, JSON, data)."""
    import json
    import struct

    header: dict[str, object] = {"__metadata__": {
        "format": "textweaver-page-model", "config.json": (run / "config.json").read_text(encoding="utf-8"),
        "tokenizer.json": (run / "tokenizer.json").read_text(encoding="utf-8"),
        "prompts.json": (run / "prompts.json").read_text(encoding="utf-8"),
    }}  # fmt: skip
    data, offset = b"", 0
    for name, w in zip(names, weights, strict=True):
        raw = w.astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(w.shape), "data_offsets": [offset, offset + len(raw)]}
        data, offset = data + raw, offset + len(raw)
    encoded = json.dumps(header).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)
    return path


def test_a_model_downloaded_from_the_page_loads_generates_and_fine_tunes_further(tmp_path: Path) -> None:
    from textweaver import load
    from textweaver.run import checkpoint

    model, _ = model_and_ids(ModelConfig(kind="gru", n_layer=1, n_embd=16, context=CONTEXT, tie_weights=True))
    tokenizer = CharTokenizer(["<unk>", *sorted(set(TEXT))])
    saved = {"train_config": {}, "metrics": {}, "corpus": {}}
    checkpoint.save(tmp_path / "run" / "best", model, model.config, tokenizer, ["First"], **saved)
    changed = [p.detach().numpy() + 0.01 for _, p in parameters(model)]  # "fine-tuned" weights
    file = page_model_file(tmp_path / "my model.safetensors", tmp_path / "run" / "best", changed,
                           [name for name, _ in parameters(model)])  # fmt: skip
    loaded = checkpoint.load(file)
    assert loaded.model_config == model.config and len(loaded.tokenizer) == len(tokenizer)
    rebuilt = loaded.build_model()
    for (name, p), value in zip(parameters(rebuilt), changed, strict=True):
        np.testing.assert_array_equal(p.detach().numpy(), value, err_msg=name)
    assert len(load(file).generate("First", length=20, seed=1)) == len("First") + 20  # the prompt, then 20

    bad = tmp_path / "plain.safetensors"
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(bad))
    with pytest.raises(TextweaverError, match="not a model downloaded from a textweaver page"):
        checkpoint.load(bad)


def test_the_cli_refuses_a_train_panel_outside_a_web_page_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from textweaver.run import checkpoint

    from conftest import run_cli

    model, _ = model_and_ids(ModelConfig(kind="lstm", n_layer=1, n_embd=8, context=CONTEXT))
    tokenizer = CharTokenizer(["<unk>", *sorted(set(TEXT))])
    saved = {"train_config": {}, "metrics": {}, "corpus": {}}
    checkpoint.save(tmp_path / "run" / "best", model, model.config, tokenizer, ["First"], **saved)
    code, _, err = run_cli(["export", str(tmp_path / "run"), "--out", str(tmp_path / "x"), "--train-panel"], capsys)
    assert code != 0 and err.strip().count("\n") == 0 and "for --format web" in err, err
