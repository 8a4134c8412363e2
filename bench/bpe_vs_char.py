"""Subword against character level at equal wall time: bits per character on the same held-out text.

    python -m bench.bpe_vs_char [--corpora tinyshakespeare.txt,xiyouji.txt,...] [--budget 90s]

For each corpus the text is split as the nanoGPT baseline's runner splits it (``prepare_corpus.py``:
LF, no BOM, the last 10% held out), then ``textweaver train WORKDIR/input.txt --max-time BUDGET``
runs twice with the defaults (the automatic recipe), once with ``--level char`` and once with
``--level bpe`` (and any ``--bpe-args``), and ``textweaver eval`` scores both on ``val.txt``.
Bits per character make the levels comparable: a BPE token covers several characters. The ratio is
bpe / char (below 1: BPE wins). One training at a time: run it alone.

Skips (exit 0) when ../shared is absent, as in a user's clone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.common import add_results_option, evaluations, run_command, write
from bench.versus_nanogpt import REQUIRED, SHARED


def train_and_score(work: Path, level: str, budget: str, extra: list[str]) -> dict[str, Any]:
    """Train on ``work/input.txt`` at ``level`` for ``budget``; score ``work/val.txt``."""
    run = work / level
    cmd = [sys.executable, "-m", "textweaver", "train", str(work / "input.txt"), "--out", str(run),
           "--max-time", budget, "--level", level, "--init-from", "none", "--no-progress", "--no-tensorboard",
           *extra]  # fmt: skip
    done = run_command(cmd)
    scored = run_command([sys.executable, "-m", "textweaver", "eval", str(run), str(work / "val.txt"), "--json"]).stdout
    result = json.loads(scored)
    config = json.loads((run / "last" / "config.json").read_text())
    return {
        "bits_per_char": result["bits_per_char"],
        "chars_per_token": result["chars"] / max(result["tokens"], 1),
        "vocab": config["model"]["vocab_size"],
        "steps": evaluations(run)[-1]["step"],
        "chose": next((line for line in done.stderr.splitlines() if line.startswith("auto:")), ""),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", default=REQUIRED, help="file names under --corpus-dir, comma-separated")
    parser.add_argument("--corpus-dir", default=str(SHARED / "corpora"))
    parser.add_argument("--budget", default="90s", help="--max-time of each training")
    parser.add_argument("--train-args", default="", help="extra options for both runs (default: none)")
    parser.add_argument("--bpe-args", default="", help="extra options for the bpe run, e.g. '--vocab-size 8192'")
    parser.add_argument("--name", default="bpe_vs_char", help="results name under --results")
    add_results_option(parser)
    args = parser.parse_args()
    extra = args.train_args.split()
    prepare = SHARED / "baselines" / "nanogpt" / "prepare_corpus.py"
    if not prepare.is_file() or not Path(args.corpus_dir).is_dir():
        print(f"skipped: no corpora or splitter at {args.corpus_dir} / {prepare} (they live in ../shared)")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for corpus_name in args.corpora.split(","):
            work = Path(tmp) / corpus_name
            run_command([sys.executable, str(prepare), str(Path(args.corpus_dir) / corpus_name), str(work)])
            char = train_and_score(work, "char", args.budget, extra)
            bpe = train_and_score(work, "bpe", args.budget, extra + args.bpe_args.split())
            rows.append({
                "corpus": corpus_name, "budget": args.budget,
                "char_bpc": char["bits_per_char"], "bpe_bpc": bpe["bits_per_char"],
                "ratio": bpe["bits_per_char"] / char["bits_per_char"],
                "char_vocab": char["vocab"], "bpe_vocab": bpe["vocab"],
                "bpe_chars_per_token": bpe["chars_per_token"],
                "char_steps": char["steps"], "bpe_steps": bpe["steps"],
                "char_chose": char["chose"], "bpe_chose": bpe["chose"],
            })  # fmt: skip
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    columns = ["corpus", "budget", "char_bpc", "bpe_bpc", "ratio", "char_vocab", "bpe_vocab", "bpe_chars_per_token",
               "char_steps", "bpe_steps"]  # fmt: skip
    notes = "Bits per character over the whole last 10% of the text; ratio = bpe / char. Choices:\n" + "\n".join(
        f"- {r['corpus']}: char {r['char_chose']}; bpe {r['bpe_chose']}" for r in rows
    )
    print(write(args.name, rows, columns, notes, args.results))


if __name__ == "__main__":
    main()
