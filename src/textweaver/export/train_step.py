"""Fine-tuning without Python: one training step (forward, backward, AdamW) as a plain ONNX graph.

onnxruntime-web has no training API, but it runs any inference graph, and a whole training step is one:
PyTorch's own backward is traced (``torch.func.grad_and_value`` under ``make_fx``) into ordinary operators
(MatMul, Sigmoid, Tanh, Gather, ScatterND ...) and exported with ``torch.onnx.export(dynamo=True)``. The weights
are inputs, not initializers, so the page keeps them in memory and feeds each step the last step's output:

- inputs: ``ids``, ``targets`` (B, T) int64; ``lr``, ``step`` () float32 (``step`` counts from 1); then each
  trainable tensor ``p.NAME``, Adam's moments ``m.NAME`` and ``v.NAME`` (names in :func:`parameters` order);
  then the RNN state the previous window left (``h``, and ``c`` for an LSTM: (layers, B, width))
- outputs: ``loss`` (mean nats per token of this batch), ``grad_norm`` (before clipping), the new ``p.*``,
  ``m.*``, ``v.*`` and the state to carry into the next window (truncated backpropagation through time)

The step is the one ``textweaver train`` takes (training/setup.py's AdamW: decay on matrices only, its betas;
training/loop.py's global-norm clipping), so a step in the page equals a step in Python to float32 rounding
(tests/test_train_step.py). :func:`loss_graph` is the forward half alone: the validation loss of a window.
Transformers are refused: their page fine-tuning is not built yet.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from textweaver.config import ModelConfig, TrainConfig
from textweaver.errors import TextweaverError
from textweaver.export.onnx import empty_state
from textweaver.models import LanguageModel
from textweaver.models.heads import AdaptiveHead
from textweaver.run import checkpoint
from textweaver.training.recipe import finetune_model
from textweaver.training.setup import ADAM_BETAS, ADAM_EPS, decays

CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_'s: coefficient = max_norm / (norm + 1e-6), at most 1


@dataclass(frozen=True)
class StepOptions:
    weight_decay: float
    grad_clip: float  # 0: off
    grads: bool = False  # also output the clipped gradients ``g.NAME`` (for the parity tests, not the page)


def parameters(model: LanguageModel) -> list[tuple[str, torch.Tensor]]:
    """The trainable tensors in graph order (a tied head weight appears once, as the embedding)."""
    return [(name, p) for name, p in model.named_parameters()]


def state_names(model: LanguageModel) -> list[str]:
    return ["h", "c"] if model.config.kind == "lstm" else ["h"]


def check_trainable(config: ModelConfig) -> None:
    """Refuse, in one line, a model the page cannot fine-tune."""
    if config.kind == "transformer":
        raise TextweaverError(
            "fine-tuning in the page works for LSTM and GRU models; a transformer's page is exported without it"
        )


def _mean_nll(model: LanguageModel, params: dict[str, torch.Tensor], ids: torch.Tensor, targets: torch.Tensor,
              state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:  # fmt: skip
    """Mean negative log-likelihood of ``targets`` and the new state. Written as log_softmax + gather, not
    F.cross_entropy: the exporter's NegativeLogLikelihoodLoss backward drops the mean's 1/N."""
    out, new = torch.func.functional_call(model, params, (ids, state))
    log_p = out.float() if isinstance(model.head, AdaptiveHead) else torch.log_softmax(out.float(), dim=-1)
    return -log_p.gather(-1, targets[..., None]).mean(), tuple(new)


def step_function(model: LanguageModel, options: StepOptions) -> Callable[..., tuple[torch.Tensor, ...]]:
    """``f(ids, targets, lr, step, *p, *m, *v, *state) -> (loss, grad_norm, *p, *m, *v, *state[, *g])``."""
    names = [name for name, _ in parameters(model)]
    decay = [decays(p) for _, p in parameters(model)]
    n = len(names)
    beta1, beta2 = ADAM_BETAS

    def step(ids: torch.Tensor, targets: torch.Tensor, lr: torch.Tensor, t: torch.Tensor,
             *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:  # fmt: skip
        ps, ms, vs, state = flat[:n], flat[n : 2 * n], flat[2 * n : 3 * n], tuple(flat[3 * n :])

        def loss_of(weights: Sequence[torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
            loss, new = _mean_nll(model, dict(zip(names, weights, strict=True)), ids, targets, state)
            return loss, (loss.detach(), *new)

        grads, aux = torch.func.grad_and_value(loss_of, has_aux=True)(list(ps))
        loss, new_state = aux[1][0], aux[1][1:]
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        if options.grad_clip > 0:
            coef = torch.clamp(options.grad_clip / (norm + CLIP_EPS), max=1.0)
            grads = [g * coef for g in grads]
        # torch.optim.AdamW (what textweaver train runs, fused or not): decoupled decay, then the moments
        correction1, correction2 = 1 - beta1**t, torch.sqrt(1 - beta2**t)
        new_p, new_m, new_v = [], [], []
        for p, g, m, v, d in zip(ps, grads, ms, vs, decay, strict=True):
            if d and options.weight_decay:
                p = p * (1 - lr * options.weight_decay)
            m = m + (g - m) * (1 - beta1)
            v = v * beta2 + g * g * (1 - beta2)
            p = p - (lr / correction1) * m / (torch.sqrt(v) / correction2 + ADAM_EPS)
            new_p.append(p)
            new_m.append(m)
            new_v.append(v)
        extra = list(grads) if options.grads else []
        return (loss, norm, *new_p, *new_m, *new_v, *new_state, *extra)

    return step


def example_inputs(model: LanguageModel, batch: int, context: int) -> list[torch.Tensor]:
    """Inputs of the step's shapes (their values do not matter for tracing)."""
    ids = torch.randint(0, model.config.vocab_size, (batch, context))
    weights = [p.detach().clone() for _, p in parameters(model)]
    # distinct tensors each: the tracer would read one tensor passed twice as one input
    moments = [torch.zeros_like(w) for w in weights] + [torch.zeros_like(w) for w in weights]
    state = empty_state(model.config, batch)
    return [ids, ids.clone(), torch.tensor(1e-3), torch.tensor(1.0), *weights, *moments, *state]


