"""The curate job: a source -> every table of its shards in a workspace, on Ray; then the global steps.

Top to bottom:

1. plan      ``engine.profiling.plan.plan_source`` fixes which record goes into which shard (saved
             first, so a rerun puts every record in the same shard).
2. shards    every shard without a ``samples`` file goes to a Ray actor running
             ``pipelines.runner.ShardRunner``: read -> ingest -> stages (profile and the image stages
             asked for: OCR, embedding, safety) -> each stage's table, then ``samples`` (the mark
             of a finished shard), each written atomically.
3. backfill  shards an earlier run finished without a stage asked for now get it
             (``pipelines.backfill``).
4. finalize  ``mark_duplicate_rows`` rejects repeated (image, caption) pairs across shards.
5. global    ``engine.vectors.dedup.index_and_dedup`` (FAISS indexes, near-duplicate communities),
             ``engine.graph.tagging.tag_workspace`` (concepts mined from all the captions), then
             ``engine.catalog.refresh_catalog`` (the DuckDB views).

Kill it at any point and run it again: finished shards are skipped, unfinished ones redone, and
finalize is idempotent, so the result has every record exactly once. A shard that fails every
attempt (``pipelines.runtime.map_shards``: its worker raised, or its worker process died) is
recorded in ``_failed/<shard_id>.json`` and named in the summary; every other shard and the global
steps complete, and running the same command again retries only the failed shards. Each step shows
a progress bar on a terminal and one line otherwise (``pipelines.progress``).
"""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import schema
from engine.catalog import refresh_catalog
from engine.profiling.file_stamps import changed_shards
from engine.profiling.ingest import IngestConfig, find_duplicate_rows, reject_duplicate
from engine.profiling.plan import ShardPlan, plan_source, save_source_config
from engine.profiling.source import Source
from engine.vectors.dedup import index_and_dedup
from engine.workspace import Workspace
from pipelines.backfill import run_image_stage
from pipelines.progress import step_progress
from pipelines.runner import ShardRunner
from pipelines.runtime import clear_failures, map_shards, ray_session, record_failure
from pipelines.sources import drop_shards
from pipelines.stages import ProfileStage, Stage, prepare_stages

if TYPE_CHECKING:
    from engine.graph.tagging import TagSummary

DEFAULT_SHARD_SIZE = 256  # records: ~3 s of work per shard on one core for openclipart (64 records
# took ~0.8 s in bench/), so a killed job loses little; a 1M-pair source is ~4k shards
# (a small plan, and enough shards to keep a large cluster busy)


@dataclass
class CurateSummary:
    """What one run did, for the summary table."""

    workspace: str
    source: str
    shards_total: int
    shards_run: int
    samples: int
    ok: int
    rejected: int
    reject_reasons: dict[str, int] = field(default_factory=dict)
    warnings: dict[str, int] = field(default_factory=dict)
    duplicates_marked: int = 0
    catalog: str | None = None
    records_run: int = 0  # records in the shards this run worked on
    work_span_s: float = 0.0  # first shard started -> last shard finished (no start-up, no finalize)
    shard_busy_s: float = 0.0  # sum of shard task times over all workers
    tagging: TagSummary | None = None  # what the tagging step did (None: skipped or up to date)
    failed_shards: dict[str, str] = field(default_factory=dict)  # shard_id -> last error (_failed/)


