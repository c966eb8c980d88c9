"""``zcurate curate``, ``demo`` and the image stages run alone (``ocr``, ``embed``, ``safety``)."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from cli.manifest import print_manifest
from cli.shared import (
    DeviceOption,
    GpusPerActorOption,
    ModelOption,
    NumCpusOption,
    WorkspaceOption,
    embed_spec,
    err,
    fail,
    open_workspace,
    out,
)
from engine.profiling.ingest import IngestConfig
from pipelines.curate import DEFAULT_SHARD_SIZE

app = typer.Typer()


DEFAULTS = IngestConfig()

DEMO_WORKSPACE = "workspaces/demo"  # relative to the current directory; ignored by git

DEMO_LIMIT = 2000  # openclipart images the demo curates: enough for every stage to show something


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
    if summary.tagging:  # the concept tagging step (engine/graph/tagging.py)
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
        str,
        typer.Option("--kind", "--format", help="Source kind: auto, folder, table, webdataset, openclipart."),
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
    num_cpus: NumCpusOption = None,
    stages: Annotated[
        str,
        typer.Option(
            help="Comma-separated stages after ingest and profile (which always run), e.g. "
            "'ocr,embed'; 'all' runs every image stage but the opt-in 'nudity', 'profile' none of them."
        ),
    ] = "all",
    model: ModelOption = None,
    device: DeviceOption = "auto",
    gpus_per_actor: GpusPerActorOption = None,
) -> None:
    """Ingest and profile image-text pairs into a workspace, on Ray.

    Runs on a local Ray started for the job, or on the cluster named by RAY_ADDRESS. Killed jobs
    resume: run the same command again. Exits 1 when some shards failed every attempt (the others
    are written; rerunning retries only the failed ones).
    """
    from engine.profiling.records import SourceError
    from engine.profiling.source import load_source
    from engine.workspace import Workspace
    from pipelines.curate import run_curate

    if shard_size < 1 or max_pixels < 1 or max_file_bytes < 1 or max_caption_chars < 1:
        fail("--shard-size, --max-pixels, --max-file-bytes and --max-caption-chars must be positive")
    image_stages = stages_option(stages, embed_spec(Workspace(workspace), model), device, gpus_per_actor)
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
        print_failures(summary)
        raise typer.Exit(1)


def stages_option(
    stages: str, model: str | None = None, device: str = "auto", gpus_per_actor: float | None = None
) -> list:
    """``--stages``: the image stages named (``all``: every one; ``profile`` alone: none), the embed
    stage with ``model`` (checked here: a bad spec is one line, not an error inside a Ray actor)."""
    from engine.devices import DeviceError
    from engine.vectors.embedder import EmbedderError
    from engine.vectors.model_specs import describe_model
    from pipelines.stages import build_image_stages, default_stage_names

    names = [n.strip() for n in stages.split(",") if n.strip() and n.strip() != "profile"]
    names = default_stage_names() if names == ["all"] else names
    try:
        if "embed" in names:
            describe_model(model)
        return build_image_stages(names, model, device, gpus_per_actor)
    except (EmbedderError, DeviceError) as e:
        fail(str(e))
    except ValueError as e:
        fail(f"--stages: {e}")


def print_failures(summary) -> None:
    """The shards that failed every attempt, one line each, and what to do about them."""
    for shard_id, error in sorted(summary.failed_shards.items()):
        err.print(f"[bold red]failed:[/] {shard_id}: {error}", highlight=False)
    err.print(
        f"{len(summary.failed_shards)} shards failed (records in {summary.workspace}/_failed/); "
        "run the same command again to retry only them",
        highlight=False,
    )


@app.command(epilog="Example: zcurate demo --limit 500")
def demo(
    workspace: Annotated[
        str, typer.Option("--workspace", "-w", help="Where to write the demo workspace.")
    ] = DEMO_WORKSPACE,
    limit: Annotated[int, typer.Option(help="How many openclipart images to curate.")] = DEMO_LIMIT,
    num_cpus: NumCpusOption = None,
) -> None:
    """Curate the bundled demo data (openclipart from Debian) into a workspace, summarise it and
    build the lowres stage's manifest."""
    from engine.profiling.records import SourceError
    from engine.profiling.source import load_source
    from engine.workspace import Workspace
    from pipelines.curate import run_curate
    from pipelines.stages import build_image_stages, default_stage_names

    try:
        src = load_source("openclipart")
    except SourceError as e:
        fail(str(e))
    image_stages = build_image_stages(default_stage_names())  # the demo shows every default stage
    ws = Workspace(workspace)
    summary = run_curate(src, ws, limit=limit, num_cpus=num_cpus, image_stages=image_stages)
    print_summary(summary)
    # The demo ends where users start: a manifest of the first training stage.
    from engine.curation.manifest import ManifestError, build_manifest
    from engine.curation.recipe import load_recipe

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
    device: Annotated[
        str | None, typer.Option(help="auto, cpu, cuda or cuda:N (env ZCURATE_OCR_DEVICE; default cpu).")
    ] = None,
    num_cpus: NumCpusOption = None,
) -> None:
    """Read the text in every image of a curated workspace (only samples without OCR rows).

    Writes the ocr table (ocr_text, ocr_lines, ocr_conf_mean, text_area_ratio, ocr_lang,
    ocr_caption_overlap, has_watermark_text), also shown as columns of the signals view.
    Models: ZCURATE_OCR_* variables or the options; nothing is downloaded.
    """
    from engine.profiling.ocr_models import OcrConfig, OcrModelError
    from pipelines.backfill import run_image_stage
    from pipelines.stages import OcrStage

    try:  # a bad option is reported before the workspace is looked at
        config = OcrConfig.from_env(
            backend=ocr_backend,
            det_model_dir=ocr_det_model_dir,
            rec_model_dir=ocr_rec_model_dir,
            cls_model_dir=ocr_cls_model_dir,
            device=device,
        )
        stage = OcrStage(config)
    except (OcrModelError, ValueError) as e:
        fail(str(e))
    summary = run_image_stage(open_workspace(workspace), stage, num_cpus=num_cpus)
    out.print(
        f"ocr ({config.backend}): {summary.shards_run} of {summary.shards_total} shards run, "
        f"{summary.rows} rows written in {summary.seconds:.1f} s"
        + (f", {summary.changed} samples skipped (source file changed)" if summary.changed else "")
    )