def input_names(model: LanguageModel) -> list[str]:
    names = [name for name, _ in parameters(model)]
    return ["ids", "targets", "lr", "step", *(f"{k}.{n}" for k in "pmv" for n in names), *state_names(model)]


def output_names(model: LanguageModel, options: StepOptions) -> list[str]:
    names = [name for name, _ in parameters(model)]
    out = ["loss", "grad_norm", *(f"{k}.{n}.out" for k in "pmv" for n in names)]
    out += [f"{s}_out" for s in state_names(model)]
    return out + ([f"g.{n}" for n in names] if options.grads else [])


class _Traced(torch.nn.Module):
    """A traced function as a module for the exporter (which names the inputs after forward's arguments)."""

    def __init__(self, graph: torch.fx.GraphModule) -> None:
        super().__init__()
        self.graph_module = graph

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.graph_module(*inputs)


def _export(fn: Callable[..., Any], inputs: list[torch.Tensor], names_in: list[str], names_out: list[str]) -> Any:
    """``fn`` traced at ``inputs``' shapes into an ONNX ModelProto (fixed shapes)."""
    with torch.backends.mkldnn.flags(enabled=False), warnings.catch_warnings():  # nn.LSTM as plain cells
        warnings.simplefilter("ignore")
        graph = make_fx(fn)(*inputs)
        # optimize=False: onnxscript's optimizer folds ``x + 1e-8`` (Adam's eps) into ``x`` as if adding zero
        program = torch.onnx.export(
            _Traced(graph), tuple(inputs), dynamo=True, optimize=False, input_names=names_in,
            output_names=names_out, verbose=False,
        )  # fmt: skip
    assert program is not None
    return program.model_proto


def step_graph(model: LanguageModel, batch: int, context: int, options: StepOptions) -> Any:
    """The training step as an ONNX ModelProto for ``batch`` windows of ``context`` tokens."""
    check_trainable(model.config)
    model = model.eval()  # no dropout: fine-tuning in the page is deterministic, like its parity test
    inputs = example_inputs(model, batch, context)
    return _export(step_function(model, options), inputs, input_names(model), output_names(model, options))


