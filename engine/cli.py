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
import pyarrow.compute as pc
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
    if summary.tagging:  # the concept tagging step (engine/tagging.py)
        t = summary.tagging
        sources = ", ".join(f"{k} {v}" for k, v in sorted(t.by_source.items())) or "none"
        out.print(f"tags: {t.tags} ({sources}) on {t.tagged_samples} samples; {len(t.mined)} concepts mined")
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
    resume: run the same command again. Exits 1 when some shards failed every attempt (the others
    are written; rerunning retries only the failed ones).
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
    if summary.failed_shards:  # every other shard is written; exit 1 so scripts and `ray job` see it
        for shard_id, error in sorted(summary.failed_shards.items()):
            err.print(f"[bold red]failed:[/] {shard_id}: {error}", highlight=False)
        err.print(
            f"{len(summary.failed_shards)} shards failed (records in {summary.workspace}/_failed/); "
            "run the same command again to retry only them",
            highlight=False,
        )
        raise typer.Exit(1)


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
    """Curate the bundled demo data (openclipart from Debian) into a workspace, summarise it and
    build the lowres stage's manifest."""
    from engine.source import SourceError, load_source
    from engine.workspace import Workspace
    from pipelines.curate import run_curate
    from pipelines.stages import IMAGE_STAGES, build_image_stages

    try:
        src = load_source("openclipart")
    except SourceError as e:
        fail(str(e))
    image_stages = build_image_stages(list(IMAGE_STAGES))  # the demo shows every stage
    ws = Workspace(workspace)
    summary = run_curate(src, ws, limit=limit, num_cpus=num_cpus, image_stages=image_stages)
    print_summary(summary)
    # The demo ends where users start: a manifest of the first training stage.
    from engine.manifest import ManifestError, build_manifest
    from engine.recipe import load_recipe

    try:
        result = build_manifest(ws, load_recipe("lowres"), seed=0)
    except ManifestError as e:
        fail(str(e))
    out.print()
    print_manifest(result.sidecar)
    out.print(f"manifest: {result.path}")
    out.print(f"\nnext: zcurate stats --workspace {os.path.relpath(summary.workspace)}")
    out.print(
        f'      zcurate sql "SELECT caption, blur, entropy FROM sample_signals LIMIT 5" '
        f"--workspace {os.path.relpath(summary.workspace)}"
    )


