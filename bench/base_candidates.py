"""Which model makes the best base for a language: validation loss per CPU-hour on its whole corpus.

    python scripts/build_base.py chinese-loo --out runs/base-zh-loo --prepare   # the cleaned corpus
    python -m bench.base_candidates runs/base-zh-loo-corpus --out runs/candidates-zh --steps 600 --threads 1 \\
        --name base_candidates_zh

Each candidate trains for the same number of steps from random weights (the same corpus, batch of
64 windows and seed; the learning-rate schedule ends with the budget) and its validation loss is
recorded at every evaluation, with the tokens seen. The CPU seconds its training process used
(user + system, from the operating system: unlike wall time, they do not grow when other work
shares the machine) give the loss per CPU-hour. A candidate already trained in OUT is read, not
retrained (rerun the command after an interruption; the CPU seconds of every segment add up).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

from bench.common import add_results_option, evaluations, write

COMMON = ["--context", "64", "--batch-size", "64", "--dropout", "0", "--precision", "bf16", "--seed", "1337",
          "--eval-tokens", "65536", "--no-tensorboard", "--no-progress"]  # fmt: skip
# name: options. LSTMs use the adaptive softmax the recipe picks for a large vocabulary; the transformer
# (full softmax: adaptive heads are RNN-only) attends over 128 characters
CANDIDATES = {
    "lstm-2x512": ["--model", "lstm", "--layers", "2", "--width", "512", "--lr", "3e-3"],
    "lstm-2x768": ["--model", "lstm", "--layers", "2", "--width", "768", "--lr", "2e-3"],
    "transformer-4x384": ["--model", "transformer", "--layers", "4", "--width", "384", "--heads", "6",
                          "--context", "128", "--lr", "1e-3"],
}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="a folder of cleaned text (scripts/build_base.py --prepare)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the candidates' runs")
    parser.add_argument("--steps", default="600",
                        help="training steps of each candidate: one number, or NAME=STEPS,... (equal CPU time for "
                        "models of different cost)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=None, help="CPU threads each training uses")
    parser.add_argument("--eval-every", type=int, default=150, help="steps between evaluations")
    parser.add_argument("--only", default=",".join(CANDIDATES), help="candidates to run, comma-separated")
    parser.add_argument("--name", default="base_candidates", help="results name under --results")
    add_results_option(parser)
    args = parser.parse_args()
    files = sorted(p for p in args.corpus.rglob("*.txt"))
    steps = {n: int(v) for n, v in (p.split("=") for p in args.steps.split(","))} if "=" in args.steps else {}
    rows = []
    for name in args.only.split(","):
        run = args.out / name
        cmd = [sys.executable, "-m", "textweaver", "train", *map(str, files), "--out", str(run), "--resume",
               "--max-steps", str(steps.get(name) or args.steps), "--eval-every", str(args.eval_every), *COMMON,
               *CANDIDATES[name], *(["--threads", str(args.threads)] if args.threads else [])]  # fmt: skip
        print(name, flush=True)
        before = _children_cpu()
        subprocess.run(cmd, check=True)  # a finished run says "nothing to do"
        spent = run / "cpu_seconds.json"
        total = (json.loads(spent.read_text())["cpu_s"] if spent.exists() else 0.0) + _children_cpu() - before
        spent.write_text(json.dumps({"cpu_s": total}))
        points = evaluations(run)
        best = min(points, key=lambda r: r["val_loss"])
        last = points[-1]
        cpu_s = json.loads((run / "cpu_seconds.json").read_text())["cpu_s"]
        rows.append({"candidate": name, "params": _params(run), "steps": last["step"], "tokens": last.get("tokens"),
                     "cpu_s": cpu_s, "tokens_per_cpu_s": last.get("tokens", 0) / cpu_s,
                     "best_val": best["val_loss"], "curve": [(r["step"], r.get("tokens"), r.get("elapsed_s"),
                                                               r["val_loss"]) for r in points]})  # fmt: skip
    write(args.name, rows, ["candidate", "params", "steps", "tokens", "cpu_s", "tokens_per_cpu_s", "best_val"],
          notes=f"Corpus: {len(files)} files under {args.corpus.name}; threads: {args.threads or 'default'}. "
          "best_val: nats per character on the first 131,072 tokens of the validation split (the files' last 10%, "
          "in order).", results=args.results)  # fmt: skip


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _params(run: Path) -> int | None:
    from textweaver import load

    try:
        return sum(p.numel() for p in load(run).model.parameters())
    except Exception:
        return None


if __name__ == "__main__":
    main()
