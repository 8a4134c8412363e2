r"""Train a base model for fine-tuning (``--init-from``) from the public-domain corpora in ../shared.

    python scripts/build_base.py chinese --out runs/base-zh     # builds runs/base-zh-loo first, then builtin:chinese
    python scripts/build_base.py english --out runs/base-en     # builds runs/base-en-loo first, then builtin:english
    python scripts/build_base.py chinese --out runs/base-zh --ship src/textweaver/assets/pretrained/chinese
    python scripts/build_base.py chinese-loo --out runs/base-zh-loo --prepare  # only write the cleaned corpus
    python scripts/build_base.py chinese-loo --out runs/base-zh-loo --snapshot  # before a session ends: commit it
    python scripts/build_base.py chinese-loo --out runs/base-zh-loo2 --from runs/base-zh-loo --more 2000

Each language's base learns from every file of that language in ../shared/corpora: the first
corpora (8 English, 3 Chinese files) and the folders ``en/`` (37 novels) and ``zh/`` (259 works).
Left out on purpose: ``en/jekyll_and_hyde.txt`` is bundled as ``builtin:jekyll``, the demo's
fine-tuning text, so no English base ever sees it.

A shipped base is built in two stages, so the hours of training are spent once: the leave-one-out
model (every corpus but the held-out novels, measured against in bench.finetune_gain and
bench.versus_nanogpt), then that model trained on every corpus (``--init-from`` the first stage).
Without ``--from`` the first stage is built into OUT-loo first.

The same command with the same --out resumes an interrupted build (training is step-limited, so the
result does not depend on how often it was interrupted or on the machine's speed). Before training,
each file is copied to OUT-corpus/ with what is not the book removed: Project Gutenberg's licence
header and footer (outside its "*** START OF" / "*** END OF" lines), lines naming Project Gutenberg,
and lines holding a web address (a download site's advertisement in xiyouji.txt). Line ends become
"\n" (two of the Chinese files use "\r\n"). The SHA-256 of every source file is written to
OUT-corpus/SHA256SUMS and printed, for src/textweaver/assets/pretrained/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from textweaver import load
from textweaver.run import checkpoint

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
ENGLISH_FIRST = [
    "tinyshakespeare.txt",
    "nietzsche.txt",
    "aesop_fables.txt",
    "war_and_peace.txt",
    "pride_and_prejudice.txt",
    "alice_in_wonderland.txt",
    "sherlock_holmes.txt",
    "moby_dick.txt",
]
CHINESE_FIRST = ["xiyouji.txt", "sanguo_yanyi.txt", "shuihu_zhuan.txt"]
NEVER = {"en/jekyll_and_hyde.txt"}  # builtin:jekyll, the demo's text the base must never see
# held out of the leave-one-out stage: the novels the fine-tuning and side-by-side benchmarks measure on
HELD_OUT = {
    "english": {"alice_in_wonderland.txt", "en/north_and_south.txt"},  # a short novel and a long one
    "chinese": {"xiyouji.txt", "zh/jinghuayuan.txt"},
}
# the model, chosen by bench/base_candidates.py (docs/finetuning.md); the second stage keeps it (--init-from)
MODEL = {
    "english": ["--model", "lstm", "--layers", "2", "--width", "512", "--lr", "3e-3"],
    "chinese": ["--model", "lstm", "--layers", "2", "--width", "512", "--lr", "3e-3"],
}
TRAIN = ["--batch-size", "64", "--dropout", "0", "--precision", "bf16", "--eval-every", "500",
         "--seed", "1337", "--no-tensorboard"]  # fmt: skip
# a trained stage trained further (the second stage, --more) is rewarmed to the first stage's floor (3e-3 x
# min_lr_ratio 0.1): rewarmed to 1e-3, chinese-loo-final (which had ended at 4.4e-5, validation loss 4.522) still
# stood at 4.590 after 980 of 6,000 more steps, while at 3e-4 it reached 4.444 after 4,000 (2026-12-07)
REWARM_LR = "3e-4"
CONTEXT = ["--context", "64"]  # part of the model: a stage that starts --init-from another keeps the source's
STEPS = {"english-loo": 4000, "chinese-loo": 4000, "english": 1000, "chinese": 1000}
# a build that outlives a session (whose processes die with it) continues from its committed snapshot: a
# loadable checkpoint with float16 weights (`--snapshot`); its optimizer moments are not kept (3x the size)
SNAPSHOTS = Path(__file__).resolve().parent / "snapshots"


def corpus_files(language: str, corpus_dir: Path) -> list[str]:
    """Every file of the language under corpus_dir, as paths relative to it (the first corpora, then the folder)."""
    first, folder = (ENGLISH_FIRST, "en") if language == "english" else (CHINESE_FIRST, "zh")
    found = [f"{folder}/{p.name}" for p in sorted((corpus_dir / folder).glob("*.txt"))]
    return [f for f in [*first, *found] if f not in NEVER]


def stage(base: str, corpus_dir: Path) -> tuple[list[str], list[str], str | None]:
    """(corpus files, options, the stage it starts from) of a base."""
    language = base.removesuffix("-loo")
    files = corpus_files(language, corpus_dir)
    if base.endswith("-loo"):
        files = [f for f in files if f not in HELD_OUT[language]]
        options = [*MODEL[language], *CONTEXT, *TRAIN, "--warmup-steps", "300", "--max-steps", str(STEPS[base])]
        return files, options, None
    # the second stage keeps the first's model, with a short warmup to a tenth of its peak rate: the model is
    # trained already, the new text is a small part of the corpus
    options = [*TRAIN, "--lr", REWARM_LR, "--warmup-steps", "100", "--max-steps", str(STEPS[base])]
    return files, options, f"{language}-loo"


REPORT_CHARS = 500_000
BASES = ["english-loo", "chinese-loo", "english", "chinese"]
_NOT_BOOK = re.compile(r"https?://|www\.|Project Gutenberg", re.IGNORECASE)


def book_only(text: str) -> str:
    """The text without Project Gutenberg's licence header/footer and without lines naming it or a web address."""
    start = re.search(r"^\*\*\* ?START OF.*$", text, re.MULTILINE)
    end = re.search(r"^\*\*\* ?END OF.*$", text, re.MULTILINE)
    text = text[start.end() if start else 0 : end.start() if end else len(text)]
    return (
        "".join(line for line in text.splitlines(keepends=True) if not _NOT_BOOK.search(line)).strip("\ufeff\r\n")
        + "\n"
    )