@app.command(
    epilog="Example: zcurate ocr --workspace ./ws  (then: zcurate sql "
    "\"SELECT ocr_text, ocr_lang FROM signals WHERE ocr_text <> ''\" --workspace ./ws)"
)
def ocr(
    workspace: WorkspaceOption,
    ocr_backend: Annotated[
        str | None, typer.Option(help="rapidocr or paddleocr (env ZCURATE_OCR_BACKEND; default rapidocr).")
    ] = None,
    ocr_det_model_dir: Annotated[
        str | None,
        typer.Option(help="PaddleOCR text detection model dir (default: the embedded PP-OCRv4)."),
    ] = None,
    ocr_rec_model_dir: Annotated[
        str | None,
        typer.Option(help="PaddleOCR text recognition model dir (default: the embedded PP-OCRv4)."),
    ] = None,
    ocr_cls_model_dir: Annotated[
        str | None,
        typer.Option(help="Text-line orientation model dir (default: the embedded PP-OCR v2.0 classifier)."),
    ] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray (default: all).")] = None,
) -> None:
    """Read the text in every image of a curated workspace (only samples without OCR rows).

    Writes the ocr table (ocr_text, ocr_lines, ocr_conf_mean, text_area_ratio, ocr_lang,
    ocr_caption_overlap, has_watermark_text), also shown as columns of the signals view.
    Models: ZCURATE_OCR_* variables or the options; nothing is downloaded.
    """
    from engine.ocr import OcrConfig, OcrModelError
    from engine.workspace import Workspace
    from pipelines.backfill import run_image_stage
    from pipelines.stages import OcrStage

    ws = Workspace(workspace)
    if not ws.exists("samples"):
        fail(f"{workspace} has no samples: run 'zcurate curate SOURCE --workspace {workspace}' first")
    try:
        config = OcrConfig.from_env(
            backend=ocr_backend,
            det_model_dir=ocr_det_model_dir,
            rec_model_dir=ocr_rec_model_dir,
            cls_model_dir=ocr_cls_model_dir,
        )
        stage = OcrStage(config)
    except (OcrModelError, ValueError) as e:
        fail(str(e))
    summary = run_image_stage(ws, stage, num_cpus=num_cpus)
    out.print(
        f"ocr ({config.backend}): {summary.shards_run} of {summary.shards_total} shards run, "
        f"{summary.rows} rows written in {summary.seconds:.1f} s"
        + (f", {summary.changed} samples skipped (source file changed)" if summary.changed else "")
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


# --- embedder and safety (issue 3, part A) --------------------------------------------------------


@app.command(
    name="train-embedder",
    epilog="Example: zcurate train-embedder --output /tmp/heads.safetensors --limit 500",
)
def train_embedder_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the heads file.")],
    epochs: Annotated[int, typer.Option(help="Passes over the training pairs.")] = 40,
    seed: Annotated[int, typer.Option(help="Seed of the head initialisation and batch order.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Use only the first N openclipart records.")] = None,
    cache_dir: Annotated[
        str | None, typer.Option(help="Where tower features are cached (default: $TMPDIR/zcurate-cache).")
    ] = None,
) -> None:
    """Train the default embedder's projection heads on openclipart (towers frozen, LiT-style).

    Caches the frozen towers' features once (minutes), trains the heads with open_clip's ClipLoss
    (seconds), reports held-out retrieval, and writes a small heads-only safetensors file that
    'zcurate embed --model FILE' (or load_embedder(FILE)) uses.
    """
    from dataclasses import asdict

    from engine.embed_train import TrainConfig, train_embedder
    from engine.source import SourceError

    if epochs < 1 or (limit is not None and limit < 2):
        fail("--epochs must be positive and --limit at least 2")
    show = sys.stderr.isatty()
    try:
        from tqdm import tqdm

        with tqdm(desc="tower features", unit="pair", disable=not show) as bar:
            result = train_embedder(
                str(output),
                TrainConfig(epochs=epochs, seed=seed, limit=limit),
                cache_dir=cache_dir,
                progress=lambda n: bar.update(n - bar.n),
            )
    except (SourceError, ValueError) as e:
        fail(str(e))
    out.print(json.dumps(asdict(result), indent=1))


def run_stage_command(stage, workspace: str, num_cpus: int | None) -> None:
    """Run one image stage over the shards of ``workspace`` that lack its table, and summarise."""
    from engine.workspace import Workspace
    from pipelines.backfill import run_image_stage

    ws = Workspace(workspace)
    if not ws.exists("samples"):
        fail(f"{workspace} has no samples: run 'zcurate curate SOURCE --workspace {workspace}' first")
    summary = run_image_stage(ws, stage, num_cpus=num_cpus)
    out.print(
        f"{summary.stage}: {summary.shards_run} of {summary.shards_total} shards filled, "
        f"{summary.rows} rows in {summary.table}/ ({summary.changed} skipped: source changed) "
        f"in {summary.seconds:.1f} s"
    )


@app.command(epilog="Example: zcurate embed --workspace ./ws && zcurate sql 'SELECT clip_score FROM signals'")
def embed(
    workspace: WorkspaceOption,
    model: Annotated[
        str | None,
        typer.Option(
            help="Embedder spec: default, a heads .safetensors, ARCH@TAG, ARCH@/path/ckpt.pt, local-dir:DIR."
        ),
    ] = None,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray (default: all).")] = None,
) -> None:
    """Embed images and captions of a curated workspace (only shards without embeddings).

    Writes embeddings/ (image and caption vectors, float16, L2-normalised) and adds clip_score
    (their cosine) to the signals view. The default model works offline.
    """
    from engine.embed import EmbedderError, load_embedder
    from pipelines.stages import EmbedStage

    if model not in (None, "default"):
        try:
            load_embedder(model)  # a bad spec fails here, in one line, not inside a Ray actor
        except EmbedderError as e:
            fail(str(e))
    run_stage_command(EmbedStage(model=model), workspace, num_cpus)