def run_stage_command(stage, workspace: str, num_cpus: int | None) -> None:
    """Run one image stage over the shards of ``workspace`` that lack its table, and summarise."""
    from pipelines.backfill import run_image_stage

    summary = run_image_stage(open_workspace(workspace), stage, num_cpus=num_cpus)
    out.print(
        f"{summary.stage}: {summary.shards_run} of {summary.shards_total} shards filled, "
        f"{summary.rows} rows in {summary.table}/ ({summary.changed} skipped: source changed) "
        f"in {summary.seconds:.1f} s"
    )


@app.command(epilog="Example: zcurate embed --workspace ./ws && zcurate sql 'SELECT clip_score FROM signals'")
def embed(
    workspace: WorkspaceOption,
    model: ModelOption = None,
    device: DeviceOption = "auto",
    gpus_per_actor: GpusPerActorOption = None,
    activate: Annotated[
        bool,
        typer.Option(help="Make this model the workspace's active model (index, dedup and tags follow)."),
    ] = False,
    num_cpus: NumCpusOption = None,
) -> None:
    """Embed images and captions of a curated workspace with one model (shards it has not embedded).

    Writes that model's embeddings table (image and caption vectors at the model's width, float16,
    L2-normalised, and clip_score, their cosine) and builds its FAISS indexes. A workspace holds
    several models side by side; the first is active (clip_score in signals, dedup, tags, search)
    until 'zcurate models use' or --activate switches. The default model works offline.
    """
    from engine.devices import DeviceError
    from engine.vectors.embedder import EmbedderError
    from engine.vectors.index import build_index
    from engine.vectors.model_specs import describe_model
    from engine.workspace import Workspace
    from pipelines.models import ModelSwitchError, use_model
    from pipelines.stages import EmbedStage

    try:  # a bad spec or device fails here, in one line, not inside a Ray actor
        spec = describe_model(embed_spec(Workspace(workspace), model)).spec
        stage = EmbedStage(model=spec, device=device, gpus_per_actor=gpus_per_actor)
    except (EmbedderError, DeviceError) as e:
        fail(str(e))
    ws = open_workspace(workspace)
    run_stage_command(stage, workspace, num_cpus)
    key = stage.table.partition("@")[2]
    for modality in ("image", "text"):
        build_index(ws, modality, model=key)
    if activate:
        try:
            switched = use_model(ws, key)
        except ModelSwitchError as e:
            fail(str(e))
        out.print(f"active model: {key}" + ("" if switched.changed else " (already)"))


@app.command(epilog="Example: zcurate safety --workspace ./ws")
def safety(
    workspace: WorkspaceOption,
    device: DeviceOption = "auto",
    gpus_per_actor: GpusPerActorOption = None,
    num_cpus: NumCpusOption = None,
) -> None:
    """Score every curated image with Yahoo's open_nsfw (nsfw_score in signals; shards missing it)."""
    from engine.devices import DeviceError
    from pipelines.stages import SafetyStage

    try:
        stage = SafetyStage(device=device, gpus_per_actor=gpus_per_actor)
    except DeviceError as e:
        fail(str(e))
    run_stage_command(stage, workspace, num_cpus)
