"""Time to quality: `textweaver train FILE --max-time T --init-from none` (the automatic recipe from random
weights: a base model would have seen these corpora) for several budgets and corpora; reports the final
validation loss and the loss-over-time curve.

    python -m bench.time_to_quality [--budgets 3m,5m,10m] [--corpora tinyshakespeare.txt,xiyouji.txt]

Corpora are read from ../shared/corpora next to the repository unless --corpus-dir says otherwise.
Runs one training at a time (side by side runs would share the CPU and falsify each other).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

from bench.common import add_results_option, evaluations, run_command, write
from textweaver.config import parse_duration

ROOT = Path(__file__).resolve().parent.parent
NANOGPT_CPU_LOSS = 1.886  # nanoGPT's CPU recipe on Tiny Shakespeare (val loss, nats/char)


def run(corpus: Path, budget: str, out: Path, eval_every: int, extra: list[str]) -> list[dict[str, float]]:
    cmd = [sys.executable, "-m", "textweaver", "train", str(corpus), "--out", str(out), "--max-time", budget,
           "--eval-every", str(eval_every), "--init-from", "none", "--no-progress", "--no-tensorboard",
           *extra]  # fmt: skip
    run_command(cmd)
    return evaluations(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", default="3m,5m,10m")
    parser.add_argument("--corpora", default="tinyshakespeare.txt,xiyouji.txt")
    parser.add_argument("--corpus-dir", default=str(ROOT.parent / "shared" / "corpora"))
    parser.add_argument("--eval-every", type=int, default=250, help="steps between points of the curve")
    parser.add_argument("--train-args", default="", help="extra options for textweaver train, e.g. '--model gru'")
    parser.add_argument("--name", default="time_to_quality", help="results file name under --results")
    add_results_option(parser)
    args = parser.parse_args()
    rows, curves = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.corpora.split(","):
            for budget in args.budgets.split(","):
                records = run(Path(args.corpus_dir) / name, budget, Path(tmp) / f"{name}-{budget}", args.eval_every,
                              args.train_args.split())  # fmt: skip
                final = records[-1]
                reached = next((r["elapsed_s"] for r in records if r["val_loss"] <= NANOGPT_CPU_LOSS), None)
                rows.append({
                    "corpus": name, "budget": budget, "budget_s": parse_duration(budget), "steps": final["step"],
                    "val_nats_per_char": final["val_loss"], "val_bits_per_char": final["val_bpc"],  # char level
                    "best_val_loss": final["best_val_loss"], "tokens_per_s": final["tokens_per_s"],
                    "s_to_nanogpt_1.886": reached if name.startswith("tinyshakespeare") else None,
                })  # fmt: skip
                curves[f"{name} {budget}"] = [(r["elapsed_s"], r["val_loss"], r["val_bpc"]) for r in records]
                print(rows[-1], flush=True)
    columns = ["corpus", "budget", "steps", "val_nats_per_char", "val_bits_per_char", "tokens_per_s",
               "s_to_nanogpt_1.886"]  # fmt: skip
    curve_text = "\n".join(
        f"- {key}: " + ", ".join(f"{t:.0f}s {loss:.3f}" for t, loss, _ in points) for key, points in curves.items()
    )
    print(
        write(args.name, rows, columns, "Validation loss over time (elapsed, nats/token):\n" + curve_text, args.results)
    )
    (args.results / f"{args.name}_curves.json").write_text(json.dumps(curves))
    assert all(math.isfinite(r["val_nats_per_char"]) for r in rows)


if __name__ == "__main__":
    main()