def mark_duplicate_rows(ws: Workspace) -> int:
    """Reject usable rows that repeat an earlier (image, caption) pair in another shard.

    "Earlier" is the smallest (shard_id, row_index), so the outcome does not depend on which
    shard finished first. Affected shards are rewritten atomically, every other table of the
    shard (signals, image stage tables) before samples; rerunning after a kill finds what is left.
    Returns the number of rows marked.
    """
    columns = ["sample_id", "status", "shard_id", "row_index", "ref"]
    duplicates = find_duplicate_rows(ws.read_table("samples", columns=columns))
    if duplicates.num_rows == 0:
        return 0
    by_shard: dict[str, dict[int, str]] = {}
    for row in duplicates.select(["shard_id", "row_index", "kept"]).to_pylist():
        by_shard.setdefault(row["shard_id"], {})[row["row_index"]] = row["kept"]
    for shard_id, kept_by_row in sorted(by_shard.items()):
        samples = ws.read_shard("samples", shard_id).to_pylist()
        source_key = shard_id.rsplit("-", 2)[1]
        dropped = set()
        for sample in samples:
            if sample["row_index"] in kept_by_row:
                dropped.add(sample["sample_id"])
                reject_duplicate(sample, kept_by_row[sample["row_index"]], source_key)
        dropped_ids = pa.array(sorted(dropped), pa.string())
        for table_name in ws.table_names():
            if table_name != "samples" and ws.has_shard(table_name, shard_id):
                table = ws.read_shard(table_name, shard_id)
                ws.write_shard(
                    table_name, shard_id, table.filter(pc.invert(pc.is_in(table["sample_id"], dropped_ids)))
                )
        ws.write_shard("samples", shard_id, pa.Table.from_pylist(samples, schema=schema.SAMPLES))
    return duplicates.num_rows


def check_shared(ws: Workspace, finished: list[dict]) -> None:
    """Fail clearly when the workers wrote shards the driver cannot see: on a cluster, a local
    workspace path that is not the same shared directory on every node."""
    unseen = [f["shard_id"] for f in finished if not ws.has_shard("samples", f["shard_id"])]
    if unseen:
        raise RuntimeError(
            f"{len(unseen)} shards the workers wrote (e.g. {unseen[0]}) are not in {ws.root} as this "
            "process sees it: on a Ray cluster the workspace must be a shared path or object storage"
        )


def summarize(ws: Workspace, plan: ShardPlan, shards_run: int, duplicates: int) -> CurateSummary:
    """Counts for this source's rows in the workspace."""
    columns = ["status", "reject_reason", "warnings", "shard_id", "source"]
    table = ws.read_table("samples", columns=columns)
    table = table.filter(pc.starts_with(table["shard_id"], plan.prefix + "-"))
    status = Counter(table["status"].to_pylist())
    reasons = Counter(r for r in table["reject_reason"].to_pylist() if r)
    ok_rows = table.filter(pc.equal(table["status"], schema.STATUS_OK))
    warnings = Counter(w for codes in ok_rows["warnings"].to_pylist() for w in (codes or []))
    source = table["source"][0].as_py() if table.num_rows else ""
    return CurateSummary(
        workspace=ws.root,
        source=source,
        shards_total=plan.shard_count,
        shards_run=shards_run,
        samples=table.num_rows,
        ok=status[schema.STATUS_OK],
        rejected=status[schema.STATUS_REJECTED],
        reject_reasons=dict(reasons.most_common()),
        warnings=dict(warnings.most_common()),
        duplicates_marked=duplicates,
    )


def run_tagging(ws: Workspace, progress: bool | None, num_cpus: int | None = None) -> TagSummary | None:
    """Tag the workspace unless its tags are up to date or the graph extra is not installed; the
    per-shard passes on Ray for a large workspace or a cluster (``pipelines.tag_job``).

    CLIP zero-shot tags use the workspace's active model (``engine.embedding_models``).
    """
    try:
        from engine.graph.tagging import TagConfig, tags_up_to_date
    except ImportError:  # networkx comes with the [all] extra; a core install curates without tags
        return None
    from pipelines.tag_job import run_tag_job

    if tags_up_to_date(ws):
        return None
    return run_tag_job(ws, TagConfig(), progress=progress, num_cpus=num_cpus)


