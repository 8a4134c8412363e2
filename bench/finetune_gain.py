"""What fine-tuning buys on a corpus the base model never saw, at equal wall time.

    python -m bench.finetune_gain --base-en RUN --base-zh RUN [--minutes 1,2,5]
        [--english alice_in_wonderland.txt] [--chinese xiyouji.txt]

RUN folders are leave-one-out bases: trained like builtin:english / builtin:chinese but without the
left-out corpus (the benchmark refuses a base whose training files include it). For each left-out
corpus and each budget: nanoGPT's CPU recipe with its iterations scaled to the budget (two speed
probes per corpus, as in bench.versus_nanogpt), then ``textweaver train --init-from none`` from
scratch (the automatic recipe) and ``textweaver train --init-from BASE`` for nanoGPT's wall time, all on the
runner's ``WORKDIR/input.txt`` and scored on the same last 10% (``WORKDIR/val.txt``), nats/char.
One training at a time: run it alone. Skips (exit 0) when ../shared is absent.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.common import add_keep_option, add_results_option, workdir, write
from bench.versus_nanogpt import SHARED, nanogpt, nanogpt_timing, textweaver, trained_on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-en", help="leave-one-out English base (a run folder); omit to skip English")
    parser.add_argument("--base-zh", help="leave-one-out Chinese base (a run folder); omit to skip Chinese")
    parser.add_argument("--english", default="alice_in_wonderland.txt", help="the corpus --base-en left out")
    parser.add_argument("--chinese", default="xiyouji.txt", help="the corpus --base-zh left out")
    parser.add_argument("--minutes", default="1,2,5", help="budgets, comma-separated")
    parser.add_argument("--corpus-dir", default=str(SHARED / "corpora"))
    parser.add_argument("--nanogpt", default=str(SHARED / "baselines" / "nanogpt"), help="the baseline's folder")
    parser.add_argument("--iters", type=int, default=None,
                        help="nanoGPT's iterations at every budget instead of two speed probes (the budgets then only "
                        "label the rows: a quick check that the benchmark runs)")  # fmt: skip
    parser.add_argument("--nanogpt-args", default="", help="extra nanoGPT --key=value overrides (default: none)")
    parser.add_argument("--scratch-args", default="", help="extra options for the run from scratch (default: none)")
    parser.add_argument("--name", default="finetune_gain", help="results name under --results")
    add_results_option(parser)
    add_keep_option(parser)
    args = parser.parse_args()
    nanogpt_args = args.nanogpt_args.split()
    runner = Path(args.nanogpt) / "run.sh"
    if not runner.is_file():
        print(f"skipped: no nanoGPT baseline at {runner} (it lives in ../shared beside the repository)")
        return
    pairs = [(base, corpus) for base, corpus in ((args.base_en, args.english), (args.base_zh, args.chinese)) if base]
    for base, corpus_name in pairs:
        if Path(corpus_name).name in trained_on(base):
            raise SystemExit(f"{base} was trained on {corpus_name}: give a base that left it out")
    rows = []
    with workdir(args.keep) as tmp:
        for base, corpus_name in pairs:
            corpus = Path(args.corpus_dir) / corpus_name
            if not args.iters:
                iterations_for = nanogpt_timing(runner, corpus, tmp / f"probe-{corpus_name}", nanogpt_args)
            for minutes in (float(m) for m in args.minutes.split(",")):
                work = tmp / f"{Path(corpus_name).stem}-{minutes:g}m"
                # nanoGPT scores its checkpoint from iteration 250
                iters = max(260, args.iters or iterations_for(minutes * 60))
                wall, nano_val = nanogpt(runner, corpus, work, iters, nanogpt_args)
                scratch = textweaver(work, wall, ["--init-from", "none", *args.scratch_args.split()], "scratch")
                tuned = textweaver(work, wall, ["--init-from", base], "tuned")
                rows.append({
                    "corpus": corpus_name, "minutes": minutes, "wall_s": wall, "base": base, "nanogpt_iters": iters,
                    "nanogpt_val": nano_val, "scratch_val": scratch["val"], "tuned_val": tuned["val"],
                    "tuned_over_scratch": tuned["val"] / scratch["val"], "tuned_over_nanogpt": tuned["val"] / nano_val,
                    "scratch_model": scratch["model"], "tuned_model": tuned["model"],
                    "scratch_chose": scratch["chose"], "tuned_chose": tuned["chose"],
                })  # fmt: skip
                print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    columns = ["corpus", "minutes", "wall_s", "nanogpt_val", "scratch_val", "tuned_val", "tuned_over_scratch",
               "tuned_over_nanogpt", "scratch_model", "tuned_model"]  # fmt: skip
    notes = "Losses: nats per character over the whole last 10% of the left-out corpus. Bases: " + ", ".join(
        f"{corpus} left out of {base}" for base, corpus in pairs
    )
    print(write(args.name, rows, columns, notes, args.results))


if __name__ == "__main__":
    main()