def prepare(files: list[str], corpus_dir: Path, folder: Path) -> list[Path]:
    """Copy each file, book only, to ``folder`` (skipping copies already made); log each source's SHA-256."""
    sums = []
    for name in files:
        raw = (corpus_dir / name).read_bytes()
        sums.append(f"{hashlib.sha256(raw).hexdigest()}  {name}\n")
        target = folder / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            partial.write_text(book_only(raw.decode("utf-8")), encoding="utf-8")
            partial.replace(target)
    (folder / "SHA256SUMS").write_text("".join(sums), encoding="utf-8")
    print(f"{len(files)} files, SHA-256 in {folder / 'SHA256SUMS'}", flush=True)
    return [folder / name for name in files]


def build(
    base: str, out: Path, corpus_dir: Path, start: Path | None, extra: list[str], only_prepare: bool, more: int = 0
) -> int:
    files, options, first = stage(base, corpus_dir)
    if more:  # a finished first stage trained further: a fresh optimizer, rewarmed to REWARM_LR
        if first is not None or start is None:
            raise SystemExit("--more trains a leave-one-out stage further: name it (chinese-loo...) and --from RUN")
        options = [*TRAIN, "--lr", REWARM_LR, "--warmup-steps", "100", "--max-steps", str(more),
                   "--init-from", str(start)]  # fmt: skip
        start = None
    if first is not None and start is None and not only_prepare:
        start = out.with_name(out.name + "-loo")
        code = build(first, start, corpus_dir, None, extra, only_prepare)
        if code:
            return code
    paths = prepare(files, corpus_dir, out.with_name(out.name + "-corpus"))
    if only_prepare:
        return 0
    snapshot = SNAPSHOTS / base
    last = out / "last" / "config.json"
    started = json.loads(last.read_text(encoding="utf-8"))["train"]["init_from"] if last.exists() else str(snapshot)
    if not more and first is None and snapshot.is_dir() and started == str(snapshot):  # continuing it, or resuming
        metrics = json.loads((snapshot / "config.json").read_text(encoding="utf-8"))["metrics"]
        done, rate = metrics["step"], f"{metrics['lr']:.3g}"  # the rate it had reached, decaying from there
        print(f"continuing from {snapshot} (step {done}): a fresh optimizer, a 100-step warmup to {rate}", flush=True)
        options = [*TRAIN, "--lr", rate, "--warmup-steps", "100", "--max-steps", str(max(1, STEPS[base] - done)),
                   "--init-from", str(snapshot)]  # fmt: skip
    cmd = [sys.executable, "-m", "textweaver", "train", *map(str, paths), "--out", str(out), "--resume",
           "--no-progress", *options, *(["--init-from", str(start)] if first else []), *extra]  # fmt: skip
    print(" ".join(cmd[:5]), f"... ({len(paths)} files)", " ".join(cmd[4 + len(paths) :]), flush=True)
    code = subprocess.run(cmd).returncode
    saved = json.loads((out / "last" / "config.json").read_text(encoding="utf-8")) if code == 0 else {}
    if saved and saved["metrics"]["step"] >= saved["train"]["max_steps"]:  # not when stopped early (Ctrl-C)
        report(out, paths, HELD_OUT[base.removesuffix("-loo")])
    return code


