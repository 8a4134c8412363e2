"""Generation from the studio's runs: a sample as server-sent events (as ``serve``), from models kept loaded."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Response

from textweaver.app.api import TextModel
from textweaver.app.http import TIMEOUT_S, GenerationSlots, StreamParams, stream_sample
from textweaver.app.studio.deps import SpaceDep, app_state
from textweaver.app.studio.workspace import Conflict, has_model

# models kept loaded for generation, least recently used out first: each holds its weights in memory (a large
# word-level model a few hundred MB), and the page generates from one run at a time, so a few cover going back
# and forth between runs
MAX_MODELS = 3
BUSY = "busy: too many generations are running; retry in a second"


class ModelCache:
    """The runs' models for generation, each loaded once per checkpoint (a training that saves a newer one
    replaces it); at most ``size`` stay loaded, the least recently used goes first."""

    def __init__(self, loader: Callable[[Path], TextModel], size: int = MAX_MODELS) -> None:
        self.loader, self.size = loader, size
        self.models: OrderedDict[str, tuple[float, TextModel]] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, name: str, run_dir: Path) -> TextModel:
        if not has_model(run_dir):
            raise Conflict(f"run {name!r} has no checkpoint yet: wait for its first evaluation")
        stamp = max((run_dir / d / "config.json").stat().st_mtime for d in ("best", "last")
                    if (run_dir / d / "config.json").is_file())  # fmt: skip
        with self.lock:
            cached = self.models.pop(name, None)
            if cached is None or cached[0] != stamp:
                cached = (stamp, self.loader(run_dir))
            self.models[name] = cached  # now the most recently used
            while len(self.models) > self.size:
                self.models.popitem(last=False)
            return cached[1]

    def drop(self, name: str) -> None:
        with self.lock:
            self.models.pop(name, None)


ModelsDep = Annotated[ModelCache, Depends(app_state("models"))]
SlotsDep = Annotated[GenerationSlots, Depends(app_state("slots"))]
router = APIRouter(prefix="/api/runs")


@router.post("/{name}/generate/stream", summary="Generate one sample from a run as server-sent events")
def generate(name: str, params: StreamParams, space: SpaceDep, models: ModelsDep, slots: SlotsDep) -> Response:
    model = models.get(name, space.run_dir(name))
    return stream_sample(model, params, slots, TIMEOUT_S, BUSY, {"Cache-Control": "no-store"})
