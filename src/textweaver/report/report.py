"""``textweaver report``: one self-contained HTML file that tells the story of a training run.

It shows the loss curves, learning rate and tokens/s over time (``metrics.jsonl``), the samples of
each evaluation (``samples.jsonl``), and the model, corpus, configuration and the automatic recipe's
reasons (the checkpoint's ``config.json``). Everything is inlined: uPlot (``web/vendor/uplot``), the
chart component (``web/shared/chart.js``, which the studio uses too), the page's colours (``web/style.css``)
and the data. The file therefore opens offline, straight from disk. Its Content-Security-Policy
allows only those inlined scripts and styles, by SHA-256 hash, and nothing from the network.

It reads what is there without locking or repairing anything, so it also reports a run that is
still training. Training writes ``RUN_DIR/report.html`` when it ends.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import json
import math
import time
from pathlib import Path
from string import Template
from typing import Any

import torch
from rich.console import Console

from textweaver import __version__
from textweaver.config import ModelConfig
from textweaver.data.corpus import LISTED_FILES, describe_file, summarize_files
from textweaver.errors import TextweaverError
from textweaver.export.site import WEB_DIR
from textweaver.models import build_model, num_parameters
from textweaver.run import checkpoint
from textweaver.run import log as runlog
from textweaver.run.log import Evaluation

REPORT_FILE = "report.html"  # written into the run folder unless --out says otherwise
SCRIPTS = ("vendor/uplot/uPlot.iife.min.js", "shared/chart.js")  # inlined in this order, before the page script
STYLES = ("style.css", "vendor/uplot/uPlot.min.css")
CHART_KEYS = ("step", "elapsed_s", "train_loss", "val_loss", "lr", "tokens_per_s")  # of each metrics record

PAGE_SCRIPT = """
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const charts = window.TextweaverChart;
  const xs = data.points.map((p) => p.elapsed_s);
  charts.lossChart(document.getElementById("loss-chart"), { yLabel: data.unit })
    .setRuns([{ name: data.name, points: data.points }]);
  charts.lineChart(document.getElementById("lr-chart"), { yLabel: "learning rate", ariaLabel: data.labels.lr })
    .setSeries(xs, data.points.map((p) => p.lr));
  charts.lineChart(document.getElementById("speed-chart"), { yLabel: "tokens/s", ariaLabel: data.labels.speed })
    .setSeries(xs, data.points.map((p) => p.tokens_per_s));
})();
"""

REPORT_CSS = """
.chart { width: 100%; margin: 0.5rem 0; }
.summary { display: grid; grid-template-columns: max-content 1fr; gap: 0.3rem 1rem; margin: 0; }
.summary dt { font-weight: 600; }
.summary dd { margin: 0; overflow-wrap: anywhere; }
h3 { font-size: 0.95rem; margin: 1rem 0 0.3rem; }
.sample { white-space: pre-wrap; overflow-wrap: anywhere; background: var(--bg); border-radius: 8px;
  padding: 0.6rem 0.75rem; margin: 0.3rem 0 0.8rem; }
.sample .prompt { color: var(--prompt); font-weight: 600; }
.settings { border-collapse: collapse; width: 100%; }
.settings th, .settings td { text-align: left; vertical-align: top; padding: 0.25rem 0.75rem 0.25rem 0;
  border-bottom: 1px solid var(--border); overflow-wrap: anywhere; }
