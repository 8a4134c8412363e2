"""The studio's trainer queue: start a training (queued while others run), stop it, resume it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from textweaver.app.studio.deps import SpaceDep, TrainerDep
from textweaver.app.studio.runs import run_summary
from textweaver.app.studio.workspace import RunRequest

DEFAULT_BUDGET = "5m"
router = APIRouter(prefix="/api/runs")


class RunParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    texts: list[str] = Field(min_length=1, max_length=64, description="Text ids (GET /api/texts) or builtin:NAME.")
    budget: str = Field(DEFAULT_BUDGET, max_length=32, description="Time budget: 30s, 5m, 1h30m.")
    model: str = Field("auto", max_length=32, description="auto, or KIND PRESET such as 'lstm small'.")
    init_from: str | None = Field(None, max_length=80, description="Fine-tune a base model or another run.")
    name: str | None = Field(None, max_length=80, description="Run name; default: from the text's name.")
    eval_every: int | None = Field(
        None, ge=1, description="Steps between evaluations (each adds a chart point); default: the CLI's."
    )


class ResumeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget: str | None = Field(None, max_length=32, description="A new total time budget (default: the run's).")


@router.post("", status_code=201, summary="Start a training (it waits in the queue if another runs)")
def start(params: RunParams, space: SpaceDep, trainer: TrainerDep) -> dict[str, Any]:
    record = space.new_run(RunRequest(**params.model_dump()))
    trainer.submit(record.name)
    return run_summary(space, trainer, record.name)


@router.post("/{name}/stop", summary="Stop: a training saves a checkpoint and ends")
def stop(name: str, space: SpaceDep, trainer: TrainerDep) -> dict[str, Any]:
    trainer.stop(name)
    return run_summary(space, trainer, name)


@router.post("/{name}/resume", summary="Resume a stopped, interrupted or failed run")
def resume(name: str, space: SpaceDep, trainer: TrainerDep, params: ResumeParams | None = None) -> dict[str, Any]:
    trainer.submit(name, params.budget if params else None)
    return run_summary(space, trainer, name)
