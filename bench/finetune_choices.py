"""The fine-tuning defaults, measured: learning rate, how appended tokens' rows start, and what the
tokens of the base that the new corpus never uses cost.

    python -m bench.finetune_choices --base RUN --corpus xiyouji.txt [--minutes 2]
        [--variants default,lr=1e-3,lr=5e-3,rows=random]

RUN is a leave-one-out base (bench.finetune_gain). Every variant fine-tunes RUN on the corpus (LF, no
BOM, first 90% for training, as nanoGPT's runner prepares it) for the same wall time and is scored on
the last 10% in nats/char. ``KEY=X`` passes ``--KEY X`` (``lr=1e-3``, ``dropout=0``,
``warmup_steps=10``); ``rows=random`` starts the appended tokens' rows as a fresh model's instead of
``finetune.NEW_ROWS``. For the default run it also reports the
probability mass the fine-tuned model still gives, on the validation text, to tokens the training
text never uses ("unused mass"), and the loss a model with those tokens pruned would have at best
(that mass renormalised away), both over the validation positions a pruned model could score (those
whose character the training text never uses are counted separately). One training at a time: run it alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import add_results_option, run_command, write
from bench.finetune_gain import trained_on
from bench.versus_nanogpt import SHARED, textweaver
from textweaver.run import checkpoint

NANOGPT = SHARED / "baselines" / "nanogpt"
RANDOM_ROWS = (
    "import functools, runpy; from textweaver.training import finetune; "
    "finetune.load_weights = functools.partial(finetune.load_weights, rows='random'); "
    "runpy.run_module('textweaver', run_name='__main__')"
)


def prepare(corpus: Path, work: Path) -> None:
    """``work/input.txt``, ``train.txt`` and ``val.txt`` as nanoGPT's runner makes them (LF, no BOM, 90/10)."""
    run_command([sys.executable, str(NANOGPT / "prepare_corpus.py"), str(corpus), str(work)])


@torch.inference_mode()
def unused_mass(run: Path, work: Path) -> dict[str, float]:
    """How much probability the fine-tuned model in ``run`` gives, on val.txt, to tokens train.txt never uses."""
    c = checkpoint.load(run)
    model = c.build_model()
    tokenizer = c.tokenizer
    train_ids = tokenizer.encode((work / "train.txt").read_text(encoding="utf-8"))
    val_ids = tokenizer.encode((work / "val.txt").read_text(encoding="utf-8")).astype(np.int64)
    unused = torch.from_numpy(np.bincount(train_ids, minlength=len(tokenizer)) == 0)
    mass, nats, pruned_nats, misses, scored = 0.0, 0.0, 0.0, 0, 0
    context, state = model.config.context, None
    for j in range(0, len(val_ids) - 1, context):
        x = torch.from_numpy(val_ids[j : j + context]).unsqueeze(0)
        y = torch.from_numpy(val_ids[j + 1 : j + context + 1])
        x = x[:, : len(y)]
        logits, state = model(x, state)
        log_p = torch.log_softmax(logits[0].float(), dim=-1)
        p_unused = log_p[:, unused].exp().sum(-1).clamp(max=1 - 1e-6)
        nll = -log_p.gather(1, y[:, None])[:, 0]
        miss = unused[y]
        mass += float(p_unused.sum())
        nats += float(nll[~miss].sum())
        pruned_nats += float((nll + torch.log1p(-p_unused))[~miss].sum())
        misses += int(miss.sum())
        scored += len(y)
    return {
        "unused_tokens": int(unused.sum()), "vocab": len(tokenizer), "unused_mass": mass / scored,
        "kept_val": nats / max(scored - misses, 1), "pruned_val_at_best": pruned_nats / max(scored - misses, 1),
        "val_tokens_a_pruned_model_cannot_write": misses,
    }  # fmt: skip


def run_variant(work: Path, wall: float, base: str, variant: str) -> dict[str, Any]:
    extra = ["--init-from", base]
    key, _, value = variant.partition("=")
    if key not in ("default", "rows"):
        extra += ["--" + key.replace("_", "-"), value]
    # rows=random: the same command, with load_weights bound to the other way of starting appended rows
    code = ["-c", RANDOM_ROWS] if key == "rows" else None
    return textweaver(work, wall, extra, variant.replace("=", "-"), code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="leave-one-out base (a run folder)")
    parser.add_argument("--corpus", required=True, help="the corpus the base left out (a file name under --corpus-dir)")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--variants", default="default,lr=1e-3,lr=5e-3,rows=random")
    parser.add_argument("--corpus-dir", default=str(SHARED / "corpora"))
    parser.add_argument("--name", default=None, help="results name under --results")
    add_results_option(parser)
    args = parser.parse_args()
    corpus = Path(args.corpus_dir) / args.corpus
    if Path(args.corpus).name in trained_on(args.base):
        raise SystemExit(f"{args.base} was trained on {args.corpus}: give a base that left it out")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare(corpus, work)
        for variant in args.variants.split(","):
            result = run_variant(work, args.minutes * 60, args.base, variant)
            row: dict[str, Any] = {"corpus": args.corpus, "minutes": args.minutes, "variant": variant, **result}
            if variant == "default":
                row.update(unused_mass(work / "default", work))
            rows.append(row)
            print(json.dumps(row, ensure_ascii=False), flush=True)
    columns = ["corpus", "minutes", "variant", "val", "steps", "tokens_per_s", "chose", "unused_tokens",
               "unused_mass", "kept_val", "pruned_val_at_best", "val_tokens_a_pruned_model_cannot_write"]  # fmt: skip
    name = args.name or f"finetune_choices_{Path(args.corpus).stem}"
    notes = f"Base: {args.base}. Losses: nats per character over the last 10%."
    print(write(name, rows, columns, notes, args.results))


if __name__ == "__main__":
    main()