.settings th { font-weight: 600; width: 1%; white-space: nowrap; }
@media (max-width: 32rem) { .summary { grid-template-columns: 1fr; gap: 0; } .summary dd { margin-bottom: 0.5rem; } }
"""

PAGE = Template("""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="referrer" content="no-referrer">
<title>textweaver report: $name</title>
<link rel="icon" href="data:,">
<style>$style</style>
</head>
<body>
<main>
<header>
<h1>Run report: $name</h1>
<p class="muted">$subtitle</p>
</header>
<section class="card" aria-labelledby="summary-heading">
<h2 id="summary-heading">Summary</h2>
<dl class="summary">$summary</dl>
</section>
<section class="card" aria-labelledby="loss-heading">
<h2 id="loss-heading">Loss</h2>
<p class="muted">Training loss (dashed) and validation loss (solid, one dot per evaluation) in $unit,
against training time. Lower is better; validation rising while training falls means overfitting.</p>
<div id="loss-chart" class="chart"></div>
<noscript>The charts need JavaScript; the numbers are in metrics.jsonl.</noscript>
</section>
<section class="card" aria-labelledby="lr-heading">
<h2 id="lr-heading">Learning rate</h2>
<div id="lr-chart" class="chart"></div>
</section>
<section class="card" aria-labelledby="speed-heading">
<h2 id="speed-heading">Speed</h2>
<div id="speed-chart" class="chart"></div>
</section>
<section class="card" aria-labelledby="samples-heading">
<h2 id="samples-heading">Samples</h2>
$samples
</section>
<section class="card" aria-labelledby="config-heading">
<h2 id="config-heading">Configuration</h2>
$configuration
</section>
<footer class="muted">Written by textweaver $version. Self-contained: it needs no network and no other file.</footer>
</main>
<script type="application/json" id="report-data">$data</script>
$scripts
</body>
</html>
""")


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the run in ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``) atomically."""
    run_dir = Path(run_dir)
    page = render_report(run_dir)
    target = Path(out) if out is not None else run_dir / REPORT_FILE
    _write(target, page)
    return target


def render_report(run_dir: Path) -> str:
    """The report of the run in ``run_dir`` as it stands now, as one HTML page."""
    return render(run_dir, read_metrics(run_dir), _read_config(run_dir), read_samples(run_dir))


