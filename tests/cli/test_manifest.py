"""`zcurate manifest` build / show / list / diff / gaps, on the real curated test workspace."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.curated import copy_workspace

runner = CliRunner()


@pytest.mark.parametrize(
    "command", [["manifest"], ["manifest", "show"], ["manifest", "diff"], ["manifest", "gaps"]]
)
def test_manifest_help_shows_an_example(command):
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert f"Example: zcurate {' '.join(command)}" in result.output


def test_bad_arguments_are_one_line_errors(tmp_path):
    for args, message in (
        (["manifest", "--stage", "lowres"], "--workspace is required"),
        (["manifest", "-w", str(tmp_path), "--stage", "warmup"], "no recipe 'warmup'"),
        (
            ["manifest", "-w", str(tmp_path), "--stage", "lowres", "--set", "balance.method=x"],
            "balance.method",
        ),
        (["manifest", "-w", str(tmp_path)], "give --stage"),
        (["manifest", "-w", str(tmp_path), "--stage", "lowres"], "no usable sample"),
        (["manifest", "show", "abc", "-w", str(tmp_path)], "no manifest 'abc'"),
    ):
        result = runner.invoke(app, args, terminal_width=200)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.ray
def test_build_show_list_diff_and_gaps(curated_ws, tmp_path):
    ws = copy_workspace(curated_ws, str(tmp_path / "ws"))
    built = runner.invoke(
        app, ["manifest", "-w", ws.root, "--stage", "lowres", "--seed", "0"], terminal_width=200
    )
    assert built.exit_code == 0, built.output
    assert "what each step removed" in built.output and "concept marginal" in built.output
    path = built.output.strip().splitlines()[-1].split(" ", 1)[1]
    manifest_id = path.rsplit("/", 1)[1].removesuffix(".parquet")
    again = runner.invoke(app, ["manifest", "-w", ws.root, "--stage", "lowres"], terminal_width=200)
    assert again.exit_code == 0 and again.output.strip().endswith(f"found {path}")
    other = runner.invoke(
        app,
        ["manifest", "-w", ws.root, "--stage", "lowres", "--set", "balance.method=none"],
        terminal_width=200,
    )
    assert other.exit_code == 0, other.output
    other_id = other.output.strip().splitlines()[-1].rsplit("/", 1)[1].removesuffix(".parquet")

    shown = runner.invoke(
        app, ["manifest", "show", manifest_id[:8], "-w", ws.root, "--rows", "3"], terminal_width=200
    )
    assert shown.exit_code == 0 and "top 3 rows by weight" in shown.output, shown.output
    as_json = runner.invoke(app, ["manifest", "show", manifest_id, "-w", ws.root, "-f", "json"])
    assert json.loads(as_json.output)["manifest_id"] == manifest_id
    listed = runner.invoke(app, ["manifest", "list", "-w", ws.root], terminal_width=200)
    assert manifest_id in listed.output and other_id in listed.output
    diff = runner.invoke(app, ["manifest", "diff", manifest_id, other_id, "-w", ws.root], terminal_width=200)
    assert diff.exit_code == 0 and "balance.method" in diff.output, diff.output

    out = tmp_path / "gaps.json"
    gaps = runner.invoke(
        app,
        ["manifest", "gaps", manifest_id, "-w", ws.root, "--text", "a red car", "-k", "5", "-f", "json",
         "-o", str(out), "--boost", "3"],
        terminal_width=200,
    )  # fmt: skip
    assert gaps.exit_code == 0, gaps.output
    candidates = json.loads(out.read_text())
    in_manifest = set(pq.read_table(path, columns=["sample_id"])["sample_id"].to_pylist())
    assert candidates and not {c["sample_id"] for c in candidates} & in_manifest
    assert "boosted" in gaps.output
    rebuilt = runner.invoke(app, ["manifest", "-w", ws.root, "--stage", "lowres"], terminal_width=200)
    assert rebuilt.exit_code == 0 and not rebuilt.output.strip().endswith(f"found {path}")


@pytest.mark.ray
@pytest.mark.slow
def test_the_demo_ends_with_a_lowres_manifest(tmp_path):
    ws = tmp_path / "demo"
    result = runner.invoke(app, ["demo", "--workspace", str(ws), "--limit", "40"], terminal_width=200)
    assert result.exit_code == 0, result.output
    last = [line for line in result.output.splitlines() if line.startswith("manifest: ")][-1]
    path = last.split(" ", 1)[1]
    assert path.startswith(str(ws / "manifests" / "lowres")) and pq.read_table(path).num_rows > 0
    assert "concept marginal" in result.output
