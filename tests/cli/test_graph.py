"""The concept-graph commands: help with an example, one-line errors on bad input."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


@pytest.mark.parametrize(
    "command", [["tag"], ["graph", "build"], ["graph", "show"], ["graph", "samples"], ["graph", "gaps"]]
)
def test_every_graph_command_help_shows_an_example(command):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"Example: zcurate {' '.join(command)}" in result.output


def test_tag_and_graph_commands_on_an_empty_folder_fail_with_one_line(tmp_path):
    result = runner.invoke(app, ["tag", "--workspace", str(tmp_path)])
    assert result.exit_code == 2 and "has no samples" in result.output
    for command in (["graph", "show", "bird.n.01"], ["graph", "samples", "bird.n.01"], ["graph", "gaps"]):
        result = runner.invoke(app, [*command, "--workspace", str(tmp_path)])
        assert result.exit_code == 2 and "no concept graph yet" in result.output, command


@pytest.mark.ray
def test_tag_on_ray_from_the_cli_writes_what_one_process_writes(tmp_path):
    from tests.engine.graph.test_tagging import (
        HAND_WRITTEN,
        openclipart_captions,
        tag_files,
        write_caption_workspace,
    )

    captions = openclipart_captions(120) + HAND_WRITTEN
    roots = {way: str(tmp_path / way) for way in ("--ray", "--no-ray")}
    for way, root in roots.items():
        write_caption_workspace(root, captions, shard_size=32)
        result = runner.invoke(app, ["tag", "--workspace", root, way, "--num-cpus", "2", "--no-clip"])
        assert result.exit_code == 0, result.output
        assert f"of {len(captions)} samples" in result.output
    assert tag_files(roots["--ray"]) == tag_files(roots["--no-ray"])