@app.command(epilog="Example: zcurate safety --workspace ./ws")
def safety(
    workspace: WorkspaceOption,
    num_cpus: Annotated[int | None, typer.Option(help="CPUs for the local Ray (default: all).")] = None,
) -> None:
    """Score every curated image with Yahoo's open_nsfw (nsfw_score in signals; shards missing it)."""
    from pipelines.stages import SafetyStage

    run_stage_command(SafetyStage(), workspace, num_cpus)


# --- vector engine: index, search, dedup (engine/index.py, engine/dedup.py) ----------------------


@app.command(name="index", epilog="Example: zcurate index --workspace ./ws --kind auto")
def index_cmd(
    workspace: WorkspaceOption,
    kind: Annotated[str, typer.Option(help="auto (flat below --exact-max), flat, ivfpq or hnsw.")] = "auto",
    exact_max: Annotated[int, typer.Option(help="auto: exact search below this many vectors.")] = 100_000,
    nlist: Annotated[int | None, typer.Option(help="IVF cells (default 4*sqrt(n)).")] = None,
    pq_m: Annotated[int | None, typer.Option(help="PQ sub-quantizers (default dim/8).")] = None,
    nprobe: Annotated[int, typer.Option(help="IVF cells searched per query.")] = 16,
    hnsw_m: Annotated[int, typer.Option(help="HNSW neighbours per node.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of the training sample and k-means.")] = 0,
    rebuild: Annotated[bool, typer.Option(help="Rebuild from scratch instead of appending.")] = False,
) -> None:
    """Build (or extend with new embeddings shards) the image and text FAISS indexes.

    Written to WS/index/: <modality>.faiss, its id map and a JSON with the model id and params.
    """
    from engine.index import IndexConfig, VectorIndexError, build_index
    from engine.workspace import Workspace

    ws = Workspace(workspace)
    if not ws.list_shards("embeddings"):
        fail(f"{workspace} has no embeddings: run 'zcurate embed --workspace {workspace}' first")
    config = IndexConfig(
        kind=kind, exact_max=exact_max, nlist=nlist, pq_m=pq_m, nprobe=nprobe, hnsw_m=hnsw_m, seed=seed
    )
    for modality in ("image", "text"):
        try:
            meta = build_index(ws, modality, config, rebuild=rebuild)
        except VectorIndexError as e:
            fail(str(e))
        if meta is None:
            out.print(f"{modality}: no vectors")
        else:
            out.print(
                f"{modality}: {meta.kind} index of {meta.ntotal} vectors ({meta.dim}-d, {meta.model_id})"
            )


