"""Publishing a studio run: its web page (a zip) or model.onnx, exported once per checkpoint, and its report."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.responses import FileResponse

from textweaver.app.http import content_disposition
from textweaver.app.studio.deps import SpaceDep, app_state
from textweaver.app.studio.workspace import Conflict, has_model
from textweaver.errors import TextweaverError
from textweaver.export.onnx import QUANTIZE
from textweaver.export.site import MODEL_FILE

DOWNLOADS = "downloads"  # in a run folder: the latest export of each kind (format and weights)
ExportLockDep = Annotated[threading.Lock, Depends(app_state("exporting"))]  # one export at a time per app
router = APIRouter(prefix="/api/runs")


@router.get("/{name}/report", summary="The run's report: one self-contained HTML file")
def run_report(name: str, space: SpaceDep) -> Response:
    from textweaver.report.report import render_report

    page = render_report(space.run_dir(name))  # made now: a run still training gets its latest state
    disposition = content_disposition(f"{name}-report.html")
    return Response(page, media_type="text/html", headers={"Content-Disposition": disposition})


@router.get("/{name}/download", summary="The run as a web page (zip) or an ONNX model")
def download(
    name: str, space: SpaceDep, exporting: ExportLockDep, format: str = "web", quantize: str = "fp32",
    train_panel: bool = False,
) -> Response:  # fmt: skip
    run_dir = space.run_dir(name)
    if format not in ("web", "onnx"):
        raise TextweaverError(f"unknown format {format!r}: use web (a zip of the page) or onnx (model.onnx)")
    if quantize not in ("fp32", *QUANTIZE) or (format == "onnx" and quantize != "fp32"):
        raise TextweaverError(f"quantize must be fp32, {' or '.join(QUANTIZE)} (the web page only), got {quantize!r}")
    if train_panel and format != "web":
        raise TextweaverError("train_panel is for the web page: use format=web, or leave it out")
    if not has_model(run_dir):
        raise Conflict(f"run {name!r} has no checkpoint yet: train it a little first")
    with exporting:
        path = cached_export(run_dir, name, format, quantize, train_panel)
    filename, media_type = (f"{name}.onnx", "application/octet-stream") if format == "onnx" else (
        f"{name}-web.zip", "application/zip")  # fmt: skip
    return FileResponse(path, media_type=media_type, headers={"Content-Disposition": content_disposition(filename)})


def cached_export(run_dir: Path, name: str, fmt: str, quantize: str, train_panel: bool = False) -> Path:
    """The run exported as its web page (a zip, the files under ``NAME/``; ``train_panel``: with the files that
    fine-tune it in the page) or its ``model.onnx``, once per checkpoint: kept in the run's ``downloads/`` under
    the checkpoint's identity (a hash of its config.json, which holds the weights' checksum), where it replaces
    the export of an older one."""
    from textweaver.export.site import export

    config = next(run_dir / d / "config.json" for d in ("best", "last") if (run_dir / d / "config.json").is_file())
    identity = hashlib.sha256(name.encode() + b"\0" + config.read_bytes()).hexdigest()[:16]
    kind = f"{fmt}{'+train' if train_panel else ''}-{quantize}"  # no kind's name starts another's "KIND-"
    folder = run_dir / DOWNLOADS
    target = folder / f"{kind}-{identity}{'.onnx' if fmt == 'onnx' else '.zip'}"
    if target.is_file():
        return target
    folder.mkdir(exist_ok=True)
    partial = folder / f".{target.name}.partial"
    try:
        with tempfile.TemporaryDirectory(prefix="textweaver-download-") as tmp:
            site = export(run_dir, Path(tmp) / name, fmt, None if quantize == "fp32" else quantize, train=train_panel)
            if fmt == "onnx":
                shutil.copyfile(site.directory / MODEL_FILE, partial)
            else:
                with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as z:
                    for path in sorted(site.directory.rglob("*")):
                        if path.is_file():
                            z.write(path, Path(name) / path.relative_to(site.directory))
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    for old in folder.glob(f"{kind}-*"):  # an older checkpoint's, or the run's former name's
        old.unlink(missing_ok=True)
    os.replace(partial, target)
    return target