def run_curate(
    source: Source,
    ws: Workspace,
    config: IngestConfig | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    limit: int | None = None,
    num_cpus: int | None = None,
    progress: bool | None = None,
    image_stages: list[Stage] = (),
    tag: bool = True,
) -> CurateSummary:
    """Ingest and profile ``source`` into ``ws`` (resuming whatever a killed run left).

    Args:
        image_stages: image stages to run on every usable sample (see ``pipelines.stages``).
            Shards an earlier run finished without one of them get it through
            ``pipelines.backfill.run_image_stage``; nothing else of theirs is redone.
        num_cpus: CPUs of the local Ray this job starts (ignored when RAY_ADDRESS is set).
        progress: a progress bar per step (default: on a terminal; otherwise one line per step;
            False: nothing).
        tag: tag every usable sample with graph concepts at the end (``engine.graph.tagging``; skipped
            when the tags are newer than every shard).
    """
    config = config or IngestConfig()
    ws.create()
    plan = plan_source(ws, source, shard_size, limit)
    drop_shards(ws, changed_since_ingest(ws, source, plan))  # rewritten files: their shards run again
    save_source_config(ws, source, config)
    done = set(ws.list_shards("samples"))
    pending = [i for i in range(plan.shard_count) if plan.shard_id(i) not in done]
    finished, failed = [], {}
    # Ray starts only when there is work: a rerun of a finished job takes a moment.
    with ray_session(num_cpus) if pending else nullcontext():
        if pending:
            finished, failed = curate_shards(ws, source, plan, config, pending, list(image_stages), progress)
        for stage in image_stages:  # shards an earlier run finished without this stage
            backfill = run_image_stage(ws, stage, num_cpus=num_cpus, progress=progress, refresh=False)
            failed.update(backfill.failed)
    clear_failures(ws)
    duplicates = mark_duplicate_rows(ws)
    summary = summarize(ws, plan, len(pending), duplicates)
    summary.failed_shards = failed
    if finished:
        summary.records_run = sum(f["samples"] for f in finished)
        summary.work_span_s = max(f["finished"] for f in finished) - min(f["started"] for f in finished)
        summary.shard_busy_s = sum(f["finished"] - f["started"] for f in finished)
    with step_progress("index and dedup", show=progress):
        # the vector engine's global steps, when embeddings exist; on the embed stage's device
        device = next((s.device for s in image_stages if s.name == "embed"), "cpu")
        index_and_dedup(ws, device=device)
    if tag:  # a global step: the graph grows with all the captions
        with step_progress("tag", show=progress):
            summary.tagging = run_tagging(ws, progress, num_cpus)
    with step_progress("catalog", show=progress):
        summary.catalog = refresh_catalog(ws)
    return summary


def changed_since_ingest(ws: Workspace, source: Source, plan: ShardPlan) -> list[str]:
    """Shard ids of ``plan`` holding a record whose file changed on disk since it was planned
    (``engine.profiling.file_stamps``); the first run only records the stamps."""
    rows = pq.read_table(ws.path(plan.path), columns=["shard", "ref", "uri", "caption_ref"], filesystem=ws.fs)
    return [plan.shard_id(n) for n in changed_shards(ws, source, rows, plan.prefix)]


def curate_runner_kwargs(
    ws: Workspace, source: Source, plan: ShardPlan, config: IngestConfig, image_stages: list[Stage] = ()
) -> dict:
    """What a curate job's ``ShardRunner`` is built from on each actor: the source, profile and the
    image stages asked for (``ShardRunner(**curate_runner_kwargs(...))`` runs a shard in-process)."""
    stages = [ProfileStage(), *image_stages]
    prepare_stages(ws, stages)  # in the driver: the embed stage registers its model and names its table
    return {"ws": ws, "sources": {plan.source_key: (source, plan, config)}, "stages": stages}


def shard_item(plan: ShardPlan, index: int) -> dict:
    """The work item of shard ``index`` of a source's plan (what ``ShardRunner`` takes)."""
    return {"source_key": plan.source_key, "shard": index}


def curate_shards(
    ws: Workspace,
    source: Source,
    plan: ShardPlan,
    config: IngestConfig,
    pending: list[int],
    image_stages: list[Stage],
    progress: bool | None,
) -> tuple[list[dict], dict[str, str]]:
    """Run the pending shards on Ray (``ShardRunner`` with profile and the image stages); returns
    the finished shards' counts and the failed shards' errors (each recorded in ``_failed/``)."""
    runner_kwargs = curate_runner_kwargs(ws, source, plan, config, image_stages)
    finished, failures = map_shards(
        [shard_item(plan, i) for i in pending],
        ShardRunner,
        runner_kwargs,
        desc="curate",
        progress=progress,
        num_gpus=max(stage.num_gpus for stage in runner_kwargs["stages"]),
    )
    check_shared(ws, finished)
    failed = {}
    for failure in failures:
        shard_id = plan.shard_id(failure.item["shard"])
        failed[shard_id] = record_failure(ws, shard_id, "samples", failure)
    return finished, failed
