"""The command line as a whole: every command and group is reachable from ``zcurate`` and shows an
example in its --help."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def command_paths() -> list[list[str]]:
    """Every command, as the words that reach it (``["graph", "show"]``), from the app itself."""
    paths = []

    def walk(command, words: list[str]) -> None:  # a group has commands (typer's own click)
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*words, name])
        if words:
            paths.append(words)

    walk(typer.main.get_command(app), [])
    return paths


def test_top_level_help_lists_every_command_group():
    result = runner.invoke(app, ["--help"], terminal_width=200)
    assert result.exit_code == 0
    for words in command_paths():
        assert words[0] in result.output
    assert "Example" in result.output


def test_the_command_groups_are_all_attached():
    """One Typer app per command group (cli/*.py), attached in cli/main.py."""
    names = {words[0] for words in command_paths()}
    expected = {"curate", "demo", "ocr", "embed", "safety", "sql", "stats", "reasons", "train-embedder"}
    expected |= {"index", "search", "dedup", "tag", "graph", "manifest", "train", "sample", "serve", "models"}
    expected |= {"sources", "remove"}
    assert names == expected


@pytest.mark.parametrize("words", command_paths(), ids=" ".join)
def test_every_command_help_shows_an_example(words):
    result = runner.invoke(app, [*words, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the help wraps at 80 columns
    assert "Example:" in text and f"zcurate {' '.join(words)}" in text.split("Example:", 1)[1]
