"""What every command shares: the workspace option, output formats, one-line errors and guards."""

from __future__ import annotations

import csv
import io
import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from engine.workspace import Workspace

out = Console(soft_wrap=True)

err = Console(stderr=True, soft_wrap=True)

WorkspaceOption = Annotated[
    str,
    typer.Option(
        "--workspace",
        "-w",
        envvar="ZCURATE_WORKSPACE",
        help="Workspace directory or pyarrow filesystem URI (env ZCURATE_WORKSPACE).",
    ),
]


# What a command may need in a workspace: the table that shows it is there, how the error names
# it, and the command that makes it.
NEEDS = {
    "samples": ("samples", "zcurate curate SOURCE --workspace {workspace}"),
    "embeddings": ("embeddings", "zcurate embed --workspace {workspace}"),
    "concepts": ("concept graph yet", "zcurate tag --workspace {workspace}"),
}


def open_workspace(workspace: str | None, needs: str | None = "samples") -> Workspace:
    """The workspace a command works on, after checking it holds the table the command ``needs``
    (a key of ``NEEDS``); otherwise one line saying which command to run first, and exit 2."""
    if workspace is None:
        fail("--workspace is required")
    ws = Workspace(workspace)
    if needs is not None and not ws.list_shards(needs):
        what, how = NEEDS[needs]
        fail(f"{workspace} has no {what}: run '{how.format(workspace=workspace)}' first")
    return ws


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


FormatOption = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
OutputOption = Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")]
NumCpusOption = Annotated[int | None, typer.Option(help="CPUs for the local Ray (default: all).")]
ModelOption = Annotated[
    str | None,
    typer.Option(
        help="Embedder spec: default, a heads .safetensors, ARCH@TAG, ARCH@/path/ckpt.pt, local-dir:DIR "
        "(default: the workspace's active model, else the embedded default).",
    ),
]
DeviceOption = Annotated[
    str, typer.Option(help="Where the image models run: auto (CUDA when present), cpu, cuda, cuda:N.")
]
GpusPerActorOption = Annotated[
    float | None,
    typer.Option(
        help="On CUDA: the share of a GPU each stage actor takes (default 0.125: 8 actors per GPU)."
    ),
]


def checked_device(device: str) -> str:
    """``--device`` as ``cpu`` or ``cuda:N`` (engine.devices), or one line and exit 2."""
    from engine.devices import DeviceError, resolve_device

    try:
        return resolve_device(device)
    except DeviceError as e:
        fail(str(e))


def embed_spec(ws: Workspace, model: str | None) -> str | None:
    """``--model``, else the spec of the workspace's active model (None: the embedded default)."""
    from engine.embedding_models import active_model

    if model:
        return model
    active = active_model(ws) if ws.exists() else None
    return active.spec if active else None


def fail(message: str) -> None:
    """One clear line on stderr and exit code 2: how bad input is reported."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str, ensure_ascii=False)
    return str(value)


def print_table(table: pa.Table, title: str | None = None, max_rows: int = 200) -> None:
    """Render an Arrow table for a terminal."""
    view = Table(title=title, show_lines=False, title_justify="left")
    for name in table.column_names:
        view.add_column(name, overflow="fold")
    for row in table.slice(0, max_rows).to_pylist():
        view.add_row(*(cell(v) for v in row.values()))
    out.print(view)
    if table.num_rows > max_rows:
        out.print(f"... {table.num_rows - max_rows} more rows (use --format csv/json/parquet for all)")


def write_result(table: pa.Table, fmt: OutputFormat, output: Path | None, title: str | None = None) -> None:
    """Write a query result in the chosen format to stdout or ``output``."""
    if fmt is OutputFormat.parquet:
        if output is None:
            fail("--format parquet needs --output FILE")
        pq.write_table(table, str(output))
        err.print(f"wrote {table.num_rows} rows to {output}")
        return
    if fmt is OutputFormat.table:
        print_table(table, title)
        return
    if fmt is OutputFormat.json:
        text = json.dumps(table.to_pylist(), default=str, ensure_ascii=False, indent=1) + "\n"
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(table.column_names)
        for row in table.to_pylist():
            writer.writerow([cell(v) for v in row.values()])
        text = buffer.getvalue()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {table.num_rows} rows to {output}")