def loss_graph(model: LanguageModel, batch: int, context: int) -> Any:
    """``(ids, targets, *p, *state) -> (loss, *state)``: a window's validation loss, without the backward."""
    check_trainable(model.config)
    model = model.eval()
    names = [name for name, _ in parameters(model)]
    n = len(names)

    def loss(ids: torch.Tensor, targets: torch.Tensor, *flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        value, new = _mean_nll(model, dict(zip(names, flat[:n], strict=True)), ids, targets, tuple(flat[n:]))
        return (value, *new)

    step_inputs = example_inputs(model, batch, context)
    inputs = [*step_inputs[:2], *step_inputs[4 : 4 + n], *step_inputs[4 + 3 * n :]]
    names_in = ["ids", "targets", *(f"p.{name}" for name in names), *state_names(model)]
    names_out = ["loss", *(f"{s}_out" for s in state_names(model))]
    with torch.no_grad():
        return _export(loss, inputs, names_in, names_out)


# ---- the page's training files ------------------------------------------------------------------------------

TRAIN_DIR = "train"  # under the exported page
STEP_FILE, LOSS_FILE, GENERATE_FILE, WEIGHTS_FILE = "step.onnx", "loss.onnx", "generate.onnx", "weights.f16"
# the page's float32 weights: WEIGHTS_FILE widened (web/train-store.js), the external data generate.onnx names
BUFFER = "weights.bin"
RUN_FILE = "run.json"  # the checkpoint's config.json: a model downloaded from the page is a checkpoint again
PAGE_BATCH, PAGE_CONTEXT = 16, 32  # 512 tokens a step: ~0.65 s of one WASM thread for a 2x512 LSTM
PAGE_VAL_FRACTION = 0.1  # the visitor's text's last tenth is its validation tail, as textweaver train's split
PAGE_WARMUP_STEPS = 15  # recipe.WARMUP_FRACTION of the ~300 steps 3 minutes make for a 2x512 LSTM in the page


def weight_layout(model: LanguageModel) -> list[dict[str, Any]]:
    """Where each trainable tensor lies in the page's float32 buffer (``BUFFER``: little-endian, in
    :func:`parameters` order); ``WEIGHTS_FILE`` holds the same values in float16, at half these offsets."""
    layout, offset = [], 0
    for name, p in parameters(model):
        size = p.numel() * 4
        layout.append({"name": name, "shape": list(p.shape), "offset": offset, "bytes": size, "decay": decays(p)})
        offset += size
    return layout


def generation_graph(model: LanguageModel, layout: list[dict[str, Any]]) -> Any:
    """One generation step (export/onnx.py's signature) whose weights are ``BUFFER``'s tensors, stored as ONNX
    external data: the page writes fine-tuned weights into that buffer and opens the graph again."""
    from onnx import TensorProto

    from textweaver.export.onnx import _RNNStep, signature

    names = signature(model.config)
    tokens = torch.ones(1, 1, dtype=torch.long)
    with torch.backends.mkldnn.flags(enabled=False), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _RNNStep(model), (tokens, *empty_state(model.config, 1)), dynamo=True, optimize=False,
            input_names=names["inputs"], output_names=names["outputs"], verbose=False,
        )  # fmt: skip
    assert program is not None
    proto = program.model_proto
    # the graph names a tensor by one of its module paths (a tied head weight: by the head's); find its entry
    by_tensor = {id(p): entry for (_, p), entry in zip(parameters(model), layout, strict=True)}
    for init in proto.graph.initializer:
        entry = by_tensor.get(id(model.get_parameter(init.name.removeprefix("model."))))
        if entry is None or init.data_type != TensorProto.FLOAT:
            raise TextweaverError(
                f"the generation graph holds an unexpected tensor {init.name!r}: please report this bug"
            )
        init.ClearField("raw_data")
        init.ClearField("float_data")
        init.data_location = TensorProto.EXTERNAL
        for key, value in (("location", BUFFER), ("offset", entry["offset"]), ("length", entry["bytes"])):
            init.external_data.add(key=key, value=str(value))
    return proto


def write_halves(model: LanguageModel, path: Path) -> None:
    """The trainable tensors in float16 (half the download; the page widens them to float32 before its first
    step). The built-in bases are stored in float16 already, so for them nothing is lost."""
    halves = [p.detach().to(torch.float16) for _, p in parameters(model)]
    if not all(bool(h.isfinite().all()) for h in halves):
        raise TextweaverError(
            "the model has weights beyond float16's range (65,504), which the page's training files store: "
            "export it without --train-panel"
        )
    with path.open("wb") as f:
        for h in halves:
            f.write(h.contiguous().numpy().astype("<f2").tobytes())


def write_training(ckpt: checkpoint.Checkpoint, directory: Path) -> dict[str, Any]:
    """Write the page's training files to ``directory/train/``; return their part of the page's config.json.

    The step is the run's own (its weight decay and clipping); the rate is the one ``--init-from`` fine-tuning
    of this model would choose (training/recipe.py), decayed as training/schedule.py does over the visitor's
    time budget."""
    import onnx

    model = ckpt.build_model("cpu")
    check_trainable(model.config)
    folder = directory / TRAIN_DIR
    folder.mkdir(parents=True, exist_ok=True)
    layout = weight_layout(model)
    write_halves(model, folder / WEIGHTS_FILE)
    defaults = TrainConfig()
    trained = ckpt.train_config
    options = StepOptions(weight_decay=float(trained.get("weight_decay", defaults.weight_decay)),
                          grad_clip=float(trained.get("grad_clip", defaults.grad_clip) or 0.0))  # fmt: skip
    onnx.save(step_graph(model, PAGE_BATCH, PAGE_CONTEXT, options), str(folder / STEP_FILE))
    onnx.save(loss_graph(model, PAGE_BATCH, PAGE_CONTEXT), str(folder / LOSS_FILE))
    onnx.save(generation_graph(model, layout), str(folder / GENERATE_FILE))
    shutil.copyfile(ckpt.directory / checkpoint.CONFIG, folder / RUN_FILE)
    lr = finetune_model(ckpt.model_config, ckpt.model_config.vocab_size).lr
    return {
        "files": {key: f"{TRAIN_DIR}/{name}" for key, name in (("step", STEP_FILE), ("loss", LOSS_FILE),
                  ("generate", GENERATE_FILE), ("weights", WEIGHTS_FILE), ("run", RUN_FILE))},
        # the name generate.onnx gives its external data: the page hands it the weights under that name
        "buffer": BUFFER,
        "batch": PAGE_BATCH, "context": PAGE_CONTEXT, "state": state_names(model), "parameters": layout,
        "val_fraction": PAGE_VAL_FRACTION,
        # training/schedule.py's learning_rate with progress by time: mirrored by the page, not re-chosen there
        "schedule": {"peak": lr, "warmup_steps": PAGE_WARMUP_STEPS,
                     "min_ratio": float(trained.get("min_lr_ratio", defaults.min_lr_ratio))},
    }  # fmt: skip
