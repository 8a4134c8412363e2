"""What the studio's routes share: the app's workspace on disk and its trainer, as FastAPI dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request

from textweaver.app.studio.trainer import Trainer
from textweaver.app.studio.workspace import Workspace


def app_state(name: str) -> Callable[[Request], Awaitable[Any]]:
    """A dependency: what ``create_app`` keeps in the app's ``state.<name>`` (one per app, not per request)."""

    async def get(request: Request) -> Any:
        return getattr(request.app.state, name)

    return get


SpaceDep = Annotated[Workspace, Depends(app_state("workspace"))]
TrainerDep = Annotated[Trainer, Depends(app_state("trainer"))]
