"""The CLI's options generated from the dataclasses' fields (``config.option``): each option is declared once,
on its field, with its flag, help and default; ``app/cli.py``'s commands take them as ``**options``."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from textweaver.config import Option, format_duration, parse_duration

USER_SOURCES = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")  # where an option the user gave comes from


def config_options(*classes: type) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command one option per field of the dataclasses ``classes`` that declares one (``config.option``):
    its flag, help and default come from the field, so an option is declared once. The command takes them
    as ``**options`` (durations still as typed), placed before its own keyword options in --help."""

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())
        fixed = [p for p in own if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty]
        keywords = [p.replace(kind=p.KEYWORD_ONLY) for p in own if p not in fixed and p.kind is not p.VAR_KEYWORD]
        generated = []
        for owner, f in ((c, f) for c in classes for f in dataclasses.fields(c)):
            how: Option | None = f.metadata.get("option")
            if how is None:
                continue
            kind: Any = typing.get_type_hints(owner)[f.name]
            default: Any = f.default
            if how.duration:  # typed as text: 90s, 5m, 1h30m
                kind, default = str | None, None if default is None else format_duration(default)
            flag = typer.Option(*how.flags, help=how.help, show_default=how.show_default)
            generated.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                               annotation=Annotated[kind, flag]))  # fmt: skip
        command.__signature__ = inspect.Signature([*fixed, *generated, *keywords])  # type: ignore[attr-defined]
        return command

    return decorate


def config_values(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` as ``config_options`` received them, durations read into seconds."""
    durations = {f.name for f in dataclasses.fields(cls) if getattr(f.metadata.get("option"), "duration", False)}
    return {
        name: parse_duration(value, "--" + name.replace("_", "-")) if name in durations and value is not None else value
        for name, value in options.items()
    }
