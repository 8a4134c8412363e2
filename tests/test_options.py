"""app/options.py: a command's options generated from dataclass fields, each declared once on its field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import typer
from typer.testing import CliRunner

from textweaver.app.options import config_options, config_values
from textweaver.config import option


@dataclass
class Knobs:
    width: int = option(64, "How wide.")
    budget: float | None = option(90.0, "How long.", duration=True)
    name: str = "internal"  # no option: not on the command line


def command() -> tuple[typer.Typer, list[dict[str, Any]]]:
    app, seen = typer.Typer(), []

    @app.command()
    @config_options(Knobs)
    def run(corpus: str, *, verbose: bool = False, **options: Any) -> None:
        seen.append({"corpus": corpus, "verbose": verbose, **config_values(Knobs, options)})

    return app, seen


def test_each_field_with_an_option_becomes_one_with_its_help_and_default() -> None:
    app, seen = command()
    runner = CliRunner()
    assert runner.invoke(app, ["text.txt"]).exit_code == 0
    assert seen[-1] == {"corpus": "text.txt", "verbose": False, "width": 64, "budget": 90.0}  # 90 s, typed "90s"
    result = runner.invoke(app, ["text.txt", "--width", "8", "--budget", "2m", "--verbose"])
    assert result.exit_code == 0 and seen[-1] == {"corpus": "text.txt", "verbose": True, "width": 8, "budget": 120.0}
    help_text = runner.invoke(app, ["--help"]).output
    assert "How wide." in help_text and "How long." in help_text and "--name" not in help_text
    assert help_text.index("--width") < help_text.index("--verbose")  # the fields first, then the command's own
