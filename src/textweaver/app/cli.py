"""The ``textweaver`` command: parses options, calls the API, prints. Nothing else lives here.

Errors caused by input print one line (``textweaver: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from textweaver import __version__
from textweaver.app.options import USER_SOURCES, config_options, config_values
from textweaver.app.studio.workspace import DEFAULT_WORKSPACE, MAX_UPLOAD
from textweaver.config import (
    BUILTINS,
    PRESETS,
    ModelConfig,
    TrainConfig,
)
from textweaver.errors import TextweaverError
from textweaver.generation.generator import GenerationRequest
from textweaver.generation.sampling import SamplingOptions
from textweaver.report.report import REPORT_FILE, after_training, write_report

app = typer.Typer(
    name="textweaver",
    help="Train a small language model on any text you own, then generate new text in its style.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)

# Typer may bundle its own copy of click, so take click's exception classes from Typer itself.
UsageError: type[Exception] = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")
RunDir = Annotated[
    str,
    typer.Argument(
        help="A training run's --out folder (its best/, else last/), a checkpoint folder, "
        f"or a model shipped with textweaver: {BUILTINS}."
    ),
]


def _version(value: bool) -> None:
    if value:
        print(f"textweaver {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Train a small language model on any text you own, then generate new text in its style."""


@app.command()
@config_options(TrainConfig)
def train(
    ctx: typer.Context,
    corpus: Annotated[
        list[str],
        typer.Argument(
            help="Text files, folders (searched recursively, see --glob) or builtin:shakespeare.", show_default=False
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run directory for checkpoints, logs and samples.", show_default=False)
    ],
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue RUN_DIR/last if it exists (else start fresh), "
            "so a job can be relaunched with the same command.",
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a live progress bar.")] = True,
    **options: Any,
) -> None:
    """Train a model on CORPUS and save checkpoints in --out.

    Ctrl-C (or SIGTERM) saves a checkpoint and exits; run the same command with --resume to go on.
    Every option but --out, --resume and --progress is a field of config.TrainConfig.
    """
    from textweaver.training.finetune import SOURCE_OPTIONS
    from textweaver.training.loop import RESUMABLE_OVERRIDES
    from textweaver.training.loop import train as run_training

    # on --resume only the options given on this command line replace the run's stored ones (by name:
    # typer may bring its own copy of click's ParameterSource)
    given = [k for k in RESUMABLE_OVERRIDES + SOURCE_OPTIONS
             if getattr(ctx.get_parameter_source(k), "name", "") in USER_SOURCES]  # fmt: skip
    config = TrainConfig(**config_values(TrainConfig, options))
    run_training(corpus, out, config, resume=resume, progress=progress and sys.stderr.isatty(), given=given,
                 finished=after_training)  # fmt: skip


@app.command()
@config_options(GenerationRequest, SamplingOptions)
def generate(
    run_dir: RunDir,
    prompt_file: Annotated[
        Path | None,
        typer.Option(
            help="Read the start text from this UTF-8 file, exactly as stored (a final newline is part of it); "
            "instead of --prompt.",
            show_default=False,
        ),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print characters as they are generated (one sample only).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the samples and settings as one JSON object.")] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write what stdout would get (the text, or the --json) to this file instead; it is written whole "
            "at the end or not at all (an existing file is replaced only then).",
            show_default=False,
        ),
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "cpu",
    **options: Any,
) -> None:
    """Generate text from a trained model. Only the text goes to stdout (the prompt, then the continuation)."""
    from textweaver.app.api import load
    from textweaver.generation.generator import check_output, describe, read_prompt_file, write_output

    if stream and options["num_samples"] > 1:
        raise TextweaverError("--stream prints one sample: drop --stream or --num-samples")
    if stream and as_json:
        raise TextweaverError("--stream and --json do not mix: choose one")
    if stream and output is not None:
        raise TextweaverError("--stream prints as it goes, --output writes the file whole at the end: choose one")
    if options["prompt"] is not None and prompt_file is not None:
        raise TextweaverError("--prompt and --prompt-file both give the start text: choose one")
    if output is not None:
        check_output(output)
    if prompt_file is not None:
        options["prompt"] = read_prompt_file(prompt_file)
    model = load(run_dir, device)
    request = model.request(**options)
    if stream:
        for pieces in model.generator.stream(request):
            sys.stdout.write(pieces[0])
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    texts = model.generator.generate(request)
    if as_json:
        payload = {"samples": texts, "settings": describe(request), "checkpoint": str(model.checkpoint.directory)}
        result = json.dumps(payload, ensure_ascii=False, indent=2)
    else:
        result = "\n-----\n".join(texts)
    if output is None:
        print(result)
    else:
        write_output(output, result + "\n")


@app.command("eval")
def evaluate(
    run_dir: RunDir,
    files: Annotated[
        list[Path],
        typer.Argument(
            help="Text files or folders to score (folders are searched with the run's --glob, as train does).",
            show_default=False,
        ),
    ],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object, with each file under 'files'.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "cpu",
) -> None:
    """Score a model on text files: nats/token, bits/char, perplexity, tokens, chars, unknown-token rate,
    over all files and (for several) per file."""
    from textweaver.app.api import load

    result = load(run_dir, device).evaluate(files)
    if as_json:
        print(json.dumps(result, ensure_ascii=False))
        return
    per_file = result.pop("files")
    for name, value in result.items():
        print(f"{name:>15}: {value:.4f}" if isinstance(value, float) else f"{name:>15}: {value:,}")
    if len(per_file) > 1:
        print()
        for f in per_file:
            print(f"{f['bits_per_char']:8.4f} bits/char {f['nats_per_token']:8.4f} nats/token "
                  f"{f['tokens']:>12,} tokens  {f['file']}")  # fmt: skip


@app.command()
def info(
    run_dir: RunDir,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Describe a trained model: architecture, size, vocabulary, corpus, metrics."""
    from textweaver.app.api import load

    details = load(run_dir).info()
    if as_json:
        print(json.dumps(details, ensure_ascii=False, indent=2))
        return
    metrics = details.pop("metrics")
    for name, value in details.items():
        print(f"{name:>12}: {', '.join(map(str, value)) if isinstance(value, list) else value}")
    for name in ("step", "elapsed_s", "train_loss", "val_loss", "val_bpc", "best_val_loss"):
        if metrics.get(name) is not None:
            value = metrics[name]
            print(f"{name:>12}: {value:.4f}" if isinstance(value, float) else f"{name:>12}: {value}")


PageTitle = Annotated[
    str | None,
    typer.Option(help="Page title. Default: the corpus file names.", show_default=False),
]
PageDescription = Annotated[
    str | None,
    typer.Option(help="Text under the title. Default: model, corpus and validation loss.", show_default=False),
]


@app.command()
def export(
    run_dir: RunDir,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Folder to write (new, empty, or an earlier export).", show_default=False),
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx: model.onnx (one generation step) + tokenizer.json + prompts.json; "
            "web: those plus a static page that runs the model in the browser.",
        ),
    ] = "onnx",
    quantize: Annotated[
        str | None,
        typer.Option(
            help="Web only: store weights as int8 or fp16 for a smaller download. Default: float32.",
            show_default=False,
        ),
    ] = None,
    title: PageTitle = None,
    description: PageDescription = None,
    train_panel: Annotated[
        bool,
        typer.Option(
            help="Web only: let the page fine-tune the model on the visitor's own text (LSTM/GRU; adds "
            "the training step and float32 weights, docs/web.md)."
        ),
    ] = False,
) -> None:
    """Export a trained model as ONNX, or as a static web page that works offline with any static server."""
    from textweaver.export.site import export as run_export

    result = run_export(run_dir, out, fmt, quantize, title, description, train=train_panel)
    print(f"wrote {result.directory}/ ({result.total_bytes / 1e6:.1f} MB)")
    for name, size in result.files.items():
        print(f"  {name:<48} {size / 1e6:>8.2f} MB")
    if fmt == "web":
        print(f"try it: python -m http.server -d {result.directory}, then open http://127.0.0.1:8000/")


@app.command()
def report(
    run_dir: Annotated[
        Path, typer.Argument(help="A training run's --out folder; a run still training gets what it has so far.")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help=f"HTML file to write. Default: RUN_DIR/{REPORT_FILE}.", show_default=False),
    ] = None,
) -> None:
    """Write a run's report: one HTML file (loss curves, learning rate, speed, samples, settings) that opens offline."""
    print(write_report(run_dir, out))


@app.command()
def serve(
    run_dir: RunDir,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; 0.0.0.0 opens it to the network (no authentication). It answers only "
            "to 127.0.0.1, localhost, [::1] and this address (with 0.0.0.0: any IP address)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    title: PageTitle = None,
    description: PageDescription = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "cpu",
    workers: Annotated[int, typer.Option(help="Generations that run at once.")] = 2,
    queue: Annotated[int, typer.Option(help="Generations that may wait for a worker; more get 503 + Retry-After.")] = 8,
    timeout: Annotated[
        float,
        typer.Option(help="Seconds one request may take, waiting included; then 504, or an `error` event in a stream."),
    ] = 60.0,
) -> None:
    """Serve the web page and a JSON API (/api/generate, /api/info, /api/prompt; schema at /openapi.json)."""
    from textweaver.app.serve import serve as run_server

    run_server(run_dir, host=host, port=port, device=device, title=title, description=description,
               workers=workers, queue=queue, timeout=timeout)  # fmt: skip


@app.command()
def studio(
    workspace: Annotated[
        str, typer.Option(help="Folder for the studio's texts and runs (created if missing).")
    ] = DEFAULT_WORKSPACE,
    host: Annotated[
        str,
        typer.Option(
            help="Address to listen on; any other than 127.0.0.1 opens it to the network (no login). It answers "
            "only to 127.0.0.1, localhost, [::1] and this address (with 0.0.0.0: any IP address)."
        ),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    max_upload: Annotated[str, typer.Option(help="Largest text file accepted, e.g. 200MB, 1GB or 500KB.")] = MAX_UPLOAD,
) -> None:
    """A local web app: upload a text, train with a live loss chart, generate, download the web page."""
    from textweaver.app.studio.app import serve_studio

    serve_studio(workspace, host=host, port=port, max_upload=max_upload)


@app.command()
def presets() -> None:
    """List the named model sizes with their parameter counts (for a 65-character vocabulary)."""
    from textweaver.models import build_model, num_parameters

    header = ("model", "preset", "layers", "width", "heads", "context", "batch", "lr", "params", "note")
    rows = []
    for kind, table in PRESETS.items():
        for name, p in table.items():
            cfg = ModelConfig(kind=kind, vocab_size=65, n_layer=p.n_layer, n_embd=p.n_embd, n_head=p.n_head)
            heads = p.n_head if kind == "transformer" else "-"
            n = num_parameters(build_model(cfg))
            rows.append(
                (kind, name, p.n_layer, p.n_embd, heads, p.context, p.batch_size, f"{p.lr:g}", f"{n:,}", p.note)
            )
    for row in (header, *rows):
        print("{:<12} {:<7} {:>6} {:>6} {:>5} {:>7} {:>5} {:>7} {:>11}  {}".format(*row))


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns every input error into one line and exit status 2."""
    try:
        result: Any = app(args=argv, prog_name="textweaver", standalone_mode=False)
    except UsageError as e:
        ctx = getattr(e, "ctx", None)
        command = ctx.command_path if ctx else "textweaver"
        message = " ".join(e.format_message().split())  # type: ignore[attr-defined]
        print(f"textweaver: error: {message} (see '{command} --help')", file=sys.stderr)
        sys.exit(2)
    except TextweaverError as e:
        print(f"textweaver: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        print("textweaver: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # e.g. `textweaver generate ... | head`
        sys.stderr.close()
        sys.exit(0)
    sys.exit(result if isinstance(result, int) else 0)
