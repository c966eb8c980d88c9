"""The command line: every command has --help with an example."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine import schema

runner = CliRunner()
COMMANDS = ["curate", "sql", "stats", "demo", "reasons"]


def test_top_level_help_lists_every_command():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in COMMANDS:
        assert command in result.output
    assert "Example" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_shows_an_example(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"Example: zcurate {command}" in result.output


def test_reasons_lists_every_code():
    result = runner.invoke(app, ["reasons"], terminal_width=200)
    assert result.exit_code == 0
    for code in [*schema.REJECT_REASONS, *schema.WARNINGS]:
        assert code in result.output


def test_stats_on_a_folder_that_is_not_a_workspace(tmp_path):
    result = runner.invoke(app, ["stats", "--workspace", str(tmp_path)])
    assert result.exit_code == 2
    assert "has no samples" in result.output
