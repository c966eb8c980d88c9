"""``zcurate sql``, ``stats`` and ``reasons``: reading the catalog and the vocabulary."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import pyarrow as pa
import typer
from rich.table import Table

from cli.shared import (
    FormatOption,
    OutputFormat,
    OutputOption,
    WorkspaceOption,
    fail,
    open_workspace,
    out,
    print_table,
    write_result,
)
from engine import schema

app = typer.Typer()


def stats_long_table(result: dict) -> pa.Table:
    """Flatten dataset_stats() into rows of (section, item, metric, value) for csv/parquet."""
    rows = []
    for section, content in result.items():
        for entry in content if isinstance(content, list) else [content]:
            values = list(entry.items())
            # A list's rows are named by their first column (a reason, a signal); a dict has no name.
            item, metrics = (str(values[0][1]), values[1:]) if isinstance(content, list) else ("", values)
            for metric, value in metrics:
                rows.append(
                    {
                        "section": section,
                        "item": item,
                        "metric": metric,
                        "value": None if value is None else str(value),
                    }
                )
    return pa.Table.from_pylist(
        rows,
        schema=pa.schema(
            [("section", pa.string()), ("item", pa.string()), ("metric", pa.string()), ("value", pa.string())]
        ),
    )


@app.command(epilog='Example: zcurate sql "SELECT reject_reason, n FROM reject_reasons" --workspace ./ws')
def sql(
    query: Annotated[str, typer.Argument(help="One SQL query over the catalog's views.")],
    workspace: WorkspaceOption,
    format: FormatOption = OutputFormat.table,
    output: OutputOption = None,
) -> None:
    """Run SQL (DuckDB) over the workspace's catalog: samples, signals, sample_signals, ...

    The connection is read-only. Views: samples, signals, sample_signals, reject_reasons,
    image_duplicates.
    """
    import duckdb

    from engine.catalog import run_sql

    ws = open_workspace(workspace, needs=None)
    if not ws.exists("samples") and not ws.exists(ws.catalog_file):  # a catalog alone will do
        fail(f"{workspace} is not a workspace yet: run 'zcurate curate SOURCE --workspace {workspace}' first")
    try:
        table = run_sql(ws, query)
    except duckdb.Error as e:
        fail(f"SQL: {str(e).splitlines()[0]}")
    write_result(table, format, output)


@app.command(epilog="Example: zcurate stats --workspace ./ws --format json")
def stats(
    workspace: WorkspaceOption,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table, json, or csv/parquet (long form).")
    ] = OutputFormat.table,
    output: OutputOption = None,
) -> None:
    """Dataset statistics: counts by status and source, reject reasons, warnings, signal quantiles.

    csv and parquet give one row per number: section, item, metric, value.
    """
    from engine.catalog import dataset_stats

    result = dataset_stats(open_workspace(workspace))
    if format is OutputFormat.json:
        text = json.dumps(result, default=str, indent=1) + "\n"
        if output is None:
            sys.stdout.write(text)
        else:
            output.write_text(text, encoding="utf-8")
        return
    if format is not OutputFormat.table:
        write_result(stats_long_table(result), format, output)
        return
    print_table(pa.Table.from_pylist([result["totals"]]), "totals")
    print_table(pa.Table.from_pylist(result["by_source"]), "by source")
    for key, title in (
        ("reject_reasons", "reject reasons"),
        ("warnings", "warnings"),
        ("caption_languages", "caption languages (top 10)"),
        ("signals", "signals"),
    ):
        if result[key]:
            print_table(pa.Table.from_pylist(result[key]), title)
    dup = result["image_duplicates"]
    out.print(f"exact duplicate images: {dup['images']} images carrying {dup['samples']} samples")


@app.command(name="reasons", epilog="Example: zcurate reasons")
def reasons() -> None:
    """List every reject reason and warning code, with what it means."""
    for title, codes in (
        ("reject reasons (status = rejected)", schema.REJECT_REASONS),
        ("warnings (status = ok)", schema.WARNINGS),
    ):
        view = Table(title=title, title_justify="left")
        view.add_column("code")
        view.add_column("meaning")
        for code, meaning in codes.items():
            view.add_row(code, meaning)
        out.print(view)
