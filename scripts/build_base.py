"""Train a base model for fine-tuning (``--init-from``) from the public-domain corpora in ../shared.

    python scripts/build_base.py chinese-loo --out runs/base-zh-loo  # without xiyouji.txt (bench.finetune_gain)
    python scripts/build_base.py english-loo --out runs/base-en-loo  # without alice_in_wonderland.txt
    python scripts/build_base.py chinese --out runs/base-zh --from runs/base-zh-loo  # builtin:chinese
    python scripts/build_base.py english --out runs/base-en --from runs/base-en-loo  # builtin:english

A shipped base is built in two stages, so the hours of training are spent once: the leave-one-out
model (every corpus but one, measured against in bench.finetune_gain), then that model trained on
every corpus (``--init-from`` the first stage, at the first stage's rate and batch). Without
``--from`` the first stage is built into OUT-loo first.

The same command with the same --out resumes an interrupted build (training is step-limited, so the
result does not depend on how often it was interrupted or on the machine's speed). Before training,
each file is copied to OUT-corpus/ with what is not the book removed: Project Gutenberg's licence
header and footer (outside its "*** START OF" / "*** END OF" lines), lines naming Project Gutenberg,
and lines holding a web address (a download site's advertisement in xiyouji.txt). Line ends become
"\n" (two of the Chinese files use "\r\n"). The SHA-256 of every source file is printed for
src/textweaver/pretrained/README.md.
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

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "corpora"
ENGLISH = ["tinyshakespeare.txt", "nietzsche.txt", "aesop_fables.txt", "war_and_peace.txt",
           "pride_and_prejudice.txt", "alice_in_wonderland.txt", "sherlock_holmes.txt", "moby_dick.txt"]  # fmt: skip
CHINESE = ["xiyouji.txt", "sanguo_yanyi.txt", "shuihu_zhuan.txt"]
# sizes keep each model under 25 MB of float32 weights
COMMON = ["--model", "lstm", "--layers", "2", "--context", "64", "--batch-size", "64", "--dropout", "0.2",
          "--precision", "bf16", "--eval-every", "250", "--seed", "1337", "--no-tensorboard"]  # fmt: skip
# the second stage keeps the first's model (--init-from fixes it), batch, dropout and precision
SECOND = ["--batch-size", "64", "--dropout", "0.2", "--precision", "bf16", "--eval-every", "250", "--seed", "1337",
          "--no-tensorboard"]  # fmt: skip
# name: (corpus files, options, the stage it starts from)
BASES = {
    "english-loo": ([f for f in ENGLISH if f != "alice_in_wonderland.txt"],
                    [*COMMON, "--width", "512", "--lr", "3e-3", "--max-steps", "4000"], None),
    "chinese-loo": ([f for f in CHINESE if f != "xiyouji.txt"],
                    [*COMMON, "--width", "448", "--lr", "5e-3", "--max-steps", "6000"], None),
    "english": (ENGLISH, [*SECOND, "--lr", "3e-3", "--warmup-steps", "100", "--max-steps", "1000"], "english-loo"),
    "chinese": (CHINESE, [*SECOND, "--lr", "5e-3", "--warmup-steps", "100", "--max-steps", "1500"], "chinese-loo"),
}  # fmt: skip
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


def build(base: str, out: Path, corpus_dir: Path, start: Path | None, extra: list[str]) -> int:
    files, options, first = BASES[base]
    if first is not None and start is None:
        start = out.with_name(out.name + "-loo")
        code = build(first, start, corpus_dir, None, extra)
        if code:
            return code
    folder = out.with_name(out.name + "-corpus")
    folder.mkdir(parents=True, exist_ok=True)
    for name in files:
        raw = (corpus_dir / name).read_bytes()
        print(f"{hashlib.sha256(raw).hexdigest()}  {name}")
        (folder / name).write_text(book_only(raw.decode("utf-8")), encoding="utf-8")
    cmd = [sys.executable, "-m", "textweaver", "train", *(str(folder / n) for n in files), "--out", str(out),
           "--resume", "--no-progress", *options, *(["--init-from", str(start)] if first else []), *extra]  # fmt: skip
    print(" ".join(cmd), flush=True)
    code = subprocess.run(cmd).returncode
    if code == 0:
        report(out, [folder / name for name in files])
    return code


def ship(out: Path, target: Path) -> None:
    """OUT's best checkpoint as a built-in model: the files as they are, except that config.json names the
    corpus files and the first stage without this machine's folders (config.json is not checksummed)."""
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(out / "best", target)
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
    print(f"{target}: {sum(p.stat().st_size for p in target.iterdir()) / 2**20:.1f} MiB")


def report(out: Path, files: list[Path]) -> None:
    """Each corpus's validation loss (its last 10%, which the run never trained on), for the README."""
    model = load(out)
    print("| corpus | validation characters | nats/char | bits/char |\n|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for file in files:
            text = file.read_text(encoding="utf-8")
            held = Path(tmp) / file.name
            held.write_text(text[len(text) - round(len(text) * 0.1) :], encoding="utf-8")
            s = model.evaluate(held)
            print(f"| {file.name} | {s['chars']:,} | {s['nats_per_token']:.4f} | {s['bits_per_char']:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base", choices=sorted(BASES))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--from", dest="start", type=Path, help="the first stage's run (english/chinese only)")
    parser.add_argument("--corpus-dir", type=Path, default=SHARED)
    # any other option goes to textweaver train: only ones that do not change the result (--threads N)
    parser.add_argument("--report", action="store_true", help="only print each corpus's validation loss of OUT")
    parser.add_argument("--ship", type=Path, help="only copy OUT's best/ to this folder (pretrained/NAME)")
    args, extra = parser.parse_known_args()
    if args.ship:
        ship(args.out, args.ship)
        return
    if args.report:
        files, _, _ = BASES[args.base]
        report(args.out, [args.out.with_name(args.out.name + "-corpus") / name for name in files])
        return
    sys.exit(build(args.base, args.out, args.corpus_dir, args.start, extra))


if __name__ == "__main__":
    main()
