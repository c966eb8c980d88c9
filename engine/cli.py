"""The ``zcurate`` command line. Each command's --help ends with an example."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pyarrow.parquet as pq
import typer
from rich.console import Console
from rich.table import Table

from engine import schema
from engine.ingest import IngestConfig
from pipelines.curate import DEFAULT_SHARD_SIZE

app = typer.Typer(
    name="zcurate",
    help="Data-curation engine for text-to-image training (Z-Image's data infrastructure on open parts).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog="Example: zcurate curate ./my-pairs --workspace ./ws && zcurate stats --workspace ./ws",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

DEFAULTS = IngestConfig()
DEMO_WORKSPACE = "workspaces/demo"  # relative to the current directory; ignored by git
DEMO_LIMIT = 2000  # openclipart images the demo curates: ~1 minute on 2 cores (README)

WorkspaceOption = Annotated[
    str,
    typer.Option(
        "--workspace",
        "-w",
        envvar="ZCURATE_WORKSPACE",
        help="Workspace directory or pyarrow filesystem URI (env ZCURATE_WORKSPACE).",
    ),
]


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def fail(message: str) -> None:
    """One clear line on stderr and exit code 2: how bad input is reported."""
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(2)


def _cell(value) -> str:
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
        view.add_row(*(_cell(v) for v in row.values()))
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
            writer.writerow([_cell(v) for v in row.values()])
        text = buffer.getvalue()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {table.num_rows} rows to {output}")


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


def print_summary(summary) -> None:
    counts = Table(title=f"curated {summary.source}", title_justify="left")
    counts.add_column("")
    counts.add_column("count", justify="right")
    counts.add_row("samples", str(summary.samples))
    counts.add_row("ok", str(summary.ok))
    counts.add_row("rejected", str(summary.rejected))
    counts.add_row("shards run / total", f"{summary.shards_run} / {summary.shards_total}")
    out.print(counts)
    for title, values in (
        ("reject reasons", summary.reject_reasons),
        ("warnings (ok samples)", summary.warnings),
    ):
        if values:
            view = Table(title=title, title_justify="left")
            view.add_column("reason")
            view.add_column("count", justify="right")
            for key, n in values.items():
                view.add_row(key, str(n))
            out.print(view)
    out.print(f"workspace: {summary.workspace}")
    if summary.catalog:
        out.print(f"catalog:   {summary.catalog}  (try: duckdb {summary.catalog})")


@app.command(epilog="Example: zcurate curate ./images --workspace ./ws --shard-size 256")
def curate(
    source: Annotated[
        str,
        typer.Argument(
            help="Folder, .parquet/.csv/.jsonl table, .tar or folder of "
            ".tar shards, or the word 'openclipart'."
        ),
    ],
    workspace: WorkspaceOption,
    kind: Annotated[
        str, typer.Option(help="Source kind: auto, folder, table, webdataset, openclipart.")
    ] = "auto",
    image_column: Annotated[
        str | None, typer.Option(help="Table sources: the image path/URI column.")
    ] = None,
    caption_column: Annotated[str | None, typer.Option(help="Table sources: the caption column.")] = None,
    limit: Annotated[int | None, typer.Option(help="Take only the first N records of the source.")] = None,
    shard_size: Annotated[
        int, typer.Option(help="Records per shard (the unit of work and resume).")
    ] = DEFAULT_SHARD_SIZE,
    max_pixels: Annotated[
        int, typer.Option(help="Reject images above this many pixels.")
    ] = DEFAULTS.max_pixels,
    max_file_bytes: Annotated[
        int, typer.Option(help="Reject image files above this size.")
    ] = DEFAULTS.max_file_bytes,
    max_caption_chars: Annotated[
        int, typer.Option(help="Truncate captions beyond this length.")
    ] = DEFAULTS.max_caption_chars,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray (default: all).")] = None,
    stages: Annotated[
        str,
        typer.Option(
            help="Comma-separated stages after ingest and profile (which always run), e.g. "
            "'ocr,embed'; 'all' runs every image stage, 'profile' none of them."
        ),
    ] = "all",
) -> None:
    """Ingest and profile image-text pairs into a workspace, on Ray.

    Runs on a local Ray started for the job, or on the cluster named by RAY_ADDRESS. Killed jobs
    resume: run the same command again.
    """
    from engine.source import SourceError, load_source
    from engine.workspace import Workspace
    from pipelines.curate import run_curate
    from pipelines.stages import IMAGE_STAGES, build_image_stages

    if shard_size < 1 or max_pixels < 1 or max_file_bytes < 1 or max_caption_chars < 1:
        fail("--shard-size, --max-pixels, --max-file-bytes and --max-caption-chars must be positive")
    names = [n.strip() for n in stages.split(",") if n.strip() and n.strip() != "profile"]
    try:
        image_stages = build_image_stages(list(IMAGE_STAGES) if names == ["all"] else names)
    except ValueError as e:
        fail(f"--stages: {e}")
    try:
        src = load_source(source, kind, max_file_bytes, image_column, caption_column)
        config = IngestConfig(
            max_pixels=max_pixels, max_file_bytes=max_file_bytes, max_caption_chars=max_caption_chars
        )
        summary = run_curate(
            src,
            Workspace(workspace),
            config,
            shard_size=shard_size,
            limit=limit,
            num_cpus=num_cpus,
            image_stages=image_stages,
        )
    except SourceError as e:
        fail(str(e))
    print_summary(summary)


@app.command(epilog='Example: zcurate sql "SELECT reject_reason, n FROM reject_reasons" --workspace ./ws')
def sql(
    query: Annotated[str, typer.Argument(help="One SQL query over the catalog's views.")],
    workspace: WorkspaceOption,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Run SQL (DuckDB) over the workspace's catalog: samples, signals, sample_signals, ...

    The connection is read-only. Views: samples, signals, sample_signals, reject_reasons,
    image_duplicates.
    """
    import duckdb

    from engine.catalog import run_sql
    from engine.workspace import Workspace

    ws = Workspace(workspace)
    if not ws.exists("samples") and not ws.exists("catalog.duckdb"):
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
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Dataset statistics: counts by status and source, reject reasons, warnings, signal quantiles.

    csv and parquet give one row per number: section, item, metric, value.
    """
    from engine.catalog import dataset_stats
    from engine.workspace import Workspace

    ws = Workspace(workspace)
    if not ws.exists("samples"):
        fail(f"{workspace} has no samples: run 'zcurate curate SOURCE --workspace {workspace}' first")
    result = dataset_stats(ws)
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


@app.command(epilog="Example: zcurate demo --limit 500")
def demo(
    workspace: Annotated[
        str, typer.Option("--workspace", "-w", help="Where to write the demo workspace.")
    ] = DEMO_WORKSPACE,
    limit: Annotated[int, typer.Option(help="How many openclipart images to curate.")] = DEMO_LIMIT,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray (default: all).")] = None,
) -> None:
    """Curate the bundled demo data (openclipart from Debian) into a workspace and summarise it."""
    from engine.source import SourceError, load_source
    from engine.workspace import Workspace
    from pipelines.curate import run_curate
    from pipelines.stages import IMAGE_STAGES, build_image_stages

    try:
        src = load_source("openclipart")
    except SourceError as e:
        fail(str(e))
    image_stages = build_image_stages(list(IMAGE_STAGES))  # the demo shows every stage
    summary = run_curate(src, Workspace(workspace), limit=limit, num_cpus=num_cpus, image_stages=image_stages)
    print_summary(summary)
    out.print(f"\nnext: zcurate stats --workspace {os.path.relpath(summary.workspace)}")
    out.print(
        f'      zcurate sql "SELECT caption, blur, entropy FROM sample_signals LIMIT 5" '
        f"--workspace {os.path.relpath(summary.workspace)}"
    )


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


# --- S3-DiT trainer and sampler (engine/s3dit) ----------------------------------------------------


def _stage_manifests(ws_root: str, stages: list[str], given: list[str]) -> dict[str, str]:
    """stage -> manifest: 'stage=PATH' pairs, a bare PATH for a single stage, else the workspace's
    manifests/<stage> folder (a PATH may be a folder too: its newest manifest, followed)."""
    manifests: dict[str, str] = {}
    for item in given:
        stage, sep, path = item.partition("=")
        if not sep:
            if len(stages) != 1:
                fail(f"--manifest {item}: with several stages write STAGE=PATH")
            stage, path = stages[0], item
        if stage not in stages:
            fail(f"--manifest {item}: {stage!r} is not one of --stages {','.join(stages)}")
        manifests[stage] = path
    for stage in stages:
        if stage not in manifests:
            folder = Path(ws_root) / "manifests" / stage
            if not any(folder.glob("*.parquet")):
                fail(
                    f"no manifest for stage {stage!r}: pass --manifest {stage}=PATH or build one in {folder}"
                )
            manifests[stage] = str(folder)  # the trainer takes the newest and follows new ones
    return manifests


@app.command(
    epilog="Example: zcurate train --workspace ./ws --stages lowres --manifest lowres.parquet "
    "--preset S3DiT-T/4 --steps 300 --batch-size 16"
)
def train(
    workspace: WorkspaceOption,
    stages: Annotated[str, typer.Option(help="Stages in training order, comma-separated.")] = "lowres",
    manifest: Annotated[
        list[str] | None,
        typer.Option(
            help="STAGE=PATH (repeat per stage), or PATH for one stage. "
            "Default: the newest in WS/manifests/STAGE."
        ),
    ] = None,
    preset: Annotated[str, typer.Option(help="Model preset (S3DiT-T/4 ... S3DiT-6B/2).")] = "S3DiT-XS/2",
    steps: Annotated[int, typer.Option(help="Optimizer steps per stage.")] = 1000,
    batch_size: Annotated[int, typer.Option(help="Samples per step.")] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 3e-4,
    schedule: Annotated[str, typer.Option(help="cosine or constant (after warm-up).")] = "cosine",
    warmup: Annotated[int, typer.Option(help="Linear warm-up steps.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the sampling order, noise and timesteps.")] = 0,
    epoch_size: Annotated[int | None, typer.Option(help="Draws per epoch (default: every row).")] = None,
    repeat_cap: Annotated[int | None, typer.Option(help="Most draws of one row per stage.")] = None,
    text_encoder: Annotated[
        str | None, typer.Option(help="Local HF model folder (default: the embedded MiniLM-L6).")
    ] = None,
    text_layer: Annotated[
        int | None, typer.Option(help="Hidden-state index (default -1 MiniLM, -2 other).")
    ] = None,
    vae: Annotated[
        str | None, typer.Option(help="Local diffusers AutoencoderKL folder (default: pixels).")
    ] = None,
    feedback_every: Annotated[int, typer.Option(help="Steps between per-concept loss reports.")] = 100,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 500,
    log: Annotated[str, typer.Option(help="csv or tensorboard.")] = "csv",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    run_name: Annotated[str, typer.Option(help="Run folder: WS/train/RUN_NAME.")] = "s3dit",
) -> None:
    """Train the bundled S3-DiT on the workspace's stage manifests, stage after stage.

    Checkpoints go to WS/train/RUN_NAME/checkpoints (latest.pt, STAGE.pt), the log to log.csv,
    per-concept loss reports to WS/feedback/STAGE/STEP.parquet. Run the same command again to
    resume a stopped run exactly.
    """
    from engine.s3dit.data import ManifestError
    from engine.s3dit.model import S3DiT_models
    from engine.s3dit.train import TrainConfig, main
    from engine.workspace import Workspace

    stage_list = [s.strip() for s in stages.split(",") if s.strip()]
    if not stage_list:
        fail("--stages names no stage")
    if preset not in S3DiT_models:
        fail(f"unknown preset {preset!r}; choose one of {', '.join(S3DiT_models)}")
    if schedule not in ("cosine", "constant") or log not in ("csv", "tensorboard"):
        fail("--schedule is cosine or constant; --log is csv or tensorboard")
    if min(steps, batch_size, feedback_every, checkpoint_every) < 1 or warmup < 0 or lr <= 0:
        fail("--steps, --batch-size, --feedback-every, --checkpoint-every and --lr must be positive")
    ws = Workspace(workspace)
    if not ws.is_local:
        fail("training writes checkpoints with torch.save: use a local workspace directory")
    cfg = TrainConfig(
        workspace=ws.root,
        stages=stage_list,
        manifests=_stage_manifests(ws.root, stage_list, manifest or []),
        preset=preset,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        schedule=schedule,
        warmup=warmup,
        seed=seed,
        epoch_size=epoch_size,
        repeat_cap=repeat_cap,
        text_encoder=text_encoder,
        text_layer=text_layer,
        vae=vae,
        feedback_every=feedback_every,
        checkpoint_every=checkpoint_every,
        log=log,
        device=device,
        run_name=run_name,
    )
    try:
        summary = main(cfg)
    except (ManifestError, ValueError, OSError) as e:
        fail(str(e).splitlines()[0])
    for stage, losses in summary["losses"].items():
        tail = losses[-min(len(losses), 50) :]
        out.print(
            f"{stage}: {len(losses)} steps, loss {losses[0]:.4f} -> {sum(tail) / len(tail):.4f} (last 50)"
        )
    if summary["skipped"]:
        out.print(f"skipped {len(summary['skipped'])} draws whose image could not be read")
    out.print(f"checkpoint: {summary['checkpoint']}")
    out.print(f"feedback:   {len(summary['feedback'])} reports in {ws.path('feedback')}")
    for path in summary["refreshed"]:
        out.print(f"followed a newer manifest: {path}")


@app.command(
    epilog='Example: zcurate sample --checkpoint ws/train/s3dit/checkpoints/latest.pt --prompt "a red car" '
    "--steps 8 --cfg 4 --seed 0 --out grid.png"
)
def sample(
    checkpoint: Annotated[Path, typer.Option(help="A checkpoint written by zcurate train.")],
    prompt: Annotated[list[str], typer.Option(help="A prompt (repeat for several).")],
    out_path: Annotated[Path, typer.Option("--out", help="PNG grid to write.")] = Path("grid.png"),
    steps: Annotated[int, typer.Option(help="Euler steps.")] = 8,
    cfg: Annotated[float, typer.Option(help="Guidance scale (0: none).")] = 4.0,
    seed: Annotated[int, typer.Option(help="Noise seed.")] = 0,
    per_prompt: Annotated[int, typer.Option(help="Images per prompt (a grid row each).")] = 4,
    height: Annotated[int | None, typer.Option(help="Image height (default: the training bucket).")] = None,
    width: Annotated[int | None, typer.Option(help="Image width (default: the training bucket).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda ...")] = "auto",
    raw: Annotated[bool, typer.Option(help="Use the raw weights instead of the EMA.")] = False,
) -> None:
    """Generate images from a trained checkpoint: one grid row per prompt."""
    from engine.s3dit.data import to_image
    from engine.s3dit.train import load_for_sampling, pick_device, sample_images

    if not checkpoint.is_file():
        fail(f"checkpoint {checkpoint} does not exist")
    if steps < 1 or per_prompt < 1:
        fail("--steps and --per-prompt must be positive")
    loaded = load_for_sampling(str(checkpoint), str(pick_device(device)), use_ema=not raw)
    h, w = height or loaded["image_size"][0], width or loaded["image_size"][1]
    multiple = loaded["latents"].factor * loaded["model"].config.patch_size
    if h % multiple or w % multiple:
        fail(f"--height and --width must be multiples of {multiple}")
    prompts = [p for p in prompt for _ in range(per_prompt)]
    images = sample_images(loaded, prompts, steps, cfg, seed, h, w)  # (N, 3, H, W)
    grid = (
        images.reshape(len(prompt), per_prompt, 3, h, w)
        .permute(2, 0, 3, 1, 4)
        .reshape(3, len(prompt) * h, -1)
    )
    to_image(grid).save(out_path)
    out.print(f"wrote {out_path} ({len(prompt)} x {per_prompt} images of {w}x{h}, {steps} steps, cfg {cfg})")


if __name__ == "__main__":
    app()