@app.command(
    epilog='Example: zcurate search --workspace ./ws --text "a red bicycle" -k 5   '
    "(or --image photo.png [--target text])"
)
def search(
    workspace: WorkspaceOption,
    text: Annotated[str | None, typer.Option(help="Text query (text->image).")] = None,
    image: Annotated[Path | None, typer.Option(help="Image file query (image->image).")] = None,
    target: Annotated[str, typer.Option(help="Index to search: image or text.")] = "image",
    k: Annotated[int, typer.Option("-k", help="How many results.")] = 10,
    model: Annotated[
        str | None, typer.Option(help="Embedder spec; default: the embedded default model.")
    ] = None,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Search the workspace's FAISS indexes with a text or an image (text->image, image->image,
    image->text with --target text)."""
    from PIL import Image, UnidentifiedImageError

    from engine.embed import EmbedderError, load_embedder
    from engine.index import VectorIndexError, read_meta, search_samples
    from engine.ingest import to_rgb
    from engine.workspace import Workspace

    if (text is None) == (image is None):
        fail("give exactly one of --text or --image")
    if target not in ("image", "text"):
        fail("--target must be image or text")
    if k < 1:
        fail("-k must be positive")
    ws = Workspace(workspace)
    meta = read_meta(ws, target)
    if meta is None:
        fail(f"no {target} index in {workspace}: run 'zcurate index --workspace {workspace}' first")
    try:
        embedder = load_embedder(model)
    except EmbedderError as e:
        fail(str(e))
    if embedder.model_id != meta["model_id"]:
        fail(
            f"the index holds {meta['model_id']} vectors but the query model is "
            f"{embedder.model_id}: pass --model"
        )
    if text is not None:
        if not text.strip():
            fail("--text is empty")
        query = embedder.encode_texts([text])[0]
    else:
        try:
            with Image.open(image) as im:
                im.load()
                picture, _ = to_rgb(im)
        except (OSError, UnidentifiedImageError) as e:
            fail(f"cannot read image {image}: {e}")
        query = embedder.encode_images([picture])[0]
    try:
        table = search_samples(ws, query, target, k)
    except VectorIndexError as e:
        fail(str(e))
    write_result(table, format, output)


@app.command(epilog="Example: zcurate dedup --workspace ./ws --threshold 0.9 --phash-distance 4")
def dedup(
    workspace: WorkspaceOption,
    threshold: Annotated[
        float, typer.Option(help="Image cosine at or above which images are near-duplicates.")
    ] = 0.90,
    phash_distance: Annotated[
        int, typer.Option(help="pHash Hamming distance for exact duplicates; -1: off.")
    ] = 4,
    k: Annotated[int, typer.Option("-k", help="Neighbours per image in the k-NN graph.")] = 16,
    method: Annotated[str, typer.Option(help="Community detection: louvain or leiden.")] = "louvain",
    seed: Annotated[int, typer.Option(help="Seed of the community detection.")] = 0,
) -> None:
    """Find near-duplicate communities (k-NN graph over the image index + pHash) and mark one
    representative each: table dedup, view near_duplicates."""
    from engine.catalog import refresh_catalog
    from engine.dedup import DedupConfig, dedup_workspace
    from engine.index import VectorIndexError
    from engine.workspace import Workspace

    ws = Workspace(workspace)
    if not ws.list_shards("signals"):
        fail(f"{workspace} has no samples: run 'zcurate curate SOURCE --workspace {workspace}' first")
    if not -1 <= threshold <= 1 or method not in ("louvain", "leiden") or k < 1:
        fail("--threshold must be in [-1, 1], --method louvain or leiden, -k positive")
    config = DedupConfig(threshold=threshold, phash_distance=phash_distance, k=k, method=method, seed=seed)
    try:
        summary = dedup_workspace(ws, config)
    except (VectorIndexError, ValueError) as e:
        fail(str(e))
    refresh_catalog(ws)
    out.print(
        f"{summary.samples} samples · {summary.communities} duplicate communities · "
        f"{summary.duplicates} duplicates (not representatives) · pairs: {summary.semantic_pairs} semantic, "
        f"{summary.phash_pairs} pHash"
    )


# --- concept graph and tagging (engine/graph.py, engine/tagging.py) ------------------------------

graph_app = typer.Typer(
    help="The concept graph (WordNet nouns + concepts mined from captions): build it, look around it.",
    no_args_is_help=True,
    epilog="Example: zcurate graph show lorikeet.n.01 --workspace ./ws",
)
app.add_typer(graph_app, name="graph")


def _graph_workspace(workspace: str):
    from engine.workspace import Workspace

    ws = Workspace(workspace)
    if not ws.list_shards("concepts"):
        fail(f"{workspace} has no concept graph yet: run 'zcurate tag --workspace {workspace}' first")
    return ws


@app.command(epilog="Example: zcurate tag --workspace ./ws")
def tag(
    workspace: WorkspaceOption,
    min_mined: Annotated[
        int, typer.Option(help="Samples a caption word WordNet lacks needs to become a concept.")
    ] = 5,
    clip: Annotated[
        bool, typer.Option(help="CLIP zero-shot tags from the embeddings table (when it exists).")
    ] = True,
    embedder: Annotated[
        str | None, typer.Option(help="The embedder spec that made the embeddings (as for 'zcurate embed').")
    ] = None,
) -> None:
    """Tag every usable sample with concepts (caption and OCR text) and rebuild the workspace graph.

    Also runs at the end of 'zcurate curate'. Writes the tags table and the concepts,
    concept_edges and concept_ancestors tables; see the concept_counts, tag_rarity and
    concept_coverage views.
    """
    from engine.catalog import refresh_catalog
    from engine.tagging import TagConfig, tag_workspace
    from engine.workspace import Workspace

    ws = Workspace(workspace)
    if not ws.list_shards("samples"):
        fail(f"{workspace} has no samples: run 'zcurate curate SOURCE --workspace {workspace}' first")
    if min_mined < 1:
        fail("--min-mined must be positive")
    summary = tag_workspace(ws, config=TagConfig(min_mined_samples=min_mined, clip=clip, embedder=embedder))
    refresh_catalog(ws)
    out.print(
        f"tagged {summary.tagged_samples} of {summary.samples} samples: {summary.tags} tags "
        f"({', '.join(f'{k} {v}' for k, v in sorted(summary.by_source.items())) or 'none'}); "
        f"graph {summary.concepts} concepts, {len(summary.mined)} mined from captions "
        f"({summary.attach_method or 'none'}); {summary.seconds:.1f} s"
    )
    if summary.clip_skipped:
        out.print(f"clip zero-shot: not run ({summary.clip_skipped})")
    else:
        out.print(
            f"clip zero-shot: threshold {summary.clip_threshold:.3f} (calibrated: precision "
            f"{summary.clip_precision:.2f}, recall {summary.clip_recall:.2f} against the text tags)"
        )


@graph_app.command("build", epilog="Example: zcurate graph build --workspace ./ws")
def graph_build(
    workspace: Annotated[
        str | None,
        typer.Option(
            "--workspace", "-w", envvar="ZCURATE_WORKSPACE", help="Rebuild this workspace's graph tables."
        ),
    ] = None,
) -> None:
    """Load and prune the WordNet graph; with --workspace, rewrite that workspace's graph tables.

    Without a workspace it prints the base graph's size and build time. With one, it re-prunes
    with PageRank weighted by the workspace's tag counts (no retagging).
    """
    import time

    from engine.graph import GraphConfig, load_graph, load_workspace_graph, prune_graph, write_workspace_graph

    started = time.perf_counter()
    if workspace is None:
        graph = load_graph()
        loaded = time.perf_counter()
        pruned = prune_graph(graph, GraphConfig())
        out.print(
            f"WordNet graph: {graph.number_of_nodes()} concepts, {graph.number_of_edges()} edges "
            f"(loaded in {loaded - started:.1f} s); kept {len(pruned.kept)} after pruning "
            f"({len(pruned.visual)} visual) in {time.perf_counter() - loaded:.1f} s"
        )
        return
    from engine.catalog import refresh_catalog

    ws = _graph_workspace(workspace)
    n = write_workspace_graph(ws, load_workspace_graph(ws), GraphConfig())
    refresh_catalog(ws)
    out.print(f"wrote {n} concepts to {workspace} in {time.perf_counter() - started:.1f} s")


@graph_app.command("show", epilog="Example: zcurate graph show lorikeet.n.01 --workspace ./ws")
def graph_show(
    concept: Annotated[str, typer.Argument(help="A synset name (bird.n.01) or a concept id.")],
    workspace: WorkspaceOption,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """A concept's neighbourhood: parents, children, siblings, parts, with sample counts."""
    from engine.graph import concept_neighbourhood

    ws = _graph_workspace(workspace)
    try:
        result = concept_neighbourhood(ws, concept)
    except ValueError as e:
        fail(str(e))
    if format is OutputFormat.json:
        sys.stdout.write(json.dumps(result, default=str, ensure_ascii=False, indent=1) + "\n")
        return
    columns = ["synset", "depth", "source", "n_direct", "n_rollup", "gloss"]
    print_table(pa.Table.from_pylist([result["concept"]]).select(["concept_id", *columns]), "concept")
    for key in ("parents", "children", "siblings", "parts", "wholes"):
        if result[key]:
            rows = pa.Table.from_pylist(result[key]).select(columns)
            print_table(rows, key, max_rows=30)


