"""``zcurate sources`` and ``zcurate remove``: the sources a workspace holds, and taking one out."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.shared import WorkspaceOption, fail, open_workspace, out

app = typer.Typer()


@app.command(epilog="Example: zcurate sources --workspace ./ws")
def sources(workspace: WorkspaceOption) -> None:
    """List the sources curated into a workspace: prefix, location, shards, samples, usable."""
    from pipelines.sources import list_sources

    ws = open_workspace(workspace)
    for source in list_sources(ws):
        out.print(
            f"{source.prefix}  {source.location}  {source.shards} shards  {source.samples} samples "
            f"({source.usable} usable)"
        )


@app.command(epilog="Example: zcurate remove ./old-pairs --workspace ./ws")
def remove(
    source: Annotated[
        str, typer.Argument(help="The source as curate was given it, or its prefix (zcurate sources).")
    ],
    workspace: WorkspaceOption,
) -> None:
    """Take a source out of every table and index; dedup, tags and the catalog are redone without it."""
    from pipelines.sources import SourceNotFound, remove_source

    ws = open_workspace(workspace)
    try:
        summary = remove_source(ws, source)
    except SourceNotFound as e:
        fail(str(e))
    out.print(
        f"removed {summary.prefix} ({summary.location}): {summary.shards_removed} shards, "
        f"{summary.samples_removed} samples, in {summary.seconds:.1f} s"
    )
    for prefix, location in summary.rerun.items():
        out.print(
            f"{prefix} held duplicates of the removed pairs: run 'zcurate curate {location} "
            f"--workspace {workspace}' to bring them back"
        )
