"""Side by side with nanoGPT's CPU recipe at equal wall time, on the same text and validation split.

    python -m bench.versus_nanogpt [--corpora tinyshakespeare.txt,xiyouji.txt,...] [--minutes M]

For each corpus: ``../shared/baselines/nanogpt/run.sh`` trains nanoGPT's README CPU recipe (4 layers
x 4 heads x 128, context 64, batch 12, 2000 iterations; ``--minutes M`` scales the iterations so
it trains for about M minutes) and prints its wall time and its validation loss over the whole last
10% of characters: ``val=`` with sliding windows (every character predicted from at least 48
characters of context, the fair figure) and ``cold_blocks=`` (non-overlapping 64-character blocks
each starting cold, the older protocol). Then ``textweaver train WORKDIR/input.txt --max-time WALL``
runs twice: with the defaults (no option: prose in a script a base knows starts from that base,
``finetune.default_source``), and with ``--init-from none`` (from random weights); ``textweaver eval``
scores each on the same last 10% (``WORKDIR/val.txt``). Losses are nats per character; a ratio is
textweaver / nanoGPT's ``val`` (below 1: textweaver wins). One training at a time: run it alone.

The default path refuses a corpus its base was trained on (the base has seen the validation
characters' neighbours, and the book): give a leave-one-out base with ``--base chinese=RUN``
(scripts/build_base.py chinese-loo), which the default path then starts from instead.

Skips (exit 0) when ../shared/baselines/nanogpt is absent, as in a user's clone.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.common import add_keep_option, add_results_option, evaluations, run_command, workdir, write
from textweaver.config import TrainConfig
from textweaver.data.corpus import CorpusOptions
from textweaver.run import checkpoint
from textweaver.training.finetune import DEFAULT_BASES, default_source

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
REQUIRED = "tinyshakespeare.txt,nietzsche.txt,war_and_peace.txt,xiyouji.txt,sanguo_yanyi.txt,sqlite_src.c"
NANOGPT_ITERS = 2000  # the recipe's own
# --minutes: two speed probes (past nanoGPT's first evaluation at iteration 250, which writes its
# checkpoint) separate its fixed start-up cost from its time per iteration; one probe folded start-up
# into the rate and left the "10-minute" runs at 7-8 minutes
PROBE_ITERS = (260, 520)
NO_BASE = "random weights (no base applies)"


def nanogpt_run(runner: Path, corpus: Path, work: Path, iters: int, extra: Sequence[str] = ()) -> dict[str, float]:
    """Train nanoGPT's recipe for ``iters`` iterations (``extra``: nanoGPT --key=value overrides): its wall
    seconds, ``val`` (sliding windows) and ``cold_blocks`` (the older protocol), nats/char."""
    cmd = ["bash", str(runner), str(corpus), str(work), sys.executable,
           f"--max_iters={iters}", f"--lr_decay_iters={iters}", *extra]  # fmt: skip
    out = run_command(cmd).stdout
    m = re.search(r"wall_s=([\d.]+) val=([\d.]+)(?: cold_blocks=([\d.]+))?", out)
    if not m:
        raise SystemExit(f"nanoGPT runner printed no result: {out!r}")
    return {"wall_s": float(m.group(1)), "val": float(m.group(2)),
            "cold_blocks": float(m.group(3)) if m.group(3) else float("nan")}  # fmt: skip


def nanogpt(runner: Path, corpus: Path, work: Path, iters: int, extra: Sequence[str] = ()) -> tuple[float, float]:
    """(wall seconds, val nats/char) of :func:`nanogpt_run`."""
    result = nanogpt_run(runner, corpus, work, iters, extra)
    return result["wall_s"], result["val"]


def trained_on(base: str) -> set[str]:
    """File names of a base model's training corpus."""
    return {Path(str(f.get("path"))).name for f in checkpoint.load(base).corpus.get("files", [])}


def default_start(corpus: Path, bases: dict[str, str]) -> tuple[list[str], str]:
    """The options that make the default path start where a user's ``textweaver train CORPUS`` would (a
    leave-one-out base in place of the shipped one where ``bases`` names one), and what it starts from.
    Refuses a base trained on the corpus."""
    chosen, _ = default_source([corpus], TrainConfig(), set(), CorpusOptions())
    if chosen is None:
        return [], NO_BASE
    language = next(lang for lang, builtin in DEFAULT_BASES.items() if builtin == chosen)
    base = bases.get(language, chosen)
    if corpus.name in trained_on(base):
        raise SystemExit(
            f"{base} was trained on {corpus.name}: the default path would be flattered; give a base that left it "
            f"out with --base {language}=RUN"
        )
    return ([] if base == chosen else ["--init-from", base]), base


def nanogpt_timing(runner: Path, corpus: Path, tmp: Path, extra: Sequence[str] = ()) -> Callable[[float], int]:
    """From two speed probes on this corpus: seconds -> nanoGPT's iterations that take that long
    (wall = start-up + iterations x rate)."""
    (short, _), (long, _) = (nanogpt(runner, corpus, tmp / f"probe-{n}", n, extra) for n in PROBE_ITERS)
    per_iter = max(long - short, 1e-3) / (PROBE_ITERS[1] - PROBE_ITERS[0])
    startup = max(0.0, short - PROBE_ITERS[0] * per_iter)
    return lambda seconds: round((seconds - startup) / per_iter)


