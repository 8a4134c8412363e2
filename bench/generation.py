"""Generation speed: characters per second for 1 stream and for 64 parallel samples, per model
type and preset, next to the naive way (re-running the whole window for every character, as the
Keras recipe does) measured in the same run.

    python -m bench.generation [--presets tiny,small] [--length 2000] [--run RUN_DIR] [--run builtin:chinese]

With --run (repeatable), the trained model in RUN_DIR (or a built-in one) is measured as well; one
wide enough for int8 steps (models/rnn.py) is measured again with weight-only int8 steps (no fbgemm) and with
exact float32 steps.
Weights do not change the speed, so the presets are measured with fresh weights over a 65-character
vocabulary (a large vocabulary's output layer does: measure such a model with --run).
"""

from __future__ import annotations

import argparse
import time
from unittest.mock import patch

import torch

from bench.common import add_results_option, write
from textweaver import load
from textweaver.config import PRESETS, ModelConfig
from textweaver.data.tokenizer import CharTokenizer
from textweaver.generation.generator import GenerationRequest, Generator
from textweaver.generation.sampling import SamplingOptions, next_tokens
from textweaver.models import build_model, num_parameters, rnn

VOCAB = ["<unk>", *"\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"]
PROMPT = "ROMEO:\nIs the day so young?\n"
REPEATS = 3


def chars_per_s(generator: Generator, length: int, samples: int) -> float:
    request = GenerationRequest(prompt=PROMPT, length=length, num_samples=samples, seed=0,
                                sampling=SamplingOptions(temperature=0.8))  # fmt: skip
    generator.generate(GenerationRequest(prompt=PROMPT, length=20, num_samples=samples, seed=0))  # warm-up
    best = float("inf")
    for _ in range(REPEATS):  # the best of a few: noise on a shared machine only ever slows a run down
        start = time.perf_counter()
        generator.generate(request)
        best = min(best, time.perf_counter() - start)
    return length * samples / best


def naive_chars_per_s(generator: Generator, length: int) -> float:
    """The naive way: the whole window re-run for every character, nothing cached."""
    gen = torch.Generator().manual_seed(0)
    ids = generator.prompt_ids(PROMPT).tolist()
    context, sampling = generator.model.config.context, SamplingOptions(temperature=0.8)
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(length):
            logits, _ = generator.model(torch.tensor([ids[-context:]]))  # (1, T, V)
            ids.append(int(next_tokens(logits[:, -1], sampling, gen)[0]))
    return length / (time.perf_counter() - start)


def measure(name: str, generator: Generator, params: int, length: int) -> dict[str, object]:
    one = chars_per_s(generator, length, 1)
    many = chars_per_s(generator, max(length // 4, 100), 64)
    naive = naive_chars_per_s(generator, max(length // 10, 100))
    return {"model": name, "params": params, "chars_per_s_1": one, "chars_per_s_64": many,
            "naive_chars_per_s_1": naive, "speedup_vs_naive": one / naive}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small,medium")
    parser.add_argument("--length", type=int, default=2000)
    parser.add_argument("--name", default="generation", help="results name under --results")
    parser.add_argument("--run", action="append", default=[],
                        help="also measure this trained run or builtin:NAME (repeatable)")  # fmt: skip
    add_results_option(parser)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    tokenizer = CharTokenizer(VOCAB)
    for kind in PRESETS:
        for preset in args.presets.split(","):
            p = PRESETS[kind][preset]
            cfg = ModelConfig(kind=kind, vocab_size=len(VOCAB), n_layer=p.n_layer, n_embd=p.n_embd,
                              n_head=p.n_head, context=p.context)  # fmt: skip
            model = build_model(cfg).eval()
            generator = Generator(model, tokenizer, [], torch.device("cpu"), frozen=True)
            rows.append(measure(f"{kind} {preset}", generator, num_parameters(model), args.length))
            print(rows[-1], flush=True)
    for run in args.run:
        trained = load(run)
        generator, params = trained.generator, num_parameters(trained.model)
        rows.append(measure(f"trained: {run}", generator, params, args.length))
        print(rows[-1], flush=True)
        if generator.int8:  # the same model with weight-only int8 steps, then exact float32 steps, side by side
            with patch.object(rnn, "_fbgemm_pack", lambda weight, scales: None):
                generator._weights = None  # packed again, without fbgemm
                rows.append(measure(f"trained: {run}, weight-only int8 steps", generator, params, args.length))
            print(rows[-1], flush=True)
            generator.int8 = False
            rows.append(measure(f"trained: {run}, float32 steps", generator, params, args.length))
            print(rows[-1], flush=True)
    columns = ["model", "params", "chars_per_s_1", "chars_per_s_64", "naive_chars_per_s_1", "speedup_vs_naive"]
    print(
        write(
            args.name,
            rows,
            columns,
            "chars/s on the CPU, best of 3 runs; naive = whole window re-run per character (one run).",
            args.results,
        )
    )


if __name__ == "__main__":
    main()
