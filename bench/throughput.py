"""Training throughput and memory: tokens/s and peak RSS per model type and preset, and corpus
encoding speed and peak RSS on a ~200 MB corpus made by repeating the shared corpora.

    python -m bench.throughput [--presets tiny,small,medium] [--corpus-mb 200] [--steps 30]

Each measurement runs in its own process so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import textwrap
from pathlib import Path

from bench.common import add_results_option, run_command, write

ROOT = Path(__file__).resolve().parent.parent

STEP_PROBE = textwrap.dedent("""
    import json, sys, time, torch, torch.nn.functional as F
    from bench.common import peak_rss_mib  # run from the repository root, as python -m bench.throughput is
    from textweaver.config import PRESETS, ModelConfig
    from textweaver.models import build_model
    kind, preset, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
    p = PRESETS[kind][preset]
    model = build_model(ModelConfig(kind=kind, vocab_size=65, n_layer=p.n_layer, n_embd=p.n_embd,
                                    n_head=p.n_head, context=p.context))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randint(0, 65, (p.batch_size, p.context)); y = torch.randint(0, 65, (p.batch_size, p.context))
    for i in range(steps + 3):
        if i == 3:
            start = time.perf_counter()
        logits, _ = model(x)
        loss = F.cross_entropy(logits.view(-1, 65), y.view(-1))
        loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    dt = (time.perf_counter() - start) / steps
    print(json.dumps({"tokens_per_s": p.batch_size * p.context / dt, "ms_per_step": dt * 1000,
                      "peak_rss_mib": peak_rss_mib()}))
""")

ENCODE_PROBE = textwrap.dedent("""
    import json, sys, time
    from bench.common import peak_rss_mib  # run from the repository root, as python -m bench.throughput is
    from pathlib import Path
    from textweaver.data.corpus import resolve_paths
    from textweaver.data.dataset import DataOptions, prepare
    start = time.perf_counter()
    data = prepare(resolve_paths([sys.argv[1]]), Path(sys.argv[2]), DataOptions(level=sys.argv[3]))
    dt = time.perf_counter() - start
    size = Path(sys.argv[1]).stat().st_size
    print(json.dumps({"mb_per_s": size / 1e6 / dt, "seconds": dt, "tokens": len(data.train) + len(data.val),
                      "peak_rss_mib": peak_rss_mib()}))
""")


def probe(code: str, *args: str) -> dict[str, float]:
    out = run_command([sys.executable, "-c", code, *args]).stdout
    return dict(json.loads(out.strip().splitlines()[-1]))


def big_corpus(path: Path, megabytes: int, corpus_dir: Path) -> None:
    parts = [p.read_bytes() for p in sorted(corpus_dir.glob("*.txt")) + sorted(corpus_dir.glob("*.c"))]
    written = 0
    with path.open("wb") as f:
        while written < megabytes * 1_000_000:
            for part in parts:
                f.write(part)
                written += len(part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="tiny,small,medium")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--corpus-mb", type=int, default=200)
    parser.add_argument("--corpus-dir", default=str(ROOT.parent / "shared" / "corpora"))
    add_results_option(parser)
    args = parser.parse_args()
    rows = []
    for kind in ("lstm", "gru", "transformer"):
        for preset in args.presets.split(","):
            rows.append({"what": f"train {kind} {preset}", **probe(STEP_PROBE, kind, preset, str(args.steps))})
            print(rows[-1], flush=True)
    if args.corpus_mb:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "big.txt"
            big_corpus(corpus, args.corpus_mb, Path(args.corpus_dir))
            for level in ("char", "word"):
                result = probe(ENCODE_PROBE, str(corpus), str(Path(tmp) / f"cache-{level}"), level)
                rows.append({"what": f"encode {corpus.stat().st_size / 1e6:.0f} MB ({level})", **result})
                print(rows[-1], flush=True)
    columns = ["what", "tokens_per_s", "ms_per_step", "mb_per_s", "seconds", "peak_rss_mib"]
    notes = "Training: random ids, preset batch x context. Encoding: cold cache."
    print(write("throughput", rows, columns, notes, args.results))


if __name__ == "__main__":
    main()
