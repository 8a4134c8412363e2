"""Specification of textweaver.run.log: what a run records beside its checkpoints, and reading it back."""

from __future__ import annotations

import json
from pathlib import Path

from textweaver.run.log import SAMPLES, Evaluation, RunLog, read_samples

# a sample may contain anything a model can write, the old format's own markers included
TRICKY = "the end.\n--- temperature 0.5\n===== step 9 | prompt 'x'\n\n  last line "


def test_a_sample_that_looks_like_the_format_round_trips_as_one_record(tmp_path: Path) -> None:
    log = RunLog(tmp_path, tensorboard=False)
    log.samples(100, "It was", {0.2: "It was a dark", 0.5: TRICKY})
    log.samples(200, "'quoted' \"prompt\"\n", {1.0: ""})
    assert read_samples(tmp_path) == [
        Evaluation(100, "It was", [("0.2", "It was a dark"), ("0.5", TRICKY)]),
        Evaluation(200, "'quoted' \"prompt\"\n", [("1.0", "")]),
    ]
    lines = (tmp_path / SAMPLES).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and json.loads(lines[0])["samples"]["0.5"] == TRICKY  # one JSON object per record


def test_a_record_still_being_written_waits_and_damaged_lines_are_skipped(tmp_path: Path) -> None:
    RunLog(tmp_path, tensorboard=False).samples(1, "a", {0.5: "b"})
    with (tmp_path / SAMPLES).open("a", encoding="utf-8") as f:
        f.write('not json\n["a list"]\n{"step": 2, "prompt": "a", "sam')
    assert read_samples(tmp_path) == [Evaluation(1, "a", [("0.5", "b")])]


def test_a_run_from_before_samples_jsonl_keeps_its_samples_txt(tmp_path: Path) -> None:
    """Older runs wrote samples.txt with in-band markers; it is still read, before any newer records."""
    (tmp_path / "samples.txt").write_text(
        "===== step 500 | prompt 'ROMEO:'\n--- temperature 0.2\nthe king\nand queen\n--- temperature 1.0\nx\n",
        encoding="utf-8",
    )
    RunLog(tmp_path, tensorboard=False).samples(600, "b", {0.2: "c"})  # the same run, resumed
    assert read_samples(tmp_path) == [
        Evaluation(500, "ROMEO:", [("0.2", "the king\nand queen"), ("1.0", "x")]),
        Evaluation(600, "b", [("0.2", "c")]),
    ]


def test_no_samples_yet_reads_as_none(tmp_path: Path) -> None:
    assert read_samples(tmp_path) == []
