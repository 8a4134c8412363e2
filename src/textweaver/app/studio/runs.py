"""The studio's runs as they stand on disk: list, read, rename, delete, and watch (metrics, samples, status)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from textweaver.app.http import SSE_HEADERS, sse_event
from textweaver.app.studio.deps import SpaceDep, TrainerDep
from textweaver.app.studio.generate import ModelsDep
from textweaver.app.studio.trainer import Trainer
from textweaver.app.studio.workspace import UNFINISHED, NotFound, Workspace
from textweaver.run import log as runlog
from textweaver.run.log import read_metrics

EVENT_POLL_S = 0.5  # how often the server looks for new metrics while a run trains (the page is pushed to)
router = APIRouter(prefix="/api/runs")


class RenameParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=80)


@router.get("", summary="Every run of the workspace, newest first, and the queue")
def runs(space: SpaceDep, trainer: TrainerDep) -> dict[str, Any]:
    return {"runs": space.runs(), "queue": list(trainer.queue), "running": list(trainer.running)}


@router.get("/{name}", summary="One run: status, progress, best loss, its recipe")
def run(name: str, space: SpaceDep, trainer: TrainerDep) -> dict[str, Any]:
    return run_summary(space, trainer, name)


@router.patch("/{name}", summary="Rename a run")
def rename(name: str, params: RenameParams, space: SpaceDep, trainer: TrainerDep, models: ModelsDep) -> dict[str, Any]:
    space.rename(name, params.name)
    models.drop(name)
    return run_summary(space, trainer, params.name)


@router.delete("/{name}", status_code=204, summary="Delete a run and its files")
def delete(name: str, space: SpaceDep, models: ModelsDep) -> Response:
    models.drop(name)
    space.delete(name)
    return Response(status_code=204)


@router.get("/{name}/metrics", summary="Every metrics record of a run")
def metrics(name: str, space: SpaceDep) -> list[dict[str, Any]]:
    return read_metrics(space.run_dir(name))[0]


@router.get("/{name}/samples", summary="The samples written at each evaluation")
def samples(name: str, space: SpaceDep) -> list[dict[str, Any]]:
    return read_samples(space.run_dir(name))


@router.get("/{name}/events", summary="Metrics, samples and status as server-sent events")
async def events(name: str, request: Request, space: SpaceDep, trainer: TrainerDep) -> Response:
    run_dir = space.run_dir(name)
    return StreamingResponse(run_events(space, trainer, name, run_dir, request), media_type="text/event-stream",
                             headers=SSE_HEADERS)  # fmt: skip


def run_summary(space: Workspace, trainer: Trainer, name: str) -> dict[str, Any]:
    """A run as the page shows it: its record, its place in the queue and the recipe it trains with."""
    summary = space.summary(name)
    summary["queue_position"] = trainer.position(name)
    summary["recipe"] = _recipe(space.runs_dir / name)
    return summary


async def run_events(
    space: Workspace, trainer: Trainer, name: str, run_dir: Path, request: Request
) -> AsyncIterator[str]:
    """Everything recorded so far, then what the training adds, until the run stops training."""
    offset, samples_size, samples_sent, status = 0, -1, 0, None
    while True:
        records, offset = read_metrics(run_dir, offset)
        for record in records:
            yield sse_event(record, "metrics")
        size = _size(run_dir / runlog.SAMPLES)
        if size != samples_size:  # samples.jsonl grows only at evaluations: read it again only then
            samples_size, found = size, read_samples(run_dir)
            for sample in found[samples_sent:]:
                yield sse_event(sample, "sample")
            samples_sent = len(found)
        try:
            current = space.record(name)
            if (current.status, current.message) != status:
                status = current.status, current.message
                yield sse_event(run_summary(space, trainer, name), "status")
        except NotFound:
            yield sse_event({"status": "deleted", "message": "the run was deleted"}, "status")
            return
        if current.status not in UNFINISHED or await request.is_disconnected():
            return
        await asyncio.sleep(EVENT_POLL_S)


def read_samples(run_dir: Path) -> list[dict[str, Any]]:
    """The samples of each evaluation as JSON: step, prompt and the text at each temperature."""
    return [{"step": e.step, "prompt": e.prompt, "samples": dict(e.texts)}
            for e in runlog.read_samples(run_dir)]  # fmt: skip


def _recipe(run_dir: Path) -> dict[str, Any] | None:
    for d in ("last", "best"):
        try:
            config = json.loads((run_dir / d / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        train = config.get("train", {})
        return {"model": config.get("model"), "reasons": train.get("extra", {}).get("recipe", {}).get("reasons", [])}
    return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
