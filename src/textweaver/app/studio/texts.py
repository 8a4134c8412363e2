"""The studio's texts: list, upload (the raw file as the body, streamed to disk) and delete."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request, Response

from textweaver.app.studio.deps import SpaceDep
from textweaver.errors import TextweaverError

UPLOAD_PATH = "/api/texts"
router = APIRouter(prefix=UPLOAD_PATH)


@router.get("", summary="The uploaded texts with their statistics")
def texts(space: SpaceDep) -> list[dict[str, Any]]:
    return [asdict(t) for t in space.texts()]


@router.post("", status_code=201, summary="Upload one text file (the raw file as the body)")
async def upload(request: Request, space: SpaceDep, name: str = "text.txt", encoding: str = "utf-8") -> dict[str, Any]:
    if len(name) > 1000 or len(encoding) > 40:
        raise TextweaverError("name or encoding too long")
    info = await space.add_text(name, request.stream(), encoding)
    return asdict(info)


@router.delete("/{text_id}", status_code=204)
def delete_text(text_id: str, space: SpaceDep) -> Response:
    space.delete_text(text_id)
    return Response(status_code=204)
