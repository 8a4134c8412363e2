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
from textweaver.app.studio.workspace import DEFAULT_WORKSPACE, MAX_UPLOAD
from textweaver.config import (
    AUTO_DROPOUT,
    AUTO_DROPOUT_AFTER_STEPS,
    AUTO_DROPOUT_EPOCHS,
    AUTO_DROPOUT_WIDTH,
    DEFAULT_MODEL,
    DEFAULT_PRESET,
    EVAL_SHARE,
    EVALS_PER_BUDGET,
    MODEL_KINDS,
    PRESETS,
    PRETRAINED,
    ModelConfig,
    TrainConfig,
    dropout_passes,
    parse_duration,
)
from textweaver.errors import TextweaverError
from textweaver.generation.generator import GenerationRequest
from textweaver.generation.sampling import SamplingOptions
from textweaver.report.report import REPORT_FILE, after_training, write_report
from textweaver.training.recipe import BF16_MIN_SPEEDUP

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
BUILTINS = ", ".join("builtin:" + name for name in PRETRAINED)
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


USER_SOURCES = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")  # where an option the user gave comes from


@app.command()
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
    model: Annotated[
        str | None,
        typer.Option(
            help=f"Model type: {', '.join(MODEL_KINDS)}. Default: with no model option at all, the model, its size, "
            "context, batch, learning rate and precision are chosen from the corpus, the budget and this machine's "
            f"measured speed (printed as 'auto:'); with size options alone, {DEFAULT_MODEL}.",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            help=f"Named size: tiny, small, medium, large (see 'textweaver presets'). "
            f"Default: {DEFAULT_PRESET}, unless explicit sizes are given.",
            show_default=False,
        ),
    ] = None,
    layers: Annotated[
        int | None, typer.Option(help="Explicit number of layers (instead of --preset).", show_default=False)
    ] = None,
    width: Annotated[
        int | None, typer.Option(help="Explicit embedding/hidden width (instead of --preset).", show_default=False)
    ] = None,
    heads: Annotated[
        int | None,
        typer.Option(help="Explicit attention heads, transformer only (instead of --preset).", show_default=False),
    ] = None,
    context: Annotated[
        int | None,
        typer.Option(
            help="Tokens per training window: the transformer's attention span, the RNN's BPTT length. "
            "Default: chosen automatically, else the preset's.",
            show_default=False,
        ),
    ] = None,
    dropout: Annotated[
        float | None,
        typer.Option(
            help=f"Dropout between layers, 0-0.9. Default: {AUTO_DROPOUT} when --max-time buys more than "
            f"{AUTO_DROPOUT_EPOCHS:g} passes over the corpus (fewer for models wider than {AUTO_DROPOUT_WIDTH}: "
            f"{dropout_passes(384):.1f} at 384; judged from the run's own speed after {AUTO_DROPOUT_AFTER_STEPS} "
            "steps), else 0.",
            show_default=False,
        ),
    ] = None,
    positional: Annotated[str, typer.Option(help="Transformer positions: rotary or learned.")] = "rotary",
    softmax: Annotated[
        str,
        typer.Option(
            help="RNN output layer: auto (an adaptive softmax from a 2,000-token vocabulary, e.g. Chinese), "
            "full, or adaptive."
        ),
    ] = "auto",
    level: Annotated[
        str,
        typer.Option(
            help="Tokens: char (every Unicode character), word (words, punctuation and spaces) or bpe (byte-level "
            "subwords learned from the corpus: shorter sequences, never an unknown token)."
        ),
    ] = "char",
    vocab_size: Annotated[
        int | None,
        typer.Option(
            help="Word level: keep this many most frequent tokens, the rest become <unk>. Default 10000. "
            "bpe: the vocabulary to learn (at most; at least 257). Default 4096.",
            show_default=False,
        ),
    ] = None,
    val_fraction: Annotated[
        float, typer.Option(help="Fraction at the end of every file held out for validation.")
    ] = 0.1,
    lowercase: Annotated[
        bool,
        typer.Option(
            "--lowercase", help="Lower-case the text first (prompts too). Off: text is used exactly as written."
        ),
    ] = False,
    normalize: Annotated[
        str | None,
        typer.Option(
            help="Unicode normalisation of text and prompts: NFC, NFD, NFKC or NFKD. Default: none.", show_default=False
        ),
    ] = None,
    encoding: Annotated[
        str,
        typer.Option(
            help="Encoding of the corpus files (utf-8, gb18030, big5, latin-1 ...), or auto: detect each "
            "file's (charset-normalizer) and print what it chose."
        ),
    ] = "utf-8",
    errors: Annotated[
        str, typer.Option(help="On invalid bytes: strict (stop with an error), replace (use U+FFFD) or ignore.")
    ] = "strict",
    glob: Annotated[str, typer.Option(help="Which files to take from a folder.")] = "*.txt",
    batch_size: Annotated[
        int | None,
        typer.Option(help="Windows per step. Default: chosen automatically, else the preset's.", show_default=False),
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Peak learning rate (AdamW). Default: chosen automatically, else the preset's.", show_default=False
        ),
    ] = None,
    warmup_steps: Annotated[
        int | None,
        typer.Option(
            help="Steps of linear learning-rate warmup before the cosine decay. Default: 5% of the expected steps "
            "(10-100) when chosen automatically, else 100.",
            show_default=False,
        ),
    ] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay on weight matrices.")] = 0.1,
    grad_clip: Annotated[float, typer.Option(help="Clip the global gradient norm to this (0: off).")] = 1.0,
    max_time: Annotated[
        str | None,
        typer.Option(
            help="Training time budget, e.g. 90s, 5m, 1h30m. Default 5m when no other limit is given.",
            show_default=False,
        ),
    ] = None,
    max_steps: Annotated[
        int | None, typer.Option(help="Stop after this many optimizer steps.", show_default=False)
    ] = None,
    epochs: Annotated[
        float | None, typer.Option(help="Stop after this many passes over the training tokens.", show_default=False)
    ] = None,
    patience: Annotated[
        int | None,
        typer.Option(help="Stop after this many evaluations without a better validation loss.", show_default=False),
    ] = None,
    eval_every: Annotated[
        int,
        typer.Option(
            help="Steps between evaluations; each prints samples and writes a checkpoint. Default: with --max-time "
            f"alone, by time instead (~{EVALS_PER_BUDGET} evaluations over the budget, at most {EVAL_SHARE:.0%} of "
            "it spent evaluating); else 500."
        ),
    ] = 500,
    eval_tokens: Annotated[int, typer.Option(help="Validation tokens scored per evaluation.")] = 131072,
    sample_length: Annotated[int, typer.Option(help="Tokens per sample printed at each evaluation.")] = 200,
    checkpoint_every: Annotated[str, typer.Option(help="Also write a checkpoint at least this often, e.g. 5m.")] = "5m",
    seed: Annotated[int, typer.Option(help="Random seed; the same seed repeats a CPU run exactly.")] = 1337,
    device: Annotated[str, typer.Option(help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")] = "auto",
    compile: Annotated[
        bool, typer.Option("--compile", help="Compile the model with torch.compile (slower start, may train faster).")
    ] = False,
    precision: Annotated[
        str,
        typer.Option(
            help=f"auto (bf16 autocast when it measures at least {BF16_MIN_SPEEDUP:g}x faster here), fp32 or bf16. "
            "Weights and checkpoints stay float32 either way."
        ),
    ] = "auto",
    threads: Annotated[
        int | None, typer.Option(help="CPU threads for PyTorch. Default: PyTorch's choice.", show_default=False)
    ] = None,
    tensorboard: Annotated[bool, typer.Option(help="Write TensorBoard scalars to RUN_DIR/tensorboard.")] = True,
    init_from: Annotated[
        str | None,
        typer.Option(
            "--init-from",
            help=f"Fine-tune: start from this model (a run or checkpoint folder, or {BUILTINS}) "
            "instead of random weights. Its architecture, level and "
            "vocabulary are kept; the corpus's new characters or words are added. Not with model options.",
            show_default=False,
        ),
    ] = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue RUN_DIR/last if it exists (else start fresh), "
            "so a job can be relaunched with the same command.",
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a live progress bar.")] = True,
) -> None:
    """Train a model on CORPUS and save checkpoints in --out.

    Ctrl-C (or SIGTERM) saves a checkpoint and exits; run the same command with --resume to go on.
    """
    from textweaver.training.finetune import SOURCE_OPTIONS
    from textweaver.training.loop import RESUMABLE_OVERRIDES
    from textweaver.training.loop import train as run_training

    # on --resume only the options given on this command line replace the run's stored ones (by name:
    # typer may bring its own copy of click's ParameterSource)
    options = RESUMABLE_OVERRIDES + SOURCE_OPTIONS
    given = [k for k in options if getattr(ctx.get_parameter_source(k), "name", "") in USER_SOURCES]

    config = TrainConfig(
        model=model, preset=preset, layers=layers, width=width, heads=heads, context=context, dropout=dropout,
        positional=positional, softmax=softmax, level=level, vocab_size=vocab_size, val_fraction=val_fraction,
        lowercase=lowercase, normalize=normalize, encoding=encoding, errors=errors, glob=glob, batch_size=batch_size,
        lr=lr, warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip,
        max_time=parse_duration(max_time) if max_time is not None else None, max_steps=max_steps, epochs=epochs,
        patience=patience, eval_every=eval_every, eval_tokens=eval_tokens, sample_length=sample_length,
        checkpoint_every=parse_duration(checkpoint_every, "--checkpoint-every"), seed=seed, device=device,
        compile=compile, precision=precision, threads=threads, tensorboard=tensorboard, init_from=init_from,
    )  # fmt: skip
    run_training(corpus, out, config, resume=resume, progress=progress and sys.stderr.isatty(), given=given,
                 finished=after_training)  # fmt: skip


@app.command()
def generate(
    run_dir: RunDir,
    prompt: Annotated[
        str | None,
        typer.Option(
            "--prompt",
            "-p",
            help="Start text. Default: a random start sentence from the training corpus.",
            show_default=False,
        ),
    ] = None,
    prompt_file: Annotated[
        Path | None,
        typer.Option(
            help="Read the start text from this UTF-8 file, exactly as stored (a final newline is part of it); "
            "instead of --prompt.",
            show_default=False,
        ),
    ] = None,
    length: Annotated[
        int,
        typer.Option(
            "--length",
            "-n",
            help="Tokens to generate: characters for char models; words, spaces and punctuation marks for word models.",
        ),
    ] = GenerationRequest.length,
    temperature: Annotated[
        float,
        typer.Option(
            "--temperature",
            "-t",
            help="Randomness: 0 = always the likeliest token, 1 = the model's own odds, higher = wilder.",
        ),
    ] = SamplingOptions.temperature,
    top_k: Annotated[
        int | None, typer.Option(help="Sample only among the K likeliest tokens.", show_default=False)
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option(
            help="Sample only among the likeliest tokens that together reach probability P, in (0, 1].",
            show_default=False,
        ),
    ] = None,
    repetition_penalty: Annotated[
        float, typer.Option(help="Above 1 makes tokens used in the last 64 less likely; 1 = off.")
    ] = 1.0,
    num_samples: Annotated[
        int, typer.Option(help="Samples generated together as one batch; printed separated by a line of five dashes.")
    ] = 1,
    seed: Annotated[
        int | None, typer.Option(help="Random seed: the same seed and options give the same text.", show_default=False)
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="Print characters as they are generated (one sample only).")
    ] = False,
    stop: Annotated[
        str | None, typer.Option(help="End a sample when this text appears (it is not printed).", show_default=False)
    ] = None,
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
) -> None:
    """Generate text from a trained model. Only the text goes to stdout (the prompt, then the continuation)."""
    from textweaver.app.api import load
    from textweaver.generation.generator import check_output, describe, read_prompt_file, write_output

    if stream and num_samples > 1:
        raise TextweaverError("--stream prints one sample: drop --stream or --num-samples")
    if stream and as_json:
        raise TextweaverError("--stream and --json do not mix: choose one")
    if stream and output is not None:
        raise TextweaverError("--stream prints as it goes, --output writes the file whole at the end: choose one")
    if prompt is not None and prompt_file is not None:
        raise TextweaverError("--prompt and --prompt-file both give the start text: choose one")
    if output is not None:
        check_output(output)
    if prompt_file is not None:
        prompt = read_prompt_file(prompt_file)
    model = load(run_dir, device)
    request = model.request(prompt, length, temperature, top_k, top_p, repetition_penalty, num_samples, seed, stop)
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
) -> None:
    """Export a trained model as ONNX, or as a static web page that works offline with any static server."""
    from textweaver.export.onnx import export as run_export

    result = run_export(run_dir, out, fmt, quantize, title, description)
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