def after_training(run_dir: Path, console: Console) -> None:
    """Training's last act: the report, or one warning line. A finished run never fails over its report."""
    try:
        write_report(run_dir)
    except Exception as e:  # whatever went wrong, the checkpoints are saved and the run has succeeded
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        console.print(f"warning: no {REPORT_FILE} written ({reason}); retry with: textweaver report {run_dir}",
                      markup=False, highlight=False)  # fmt: skip


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl``, or one line saying why there are none."""
    if not run_dir.is_dir():
        raise TextweaverError(f"{run_dir}: no such run directory: give the --out folder of a training run")
    if not any((run_dir / name).exists() for name in (runlog.METRICS, "best", "last", "cache")):
        raise TextweaverError(
            f"{run_dir}: not a training run (no metrics.jsonl, best/ or last/): give the --out folder of a training run"
        )
    try:
        records, _ = runlog.read_metrics(run_dir)
    except OSError as e:
        raise TextweaverError(
            f"{run_dir / runlog.METRICS}: unreadable ({e.strerror or e}): check its permissions"
        ) from None
    if not records:
        raise TextweaverError(
            f"{run_dir}: no metrics yet: the run's first evaluation (every --eval-every steps, and at the end) "
            "writes them; make the report after it"
        )
    return records


def read_samples(run_dir: Path) -> list[Evaluation]:
    try:
        return runlog.read_samples(run_dir)
    except OSError as e:
        raise TextweaverError(
            f"{run_dir / runlog.SAMPLES}: unreadable ({e.strerror or e}): check its permissions"
        ) from None


def render(run_dir: Path, records: list[dict[str, Any]], config: dict[str, Any], samples: list[Evaluation]) -> str:
    """The whole page: the parts as escaped HTML, the chart data as JSON, the scripts and styles inlined."""
    name = run_dir.resolve().name
    level = config.get("tokenizer", {}).get("level", "char")
    unit = "nats/char" if level == "char" else "nats/token"
    points = [{key: _finite(record.get(key)) for key in CHART_KEYS} for record in records]
    data = {"name": name, "unit": unit, "points": points, "labels": _chart_labels(points)}
    # "<\/" means "</" in JavaScript, and cannot end the <script> element early
    scripts = [(WEB_DIR / path).read_text(encoding="utf-8").replace("</", "<\\/") for path in SCRIPTS]
    scripts.append(PAGE_SCRIPT)
    style = "\n".join((WEB_DIR / path).read_text(encoding="utf-8") for path in STYLES) + REPORT_CSS
    csp = (
        f"default-src 'none'; script-src {' '.join(map(_hash, scripts))}; style-src {_hash(style)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    return PAGE.substitute(
        csp=csp, name=_esc(name), style=style, unit=unit, version=_esc(__version__),
        subtitle=_esc(f"Step {_count(records[-1], 'step')} · written {time.strftime('%Y-%m-%d %H:%M')} from "
                      "metrics.jsonl, samples.jsonl and the checkpoint's config.json"),
        summary="".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in _summary(records, config).items()),
        samples=_samples_html(samples), configuration=_config_html(config),
        data=_json_for_html(data), scripts="\n".join(f"<script>{s}</script>" for s in scripts),
    )  # fmt: skip


def _summary(records: list[dict[str, Any]], config: dict[str, Any]) -> dict[str, str]:
    last = records[-1]
    model = config.get("model", {})
    tokenizer = config.get("tokenizer", {})
    corpus = config.get("corpus", {})
    files = [
        describe_file({**f, "path": Path(str(f.get("path", "?"))).name})  # a folder of many files: how many, what size
        if "files" in f else f"{Path(str(f.get('path', '?'))).name} ({f.get('tokens', 0):,} tokens)"
        for f in summarize_files(corpus.get("files", []), LISTED_FILES)
    ]  # fmt: skip
    losses = [r["val_loss"] for r in records if _finite(r.get("val_loss")) is not None]
    bpc = [r["val_bpc"] for r in records if _finite(r.get("val_bpc")) is not None]
    heads = f", {model.get('n_head')} heads" if model.get("kind") == "transformer" else ""
    rows = {
        "Corpus": ", ".join(files) or None,
        "Split": f"{corpus['train_tokens']:,} training / {corpus['val_tokens']:,} validation tokens"
        if "train_tokens" in corpus and "val_tokens" in corpus else None,
        "Model": f"{model['kind']} {model['n_layer']}x{model['n_embd']}, context {model['context']}{heads}"
        if {"kind", "n_layer", "n_embd", "context"} <= model.keys() else None,
        "Vocabulary": f"{tokenizer['vocab_size']:,} tokens ({tokenizer.get('level', '?')} level)"
        if "vocab_size" in tokenizer else None,
        "Parameters": f"{n:,}" if (n := _parameters(model)) else None,
        "Trained": f"{_count(last, 'step')} steps, {_count(last, 'tokens')} tokens in "
        f"{_clock(_finite(last.get('elapsed_s')) or 0)}",
        "Speed": f"{last['tokens_per_s']:,.0f} tokens/s (latest)" if _finite(last.get("tokens_per_s")) else None,
        "Best validation loss": (f"{min(losses):.4f} nats/token" + (f", {min(bpc):.4f} bits/char" if bpc else ""))
        if losses else None,
        "Started from": _started_from(config.get("train", {}).get("extra", {}).get("init_from")),
    }  # fmt: skip
    return {k: v for k, v in rows.items() if v}


def _started_from(record: dict[str, Any] | None) -> str | None:
    """A fine-tuned run's source: what it is and how many tokens the new corpus added to its vocabulary."""
    if not record:
        return None
    added = record.get("added_tokens", 0)
    return f"{record.get('source')} ({record.get('model')}, {record.get('vocab_size', 0):,} tokens, {added:,} added)"


def _parameters(model: dict[str, Any]) -> int | None:
    """The model's parameter count, from its configuration alone (no weights are read)."""
    try:
        with torch.device("meta"):
            return num_parameters(build_model(ModelConfig(**model)))
    except (TypeError, ValueError, KeyError, TextweaverError):
        return None


