"""Fine-tuning in the page, measured: a base model's page (export --train-panel) fine-tuned in headless Chromium
on a text the base never saw, for each time budget: the validation loss before and after, the steps and the
tokens/s of one WebAssembly thread, next to PyTorch's own step (what `textweaver train --precision fp32
--threads 1` runs: forward, backward, clipping, fused AdamW) on the same model, batch and window.

    python -m bench.page_training --base builtin:english --text src/textweaver/assets/corpora/jekyll_and_hyde.txt
    python -m bench.page_training --base scripts/snapshots/chinese-loo-final \\
        --text ../shared/corpora/zh/jinghuayuan.txt --chars 200000 --name page_training_zh

Run it alone on the machine (a benchmark). Needs Debian's chromium at /usr/bin/chromium and playwright.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import add_results_option, write
from bench.web import CHROMIUM, FLAGS, serve_static
from textweaver.export.site import export
from textweaver.export.train_step import PAGE_BATCH, PAGE_CONTEXT
from textweaver.run import checkpoint
from textweaver.training.setup import _optimizer

RESPONSIVE_SAMPLES = 20  # main-thread round trips measured while the worker trains, 0.5 s apart


def pytorch_tokens_per_s(base: str, steps: int = 8) -> float:
    """PyTorch's training step on one thread, float32, the page's batch: median tokens/s after a warm-up."""
    torch.set_num_threads(1)
    model = checkpoint.load(base).build_model("cpu").train()
    optimizer = _optimizer(model, 0.1, 1e-3, torch.device("cpu"))
    ids = torch.randint(0, model.config.vocab_size, (PAGE_BATCH, PAGE_CONTEXT + 1))
    times = []
    for _ in range(steps + 2):
        start = time.perf_counter()
        loss, _ = model(ids[:, :-1], None, ids[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return PAGE_BATCH * PAGE_CONTEXT / statistics.median(times[2:])


def click_ms(page: Any) -> float:
    """A visitor's click, timed: its handler runs after whatever the main thread is doing, so opening "Advanced"
    and reading its state back takes what a click waits."""
    started = time.perf_counter()
    page.evaluate("() => { const d = document.querySelector('details'); d.open = !d.open; return d.open; }")
    return (time.perf_counter() - started) * 1000


def fine_tune(context: Any, url: str, text: Path, budget_min: float) -> dict[str, Any]:
    """Choose the text, train for the budget, and read what the panel shows."""
    page = context.new_page()
    page.goto(url)
    page.wait_for_selector("#train-card[data-state='idle']", timeout=120_000)
    started = time.perf_counter()
    page.get_by_label("Your text", exact=True).set_input_files(str(text))
    reading = []  # the main thread while the worker reads and encodes the file
    while (state := page.get_attribute("#train-card", "data-state")) != "ready":
        if state in ("error", "unreadable") or time.perf_counter() - started > 300:
            raise SystemExit(f"the page did not read {text.name}: {page.text_content('#train-status')}")
        reading.append(click_ms(page))
        time.sleep(0.2)
    read_s = time.perf_counter() - started
    page.get_by_label("Time budget", exact=True).select_option(f"{budget_min:g}")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_function(
        "() => /^\\d+\\.\\d{3}$/.test(document.getElementById('train-val-loss').textContent)", timeout=600_000
    )
    before = float(page.text_content("#train-val-loss"))
    # the page's main thread while the worker trains
    latencies = []
    for _ in range(RESPONSIVE_SAMPLES):
        time.sleep(0.5)
        latencies.append(click_ms(page))
    page.wait_for_selector("#train-card[data-state='done'], #train-card[data-state='error']",
                           timeout=int(budget_min * 60_000 + 600_000))  # fmt: skip
    status = page.text_content("#train-status")
    if page.get_attribute("#train-card", "data-state") != "done":
        raise SystemExit(f"the page's training failed: {status}")
    row = {
        "budget_min": budget_min, "val_before": before, "val_after": float(page.text_content("#train-val-loss")),
        "steps": int(page.text_content("#train-step").replace(",", "")),
        "page_tokens_per_s": float(page.text_content("#train-rate").replace(",", "")),
    }  # fmt: skip
    row["after_vs_before"] = row["val_after"] / row["val_before"]
    row["click_ms_median"], row["click_ms_max"] = statistics.median(latencies), max(latencies)
    row["mb"], row["read_s"] = text.stat().st_size / 1e6, read_s
    row["read_click_ms_max"] = max(reading, default=0.0)
    page.evaluate("indexedDB.databases().then(dbs => dbs.forEach(d => indexedDB.deleteDatabase(d.name)))")
    page.close()
    return row


def main() -> None:
    from playwright.sync_api import sync_playwright

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="a run or builtin:NAME (LSTM/GRU)")
    parser.add_argument("--text", type=Path, required=True, help="a text the base never saw")
    parser.add_argument("--chars", type=int, default=None, help="use only the first N characters of --text")
    parser.add_argument("--budgets", type=float, nargs="+", default=[1.0, 3.0], help="minutes, from the page's list")
    parser.add_argument("--name", default="page_training")
    add_results_option(parser)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
        text = args.text
        if args.chars is not None:
            text = Path(tmp) / args.text.name
            text.write_text(args.text.read_text(encoding="utf-8")[: args.chars], encoding="utf-8")
        started = time.perf_counter()
        with_panel = export(args.base, Path(tmp) / "site", "web", train=True)
        export_s = time.perf_counter() - started
        without = export(args.base, Path(tmp) / "plain", "web")
        httpd, url = serve_static(with_panel.directory)
        for budget in args.budgets:
            context = p.chromium.launch_persistent_context(
                str(Path(tmp) / f"profile-{budget}"), executable_path=CHROMIUM, headless=True, args=FLAGS
            )
            rows.append(fine_tune(context, url, text, budget))
            context.close()
            print(json.dumps(rows[-1]), flush=True)
        httpd.shutdown()
    torch_rate = pytorch_tokens_per_s(args.base)
    for row in rows:
        row["pytorch_fp32_1thread_tokens_per_s"] = torch_rate
        row["page_vs_pytorch"] = row["page_tokens_per_s"] / torch_rate
    chars = len(text.read_text(encoding="utf-8")) if args.chars is None else args.chars
    notes = (
        f"Base {args.base}, fine-tuned in the page on {args.text.name} ({chars:,} characters; the last tenth is the "
        f"validation tail), batch {PAGE_BATCH} x {PAGE_CONTEXT}, headless Chromium, one WebAssembly thread. "
        f"val_before: the base's loss on that tail (nats per character). PyTorch: the same step in float32 on one "
        f"thread, {torch_rate:,.0f} tokens/s. Page download {without.total_bytes / 1e6:.1f} MB without the Train "
        f"panel, {with_panel.total_bytes / 1e6:.1f} MB with it; exporting with it took {export_s:.0f} s. click_ms: "
        f"a round trip to the page's main thread (toggling a <details>) while the worker trains, "
        f"{RESPONSIVE_SAMPLES} samples 0.5 s apart; read_s: choosing the file until the panel is ready to train (read "
        f"in slices, decoded, encoded, the base's loss on the tail not yet), read_click_ms_max the slowest click then, "
        f"sampled every 0.2 s."
    )
    columns = ["budget_min", "val_before", "val_after", "after_vs_before", "steps", "page_tokens_per_s",
               "pytorch_fp32_1thread_tokens_per_s", "page_vs_pytorch", "click_ms_median", "click_ms_max",
               "mb", "read_s", "read_click_ms_max"]  # fmt: skip
    print(write(args.name, rows, columns, notes, args.results))


if __name__ == "__main__":
    main()