def textweaver(
    work: Path, wall: float, extra: list[str], name: str = "textweaver", train_code: list[str] | None = None
) -> dict[str, Any]:
    """Train textweaver on the runner's input.txt for ``wall`` seconds into ``work/name`` and score the same
    val split. ``train_code``: the interpreter arguments that run the CLI (default ``-m textweaver``)."""
    run = work / name
    cmd = [sys.executable, *(train_code or ["-m", "textweaver"]), "train", str(work / "input.txt"), "--out", str(run),
           "--max-time", f"{wall:.1f}s", "--no-progress", "--no-tensorboard", *extra]  # fmt: skip
    start = time.monotonic()
    done = run_command(cmd)
    process_wall = time.monotonic() - start
    chose = next((line for line in done.stderr.splitlines() if line.startswith("auto:")), "")
    scored = run_command([sys.executable, "-m", "textweaver", "eval", str(run), str(work / "val.txt"), "--json"]).stdout
    config = json.loads((run / "last" / "config.json").read_text())
    final = evaluations(run)[-1]
    model = config["model"]
    return {
        "val": json.loads(scored)["nats_per_token"],
        "process_wall_s": round(process_wall, 1),
        "steps": final["step"],
        "tokens_per_s": final["tokens_per_s"],
        "model": f"{model['kind']} {model['n_layer']}x{model['n_embd']} ctx {model['context']}",
        "chose": chose,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default=REQUIRED, help="file names under --corpus-dir, comma-separated")
    parser.add_argument("--corpus-dir", default=str(SHARED / "corpora"))
    parser.add_argument("--nanogpt", default=str(SHARED / "baselines" / "nanogpt"), help="the baseline's folder")
    parser.add_argument("--minutes", type=float, default=None,
                        help="scale nanoGPT's iterations (from its own measured speed) to train this long")  # fmt: skip
    parser.add_argument("--iters", type=int, default=NANOGPT_ITERS, help="nanoGPT's iterations without --minutes")
    parser.add_argument("--train-args", default="", help="extra options for textweaver train (default: none)")
    parser.add_argument("--nanogpt-args", default="", help="extra nanoGPT --key=value overrides (default: none)")
    parser.add_argument("--base", action="append", default=[], metavar="LANGUAGE=RUN",
                        help="a leave-one-out base the default path starts from instead of the shipped one "
                        "(chinese=RUN, english=RUN); repeatable")  # fmt: skip
    parser.add_argument("--no-scratch", action="store_true",
                        help="skip the run from random weights (--init-from none)")  # fmt: skip
    parser.add_argument("--name", default=None, help="results name under --results")
    add_results_option(parser)
    add_keep_option(parser)
    args = parser.parse_args()
    runner = Path(args.nanogpt) / "run.sh"
    if not runner.is_file():
        print(f"skipped: no nanoGPT baseline at {runner} (it lives in ../shared beside the repository)")
        return
    bases = dict(b.split("=", 1) for b in args.base)
    name = args.name or ("versus_nanogpt" if args.minutes is None else f"versus_nanogpt_{args.minutes:g}m")
    rows = []
    with workdir(args.keep) as tmp:
        for corpus_name in args.corpora.split(","):
            corpus = Path(args.corpus_dir) / corpus_name
            work = tmp / corpus_name
            iters = args.iters
            if args.minutes is not None:  # measure nanoGPT's speed on this corpus with two short runs first
                iters_for = nanogpt_timing(runner, corpus, tmp, args.nanogpt_args.split())
                iters = max(NANOGPT_ITERS, iters_for(args.minutes * 60))
            train_args = args.train_args.split()
            start, started = default_start(corpus, bases) if not train_args else ([], "--train-args")
            nano = nanogpt_run(runner, corpus, work, iters, args.nanogpt_args.split())
            wall = nano["wall_s"]
            ours = textweaver(work, wall, [*start, *train_args])
            # where no base applies the default path is the run from random weights already
            random = not start and started == NO_BASE
            if random or args.no_scratch:
                scratch = ours if random else {"val": float("nan"), "model": "(not run: --no-scratch)"}
            else:
                scratch = textweaver(work, wall, ["--init-from", "none", *train_args], "scratch")
            rows.append({
                "corpus": corpus_name, "wall_s": wall, "nanogpt_iters": iters, "nanogpt_val": nano["val"],
                "nanogpt_cold_blocks": nano["cold_blocks"], "started_from": started, "textweaver_val": ours["val"],
                "ratio": ours["val"] / nano["val"], "scratch_val": scratch["val"],
                "scratch_ratio": scratch["val"] / nano["val"], "default_over_scratch": ours["val"] / scratch["val"],
                "scratch_model": scratch["model"], **ours,
            })  # fmt: skip
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    columns = ["corpus", "wall_s", "nanogpt_val", "nanogpt_cold_blocks", "started_from", "textweaver_val", "ratio",
               "scratch_val", "scratch_ratio", "default_over_scratch", "model", "steps", "tokens_per_s"]  # fmt: skip
    notes = "Losses: nats per character over the whole last 10% of the text. Choices:\n" + "\n".join(
        f"- {r['corpus']}: {r['chose']}" for r in rows
    )
    print(write(name, rows, columns, notes, args.results))


if __name__ == "__main__":
    main()