def _samples_html(samples: list[Evaluation]) -> str:
    if not samples:
        return '<p class="muted">No samples yet: each evaluation writes some.</p>'
    parts = []
    for i, evaluation in enumerate(reversed(samples)):  # newest first, and open
        texts = []
        for temperature, text in evaluation.texts:
            prompt = evaluation.prompt if evaluation.prompt and text.startswith(evaluation.prompt) else ""
            texts.append(
                f"<h3>Temperature {_esc(temperature)}</h3>"
                f'<div class="sample"><span class="prompt">{_esc(prompt)}</span>{_esc(text[len(prompt) :])}</div>'
            )
        parts.append(
            f"<details{' open' if i == 0 else ''}><summary>Step {evaluation.step:,}</summary>{''.join(texts)}</details>"
        )
    note = '<p class="muted">The prompt (a validation excerpt) is highlighted; the rest is the model\'s.</p>'
    return note + "".join(parts)


def _config_html(config: dict[str, Any]) -> str:
    train = dict(config.get("train", {}))
    recipe = train.pop("extra", {}).get("recipe")
    parts = []
    if recipe:
        reasons = "".join(f"<li>{_esc(r)}</li>" for r in recipe.get("reasons", []))
        parts.append(f"<h3>Chosen automatically</h3><p>{_esc(recipe.get('summary', ''))}</p><ul>{reasons}</ul>")
    for title, table in (("Training options", train), ("Model", config.get("model", {}))):
        rows = "".join(f'<tr><th scope="row">{_esc(k)}</th><td>{_esc(_shown(v))}</td></tr>' for k, v in table.items())
        parts.append(f'<h3>{title}</h3><table class="settings">{rows}</table>')
    return "".join(parts)


def _chart_labels(points: list[dict[str, Any]]) -> dict[str, str]:
    """Accessible names of the learning-rate and speed charts: what they show, in numbers."""

    def span(key: str) -> str:
        values = [p[key] for p in points if p[key] is not None]
        return f"from {values[0]:.3g} to {values[-1]:.3g}" if values else "no records yet"

    return {"lr": f"Learning rate over training time, {span('lr')}",
            "speed": f"Training speed in tokens per second over training time, {span('tokens_per_s')}"}  # fmt: skip


def _write(path: Path, text: str) -> None:
    if path.is_dir():
        raise TextweaverError(f"{path} is a folder: give --out a file name, such as {path / REPORT_FILE}")
    if not path.parent.is_dir():
        raise TextweaverError(f"{path.parent}: no such folder: create it or choose another --out")
    try:
        runlog.write_atomically(path, text.encode("utf-8"))
    except OSError as e:
        raise TextweaverError(
            f"{path}: cannot write the report ({e.strerror or e}): free disk space or choose another --out"
        ) from None


def _read_config(run_dir: Path) -> dict[str, Any]:
    """The newest checkpoint's config.json (last/, else best/), read without recovering or locking
    anything: a run still training may be swapping one of them in at this moment."""
    for name in ("last", "best"):
        with contextlib.suppress(OSError, UnicodeDecodeError, json.JSONDecodeError):
            config = json.loads((run_dir / name / checkpoint.CONFIG).read_text(encoding="utf-8"))
            if isinstance(config, dict):
                return config
    raise TextweaverError(
        f"{run_dir}: no readable checkpoint (config.json in last/ or best/): restore the checkpoint or retrain"
    )


def _json_for_html(data: object) -> str:
    """JSON that cannot end its <script> element or open a comment, whatever the texts contain."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _hash(source: str) -> str:
    """A CSP source that allows exactly this inline script or style."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def _finite(value: object) -> float | int | None:
    """A number JSON can carry (NaN and infinities cannot), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _count(record: dict[str, Any], key: str) -> str:
    value = _finite(record.get(key))
    return "?" if value is None else f"{value:,.0f}"


def _shown(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return ", ".join(map(_shown, value)) or "–"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _clock(seconds: float) -> str:
    """75 -> "1:15", 3725 -> "1:02:05" (as the charts' time axis)."""
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)
