"""``zcurate reasons``, and the one-line error of a command pointed at a folder with no samples."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app
from engine import schema

runner = CliRunner()


def test_reasons_lists_every_code():
    result = runner.invoke(app, ["reasons"], terminal_width=200)
    assert result.exit_code == 0
    for code in [*schema.REJECT_REASONS, *schema.WARNINGS]:
        assert code in result.output


@pytest.mark.parametrize(
    "args",
    [["stats"], ["tag"], ["dedup"], ["ocr"], ["embed"], ["safety"]],
    ids=lambda a: a[0],
)
def test_a_folder_without_samples_is_one_line_naming_the_command_to_run(tmp_path, args):
    result = runner.invoke(app, [*args, "--workspace", str(tmp_path)], terminal_width=200)
    assert result.exit_code == 2
    assert "has no samples: run 'zcurate curate SOURCE" in result.output


def test_a_graph_command_without_a_graph_says_to_tag_first(tmp_path):
    result = runner.invoke(
        app, ["graph", "show", "dog.n.01", "--workspace", str(tmp_path)], terminal_width=200
    )
    assert result.exit_code == 2 and "run 'zcurate tag" in result.output
