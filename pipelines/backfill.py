"""Run one image stage over a workspace curated before: the shards that lack its table.

A user who curated without OCR (or before the embedder existed) runs ``zcurate ocr`` or
``zcurate embed``; the curate job calls this too for finished shards that miss a stage it was
asked to run. Per shard, ``pipelines.runner.ShardRunner`` (the curate job's own loop, in backfill
mode) reads the usable records again from the source through the saved plan
(``engine.profiling.plan.load_plans``), decodes them exactly as the curate job did, hands them to
the stage, and writes the stage's table shard atomically, so a killed run resumes where it stopped.

A record whose file changed since it was curated (its sample_id differs now) is skipped and
counted: its row stays missing and the catalog shows nulls for its stage columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engine.catalog import refresh_catalog
from engine.profiling.plan import load_plans
from engine.workspace import Workspace
from pipelines.runner import ShardRunner
from pipelines.runtime import map_shards, ray_session, record_failure
from pipelines.stages import Stage, prepare_stages


@dataclass
class BackfillSummary:
    """What one run of a stage did."""

    stage: str
    table: str
    shards_total: int  # finished curate shards in the workspace
    shards_run: int  # of them, the ones this run filled
    rows: int  # stage rows written
    changed: int  # usable samples skipped because their source file changed since curation
    seconds: float
    failed: dict[str, str] = field(default_factory=dict)  # shard_id -> last error (runtime.record_failure)


def pending_shards(ws: Workspace, table: str) -> tuple[list[dict], dict, int]:
    """(work items, sources by key, finished curate shards) for the shards that lack ``table``."""
    finished = set(ws.list_shards("samples"))
    have = set(ws.list_shards(table))
    items, sources = [], {}
    for source, plan, config in load_plans(ws):
        sources[plan.source_key] = (source, plan, config)
        for index in range(plan.shard_count):
            shard_id = plan.shard_id(index)
            if shard_id in finished and shard_id not in have:
                items.append({"source_key": plan.source_key, "shard": index})
    return items, sources, len(finished)


def run_image_stage(
    ws: Workspace,
    stage: Stage,
    num_cpus: int | None = None,
    progress: bool | None = None,
    refresh: bool = True,
) -> BackfillSummary:
    """Fill ``stage.table`` for every finished shard of ``ws`` that lacks it.

    Args:
        num_cpus: CPUs of the local Ray started when there is work (ignored when RAY_ADDRESS is set).
        progress: draw a progress bar (default: when stderr is a terminal).
        refresh: rebuild the catalog afterwards (the curate job does it once at its end).
    """
    started = time.monotonic()
    prepare_stages(ws, [stage])  # before its table is read: the embed stage names its model's table here
    items, sources, total = pending_shards(ws, stage.table)
    results: list[dict] = []
    failed: dict[str, str] = {}
    if items:
        with ray_session(num_cpus):
            kwargs = {"ws": ws, "sources": sources, "stages": [stage], "backfill": True}
            results, failures = map_shards(
                items, ShardRunner, kwargs, desc=stage.name, progress=progress, num_gpus=stage.num_gpus
            )
        for failure in failures:
            shard_id = sources[failure.item["source_key"]][1].shard_id(failure.item["shard"])
            failed[shard_id] = record_failure(ws, shard_id, stage.table, failure)
    if refresh:
        refresh_catalog(ws)
    return BackfillSummary(
        stage=stage.name,
        table=stage.table,
        shards_total=total,
        shards_run=len(results),
        rows=sum(r["rows"] for r in results),
        changed=sum(r["changed"] for r in results),
        seconds=round(time.monotonic() - started, 3),
        failed=failed,
    )