@graph_app.command("samples", epilog="Example: zcurate graph samples bird.n.01 --workspace ./ws --limit 20")
def graph_samples(
    concept: Annotated[str, typer.Argument(help="A synset name (bird.n.01) or a concept id.")],
    workspace: WorkspaceOption,
    limit: Annotated[int, typer.Option(help="At most this many samples.")] = 50,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Samples tagged with a concept or anything below it (a lorikeet counts for bird.n.01)."""
    from engine.graph import subtree_samples

    ws = _graph_workspace(workspace)
    try:
        table = subtree_samples(ws, concept, limit=limit)
    except ValueError as e:
        fail(str(e))
    write_result(table, format, output, title=f"samples under {concept}")


@graph_app.command("gaps", epilog="Example: zcurate graph gaps --workspace ./ws --depth 6 --top 15")
def graph_gaps(
    workspace: WorkspaceOption,
    depth: Annotated[int, typer.Option(help="Compare the concepts at this depth (uniform prior).")] = 6,
    prior: Annotated[
        Path | None, typer.Option(help="JSON file {synset: weight} to compare against instead.")
    ] = None,
    top: Annotated[int, typer.Option(help="Show this many at each end.")] = 15,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write every row here.")] = None,
) -> None:
    """The most over- and under-represented concepts relative to a target prior."""
    from engine.graph import representation_gaps

    ws = _graph_workspace(workspace)
    weights = None
    if prior is not None:
        try:
            weights = json.loads(prior.read_text(encoding="utf-8"))
            if not isinstance(weights, dict) or not weights:
                raise ValueError("expected a non-empty JSON object {synset: weight}")
        except (OSError, ValueError) as e:
            fail(f"--prior {prior}: {e}")
    try:
        table = representation_gaps(ws, weights, depth)
    except ValueError as e:
        fail(str(e))
    if format is not OutputFormat.table or output is not None:
        write_result(table, format, output)
        return
    print_table(table.slice(0, top), "most over-represented")
    print_table(table.slice(max(0, table.num_rows - top)), "most under-represented")


# --- manifests (engine/manifest.py): the Active Curation Engine -----------------------------------

manifest_app = typer.Typer(
    help="Stage manifests: what a trainer samples, in which stage, how often (recipes in engine/recipes).",
    invoke_without_command=True,
    epilog="Example: zcurate manifest --workspace ./ws --stage lowres --seed 0  (then: zcurate manifest "
    "show ID --workspace ./ws)",
)
app.add_typer(manifest_app, name="manifest")


def print_manifest(sidecar: dict) -> None:
    """A sidecar's summary: counts per filter, weights, concept marginal before/after, buckets."""
    counts = sidecar["counts"]
    out.print(
        f"manifest {sidecar['manifest_id']}  stage {sidecar['stage']}  seed {sidecar['seed']}  "
        f"rows {counts['rows']} ({counts['t2i']} text-to-image, {counts['i2i']} image-to-image)"
    )
    out.print(f"pool {counts['pool']} usable samples")
    steps = [
        {"step": f"filter {c['filter']}", "removed": c["removed"], "missing": c["missing"]}
        for c in counts["filters"]
    ]
    steps += [
        {"step": "dedup (representatives only)", "removed": counts["dedup_removed"], "missing": None},
        {"step": "balance (sample mode)", "removed": counts["balance_dropped"], "missing": None},
        {"step": "zero weight", "removed": counts["zero_weight"], "missing": None},
    ]
    print_table(pa.Table.from_pylist(steps), "what each step removed")
    marginal = sidecar["concept_marginal"]
    rows = [
        {"": side, **{k: marginal[side][k] for k in ("concepts", "entropy", "normalized_entropy", "gini")}}
        for side in ("before", "after")
    ]
    print_table(pa.Table.from_pylist(rows), "concept marginal (before = filtered pool, after = weights)")
    top = [
        {"concept": c.get("name", c["concept_id"]), "before": b["share"] if b else None, "after": c["share"]}
        for c in marginal["after"]["top"]
        for b in [next((x for x in marginal["before"]["top"] if x["concept_id"] == c["concept_id"]), None)]
    ]
    if top:
        print_table(pa.Table.from_pylist(top), "top concepts after balancing (share)")
    if sidecar["buckets"]:
        print_table(pa.Table.from_pylist(sidecar["buckets"]), "buckets")
    out.print(f"weights {sidecar['weights']}")
    out.print(f"caption forms {sidecar['caption_forms']}")
    if sidecar.get("draws"):
        out.print(f"draws {sidecar['draws']}")
    if sidecar["feedback"].get("reports"):
        out.print(f"feedback: {sidecar['feedback']['reports']} reports, top {sidecar['feedback']['top']}")
    for warning in sidecar["warnings"]:
        err.print(f"warning: {warning}")


@manifest_app.callback()
def manifest(
    ctx: typer.Context,
    workspace: Annotated[
        str | None,
        typer.Option("--workspace", "-w", envvar="ZCURATE_WORKSPACE", help="Workspace directory or URI."),
    ] = None,
    stage: Annotated[
        str | None, typer.Option(help="Stage recipe: lowres, omni, sft (engine/recipes), or see --recipe.")
    ] = None,
    recipe: Annotated[
        Path | None, typer.Option(help="A recipe TOML file of your own (its 'stage' names the stage).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of every random choice (captions, draws, pairs).")] = 0,
    size: Annotated[
        int | None, typer.Option(help="Materialise N draws (epochs without replacement, repeat cap).")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a recipe key, e.g. --set filters.clip_score.min=0.3 (repeatable)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the same manifest exists.")] = False,
) -> None:
    """Build a stage's sampling manifest: WS/manifests/STAGE/ID.parquet and ID.json (the sidecar)."""
    if ctx.invoked_subcommand is not None:
        return
    from engine.manifest import ManifestError, build_manifest
    from engine.recipe import RecipeError, load_recipe, parse_override
    from engine.workspace import Workspace

    if workspace is None:
        fail("--workspace is required")
    if (stage is None) == (recipe is None):
        fail("give --stage (lowres, omni, sft) or --recipe FILE")
    try:
        overrides = dict(parse_override(item) for item in set_ or [])
        chosen = load_recipe(str(recipe) if recipe else stage, overrides)
        result = build_manifest(Workspace(workspace), chosen, seed=seed, size=size, force=force)
    except (RecipeError, ManifestError) as e:
        fail(str(e))
    print_manifest(result.sidecar)
    out.print(f"\n{'found' if result.cached else 'wrote'} {result.path}")


def _manifest_workspace(workspace: str | None):
    from engine.workspace import Workspace

    if workspace is None:
        fail("--workspace is required")
    return Workspace(workspace)


@manifest_app.command("show", epilog="Example: zcurate manifest show 3f2a9c --workspace ./ws --rows 5")
def manifest_show(
    manifest_id: Annotated[str, typer.Argument(help="Manifest id (or a unique prefix).")],
    workspace: WorkspaceOption,
    rows: Annotated[int, typer.Option(help="Also print this many rows, highest weight first.")] = 0,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json (the sidecar).")
    ] = OutputFormat.table,
) -> None:
    """Summarise a manifest from its sidecar (counts per filter, marginal before/after, buckets)."""
    from engine.manifest import ManifestError, find_manifest

    ws = _manifest_workspace(workspace)
    try:
        path, sidecar = find_manifest(ws, manifest_id)
    except ManifestError as e:
        fail(str(e))
    if format == OutputFormat.json:
        out.print_json(json.dumps(sidecar))
        return
    print_manifest(sidecar)
    if rows > 0:
        table = pq.read_table(path, filesystem=ws.fs).drop_columns(["concept_ids"])
        order = pc.sort_indices(table, [("weight", "descending"), ("sample_id", "ascending")])
        print_table(table.take(order).slice(0, rows), f"top {rows} rows by weight")
    out.print(path)


@manifest_app.command("list", epilog="Example: zcurate manifest list --workspace ./ws")
def manifest_list(
    workspace: WorkspaceOption,
    stage: Annotated[str | None, typer.Option(help="Only this stage.")] = None,
) -> None:
    """List the workspace's manifests."""
    from engine.manifest import list_manifests

    print_table(
        pa.Table.from_pylist(list_manifests(_manifest_workspace(workspace), stage) or [{"manifest_id": None}])
    )


@manifest_app.command("diff", epilog="Example: zcurate manifest diff 3f2a9c 81b0de --workspace ./ws")
def manifest_diff(
    a: Annotated[str, typer.Argument(help="First manifest id (or prefix).")],
    b: Annotated[str, typer.Argument(help="Second manifest id (or prefix).")],
    workspace: WorkspaceOption,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="table or json.")
    ] = OutputFormat.table,
) -> None:
    """What changed between two manifests: rows, weight shares, concept marginal, recipe keys."""
    from engine.manifest import ManifestError, diff_manifests

    try:
        result = diff_manifests(_manifest_workspace(workspace), a, b)
    except ManifestError as e:
        fail(str(e))
    if format == OutputFormat.json:
        out.print_json(json.dumps(result))
        return
    out.print(
        f"a {result['a']} (seed {result['seed']['a']})  ->  b {result['b']} (seed {result['seed']['b']})"
    )
    print_table(pa.Table.from_pylist([result["rows"]]), "rows")
    out.print(f"share of common rows, b / a: {result['share_ratio_b_over_a']}")
    marginal = [{"": side, **values} for side, values in result["concept_marginal"].items()]
    print_table(pa.Table.from_pylist(marginal), "concept marginal")
    if result["recipe_changes"]:
        changes = [
            {k: json.dumps(v) if k != "key" else v for k, v in c.items()} for c in result["recipe_changes"]
        ]
        print_table(pa.Table.from_pylist(changes), "recipe changes")
    if result["feedback_changed"]:
        out.print("trainer feedback differs between the two")


