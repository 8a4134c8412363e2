"""Checkpoints: complete, atomic, verified on load, portable (CPU float32)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from textweaver import load
from textweaver.errors import TextweaverError
from textweaver.run import checkpoint


@pytest.fixture
def run(trained_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained_run, copy)
    return copy


def test_a_run_holds_best_and_last_with_every_file(trained_run: Path) -> None:
    for name in ("best", "last"):
        files = {p.name for p in (trained_run / name).iterdir()}
        assert {"model.safetensors", "config.json", "tokenizer.json", "prompts.json"} <= files
    assert (trained_run / "last" / "trainer.pt").is_file()
    assert len(json.loads((trained_run / "best" / "prompts.json").read_text())) > 10


def test_every_checkpoint_file_gets_the_permissions_the_umask_gives(trained_run: Path) -> None:
    """A model another user or a web server must read is not private to its trainer (safetensors alone
    writes 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "prompts.json"):
        assert (trained_run / "best" / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_config_records_architecture_tokenizer_training_metrics_and_checksums(trained_run: Path) -> None:
    config = json.loads((trained_run / "last" / "config.json").read_text())
    assert config["format_version"] == checkpoint.FORMAT_VERSION
    assert config["model"]["kind"] == "transformer"
    assert config["tokenizer"]["level"] == "char"
    assert config["train"]["preset"] == "tiny"
    assert config["metrics"]["step"] == 60 and config["metrics"]["val_loss"] > 0
    assert set(config["checksums"]) == {"model.safetensors", "tokenizer.json", "prompts.json"}


def test_weights_are_cpu_float32_and_tied_matrices_stored_once(trained_run: Path) -> None:
    weights = load_file(str(trained_run / "best" / "model.safetensors"))
    assert all(t.device.type == "cpu" for t in weights.values())
    assert {str(t.dtype) for t in weights.values()} == {"torch.float32"}
    assert "wte.weight" in weights and "head.weight" not in weights


def test_run_dir_means_best_then_last_and_a_checkpoint_dir_is_accepted(run: Path) -> None:
    assert checkpoint.resolve(run) == run / "best"
    assert checkpoint.resolve(run / "last") == run / "last"
    shutil.rmtree(run / "best")
    assert checkpoint.resolve(run) == run / "last"


def test_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TextweaverError, match="not a textweaver checkpoint"):
        checkpoint.load(tmp_path)
    with pytest.raises(TextweaverError, match="no such run directory"):
        checkpoint.load(tmp_path / "missing")


def test_truncated_weights_are_refused_by_checksum(run: Path) -> None:
    weights = run / "best" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(TextweaverError, match="corrupted or truncated"):
        load(run)


def test_a_flipped_bit_is_refused(run: Path) -> None:
    weights = run / "best" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x10
    weights.write_bytes(bytes(data))
    with pytest.raises(TextweaverError, match="checksum"):
        load(run)


def test_unreadable_weights_without_checksum_are_refused_cleanly(run: Path) -> None:
    config_path = run / "best" / "config.json"
    config = json.loads(config_path.read_text())
    del config["checksums"]
    config_path.write_text(json.dumps(config))
    (run / "best" / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(TextweaverError, match="unreadable weights"):
        load(run).generate("a", 5)


def test_a_newer_format_version_asks_for_an_upgrade(run: Path) -> None:
    config_path = run / "best" / "config.json"
    config = json.loads(config_path.read_text())
    config["format_version"] = checkpoint.FORMAT_VERSION + 1
    config_path.write_text(json.dumps(config))
    with pytest.raises(TextweaverError, match="newer than this textweaver"):
        load(run)


def test_tokenizer_from_another_run_is_refused(run: Path) -> None:
    tok = run / "best" / "tokenizer.json"
    data = json.loads(tok.read_text())
    data["vocab"] = data["vocab"][:-1]
    tok.write_text(json.dumps(data))
    config_path = run / "best" / "config.json"
    config = json.loads(config_path.read_text())
    config["checksums"]["tokenizer.json"] = checkpoint._sha256(tok)
    config_path.write_text(json.dumps(config))
    with pytest.raises(TextweaverError, match="different runs"):
        load(run)


def test_crash_between_the_two_renames_leaves_a_loadable_checkpoint(run: Path) -> None:
    """A crash after `last` was moved aside but before the new one arrived: `.last.old` is restored."""
    os.replace(run / "last", run / ".last.old")
    (run / ".last.tmp").mkdir()  # a half-written new checkpoint
    assert checkpoint.resolve(run / "last") == run / "last"
    assert load(run / "last").generate("a", 3)


def test_recover_is_what_training_calls_before_it_looks_for_last(run: Path) -> None:
    """train() asks checkpoint.recover for last/ before deciding whether there is a run to resume."""
    os.replace(run / "last", run / ".last.old")
    checkpoint.recover(run / "last")
    assert (run / "last" / "config.json").is_file() and not (run / ".last.old").exists()
    checkpoint.recover(run / "last")  # a whole checkpoint: nothing to do
    assert load(run / "last").generate("a", 3)


def test_failed_write_keeps_the_previous_checkpoint(run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = checkpoint.load(run / "last")
    model = ckpt.build_model()
    before = (run / "last" / "model.safetensors").read_bytes()

    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", disk_full)
    with pytest.raises(TextweaverError, match="No space left on device.*previous one is intact"):
        checkpoint.save(run / "last", model, ckpt.model_config, ckpt.tokenizer, ckpt.prompts,
                        train_config={}, metrics={}, corpus={})  # fmt: skip
    assert (run / "last" / "model.safetensors").read_bytes() == before
    assert not (run / ".last.tmp").exists()
    load(run / "last")