def ship(out: Path, target: Path, which: str = "best") -> None:
    """OUT's best checkpoint (or ``which``) as a built-in model or a snapshot: the files as they are, without the
    trainer state, except that the weights are stored as float16 (they load as float32; tests/test_pretrained.py
    checks the loss does not move) and config.json names the corpus files and the first stage without this
    machine's folders (config.json is not checksummed)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(out / which, target, ignore=shutil.ignore_patterns("trainer.pt"))
    for path in target.iterdir():
        path.chmod(0o644)
    config_path = target / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    for entry in config["corpus"]["files"]:
        entry["path"] = Path(entry["path"]).name
    started = config["train"].get("extra", {}).get("init_from")
    if started:
        started["source"] = Path(started["source"]).name
        config["train"]["init_from"] = started["source"]
    config_path.write_text(json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    checkpoint.half_weights(target)
    print(f"{target}: {sum(p.stat().st_size for p in target.iterdir()) / 2**20:.1f} MiB")


def report(out: Path, files: list[Path], held_out: set[str]) -> None:
    """Validation loss (each file's last 10%, which the run never trained on), for the README: each first corpus
    and held-out novel alone, each folder's files together (the first REPORT_CHARS of their splits, an equal
    share from each file: the whole 4M characters took 8 minutes)."""
    model = load(out)
    groups: dict[str, list[Path]] = {}
    for file in files:
        name = f"{file.parent.name}/{file.name}" if file.parent.name in ("en", "zh") else file.name
        alone = file.parent.name not in ("en", "zh") or name in held_out
        groups.setdefault(name if alone else f"{file.parent.name}/ (the rest)", []).append(file)
    print("| corpus | validation characters | nats/char | bits/char |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, members in groups.items():
            held = Path(tmp) / "held"
            held.mkdir(exist_ok=True)
            share = REPORT_CHARS // len(members)  # a folder's files: an equal share of each one's split
            for i, file in enumerate(members):
                text = file.read_text(encoding="utf-8")
                split = text[len(text) - round(len(text) * 0.1) :]
                (held / f"{i}.txt").write_text(split if len(members) == 1 else split[:share], encoding="utf-8")
            s = model.evaluate(held)
            print(f"| {name} | {s['chars']:,} | {s['nats_per_token']:.4f} | {s['bits_per_char']:.4f} |", flush=True)
            shutil.rmtree(held)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", choices=BASES)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--from",
        dest="start",
        type=Path,
        help="the first stage's run (english/chinese); with --more, the stage to train further",
    )
    parser.add_argument(
        "--more",
        type=int,
        default=0,
        metavar="STEPS",
        help="train a finished leave-one-out stage (--from RUN) this many steps more, into --out",
    )
    parser.add_argument("--corpus-dir", type=Path, default=SHARED)
    # any other option goes to textweaver train: only ones that do not change the result (--threads N)
    parser.add_argument("--prepare", action="store_true", help="only write the cleaned corpus to OUT-corpus/")
    parser.add_argument("--report", action="store_true", help="only print each corpus's validation loss of OUT")
    parser.add_argument("--ship", type=Path, help="only copy OUT's best/ to this folder (pretrained/NAME)")
    parser.add_argument("--snapshot", action="store_true",
                        help=f"only copy OUT's last/ to {SNAPSHOTS.name}/BASE (commit it: the next session's build "
                        "continues from it)")  # fmt: skip
    args, extra = parser.parse_known_args()
    if args.ship:
        ship(args.out, args.ship)
        return
    if args.snapshot:
        ship(args.out, SNAPSHOTS / args.base, "last")
        return
    if args.report:
        files, _, _ = stage(args.base, args.corpus_dir)
        folder = args.out.with_name(args.out.name + "-corpus")
        report(args.out, [folder / name for name in files], HELD_OUT[args.base.removesuffix("-loo")])
        return
    sys.exit(build(args.base, args.out, args.corpus_dir, args.start, extra, args.prepare, args.more))


if __name__ == "__main__":
    main()