@manifest_app.command(
    "gaps",
    epilog="Example: zcurate manifest gaps 3f2a9c --concept lorikeet.n.01 --workspace ./ws --boost 3",
)
def manifest_gaps(
    manifest_id: Annotated[str, typer.Argument(help="The manifest whose gaps to fill (id or prefix).")],
    workspace: WorkspaceOption,
    concept: Annotated[str | None, typer.Option(help="A concept (synset such as dog.n.01, or id).")] = None,
    text: Annotated[
        str | None, typer.Option(help="A free-text description of what the model fails on.")
    ] = None,
    k: Annotated[int, typer.Option("-k", help="How many candidates.")] = 20,
    boost: Annotated[
        float | None,
        typer.Option(help="Up-weight the candidates by this factor in the stage's next manifests."),
    ] = None,
    format: Annotated[
        OutputFormat, typer.Option("--format", "-f", help="Output format.")
    ] = OutputFormat.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """Find pool samples that are not in a manifest but fit a concept or a failure description
    (FAISS text->image retrieval, plus the concept's tagged subtree); optionally boost them."""
    from engine.feedback import write_boost
    from engine.gaps import gap_candidates
    from engine.manifest import ManifestError, find_manifest

    if (concept is None) == (text is None):
        fail("give exactly one of --concept or --text")
    if k < 1:
        fail("-k must be positive")
    ws = _manifest_workspace(workspace)
    try:
        path, sidecar = find_manifest(ws, manifest_id)
        exclude = pq.read_table(path, columns=["sample_id"], filesystem=ws.fs)["sample_id"]
        table = gap_candidates(ws, exclude, concept=concept, text=text, k=k)
    except (ManifestError, ValueError) as e:
        fail(str(e))
    write_result(table, format, output)
    if boost is not None and table.num_rows:
        reason = f"gaps of {sidecar['manifest_id']}: " + (
            f"concept {concept}" if concept else f"text {text!r}"
        )
        try:
            where = write_boost(ws, sidecar["stage"], table["sample_id"].to_pylist(), boost, reason)
        except ValueError as e:
            fail(str(e))
        err.print(
            f"boosted {table.num_rows} samples x{boost:g} for stage {sidecar['stage']} ({where}); "
            f"the next 'zcurate manifest --stage {sidecar['stage']}' uses them"
        )


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


@app.command(epilog="Example: ZCURATE_API_KEYS=devkey:read+write zcurate serve --workspace ./ws --port 8000")
def serve(
    workspace: WorkspaceOption,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
) -> None:
    """Serve the REST API (FastAPI + uvicorn) and the dashboard (at /) over a workspace.

    OpenAPI docs at /docs; the dashboard asks for a key once and keeps it for the browser tab.

    API keys come from ZCURATE_API_KEYS ("KEY:read,KEY2:read+write") or ZCURATE_API_KEY_FILE
    (lines "sha256hex(KEY):SCOPES"); every limit from ZCURATE_* variables (api/settings.py).
    """
    import uvicorn

    from api.auth import KeyConfigError
    from api.main import create_app

    if not 0 < port < 65536:
        fail("--port must be between 1 and 65535")
    try:
        service = create_app(workspace)
    except (ValueError, KeyConfigError) as e:
        fail(str(e))
    uvicorn.run(service, host=host, port=port, log_level="info")


if __name__ == "__main__":
    app()
