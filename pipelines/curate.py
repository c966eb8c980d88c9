"""The curate job: a source -> ``samples`` and ``signals`` shards in a workspace, on Ray.

Top to bottom:

1. plan     ``engine.plan.plan_source`` fixes which record goes into which shard (saved first).
2. shards   every shard without a ``samples`` file becomes one Ray Data row; ``CurateShard``
            runs ingest and profile over its records, hands every usable sample to the image
            stages asked for (OCR, embedding, ...), and writes ``signals``, each image stage's
            table, then ``samples``, each atomically (a ``samples`` file is the mark of a
            finished shard).
3. finalize ``mark_duplicate_rows`` rejects repeated (image, caption) pairs across shards.
4. tag      ``engine.tagging.tag_workspace`` tags every usable sample with graph concepts
            (a global step: concepts mined from captions need all of them).
5. catalog  ``engine.catalog.refresh_catalog`` rebuilds the DuckDB views.

Kill it at any point and run it again: finished shards are skipped, unfinished ones redone,
and finalize is idempotent, so the result has every record exactly once. A shard that fails
every attempt (``pipelines.runtime.map_shards``: its worker raised, or its worker process died)
is recorded in ``_failed/<shard_id>.json`` and named in the summary; every other shard and the
global steps complete, and running the same command again retries only the failed shards.
"""

from __future__ import annotations

import time
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from engine import schema
from engine.catalog import refresh_catalog
from engine.profiling.ingest import IngestConfig, find_duplicate_rows, make_rejected_id
from engine.profiling.plan import ShardPlan, plan_source, read_shard_rows, save_source_config
from engine.profiling.source import Source
from engine.vectors.dedup import index_and_dedup
from engine.workspace import Workspace
from pipelines.backfill import run_image_stage
from pipelines.runtime import clear_failures, map_shards, ray_session, record_failure
from pipelines.stages import ImageStage, IngestStage, ProfileStage, StageItem

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


class CurateShard:
    """Runs the record stages over one shard and writes its tables.

    Ray Data builds one per actor (stages set up once: imports, the language model), then calls
    it once per shard. Tests and benchmarks call it directly, without Ray.
    """

    def __init__(
        self,
        ws: Workspace,
        source: Source,
        plan: ShardPlan,
        config: IngestConfig,
        image_stages: list[ImageStage] = (),
    ):
        self.ws, self.source, self.plan = ws, source, plan
        self.ingest = IngestStage(plan.source_key, config)
        self.profile = ProfileStage()
        self.image_stages = list(image_stages)
        for stage in (self.ingest, self.profile, *self.image_stages):
            stage.setup()

    def __call__(self, item: dict) -> dict:
        started = time.time()  # wall clock, comparable across workers; reported, never stored
        index = item["shard"]
        shard_id = self.plan.shard_id(index)
        self.profile.setup()  # forget the previous shard's image cache
        for stage in self.image_stages:
            stage.begin_shard()
        rows = read_shard_rows(self.ws, self.plan, index)
        samples, signals = [], []
        first_row_of: dict[str, int] = {}  # sample_id -> row_index, for duplicates in this shard
        for row_index, record in enumerate(self.source.read_records(rows)):
            result = self.ingest(record)
            sample = {
                **result.row,
                "source": self.source.location,
                "source_kind": self.source.kind,
                "shard_id": shard_id,
                "row_index": row_index,
            }
            if result.ok and sample["sample_id"] in first_row_of:
                kept = f"{shard_id}:{first_row_of[sample['sample_id']]}"
                reject_duplicate(sample, kept, self.plan.source_key)
            elif result.ok:
                try:
                    signals.append(self.profile(result))
                    first_row_of[sample["sample_id"]] = row_index
                except Exception as e:  # one image that breaks a profiler must not fail the shard
                    sample.update(
                        status=schema.STATUS_REJECTED,
                        reject_reason="internal_error",
                        reject_detail=f"profile: {type(e).__name__}: {e}",
                        sample_id=make_rejected_id(self.plan.source_key, sample["ref"]),
                    )
                else:
                    item = StageItem(sample["sample_id"], sample["image_id"], sample["caption"], result.image)
                    add_to_stages(self.image_stages, item)
            samples.append(sample)
            result.image = None  # free the decoded pixels before the next record
        self.ws.write_shard("signals", shard_id, pa.Table.from_pylist(signals, schema=schema.SIGNALS))
        for stage in self.image_stages:
            self.ws.write_shard(stage.table, shard_id, stage.finish_shard())
        self.ws.write_shard("samples", shard_id, pa.Table.from_pylist(samples, schema=schema.SAMPLES))
        ok = sum(s["status"] == schema.STATUS_OK for s in samples)
        return {
            "shard_id": shard_id,
            "samples": len(samples),
            "ok": ok,
            "started": started,
            "finished": time.time(),
        }


def add_to_stages(stages: list[ImageStage], item: StageItem) -> None:
    """Hand one usable sample to every image stage, naming the stage when one breaks its promise."""
    for stage in stages:
        try:
            stage.add(item)
        except Exception as e:  # a stage must catch per-image errors itself: this is a bug in it
            raise RuntimeError(f"{stage.name} stage failed on sample {item.sample_id}: {e}") from e


def reject_duplicate(sample: dict, kept: str, source_key: str) -> None:
    """Turn a usable row into a rejected duplicate of the row at ``kept`` (shard_id:row_index)."""
    sample.update(
        status=schema.STATUS_REJECTED,
        reject_reason="duplicate_sample",
        reject_detail=f"same image and caption as {kept}",
        sample_id=make_rejected_id(source_key, sample["ref"]),
    )


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
        for table_name in schema.TABLES:
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


def run_tagging(ws: Workspace, progress: bool | None, image_stages: list[ImageStage]) -> TagSummary | None:
    """Tag the workspace unless its tags are up to date or the graph extra is not installed.

    CLIP zero-shot tags use the embed stage's model, so they match the stored image vectors.
    """
    try:
        from engine.graph.tagging import TagConfig, tag_workspace, tags_up_to_date
    except ImportError:  # networkx comes with the [all] extra; a core install curates without tags
        return None
    if tags_up_to_date(ws):
        return None
    model = next((getattr(s, "model", None) for s in image_stages if s.name == "embed"), None)
    return tag_workspace(ws, config=TagConfig(embedder=model), progress=progress)


def run_curate(
    source: Source,
    ws: Workspace,
    config: IngestConfig | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    limit: int | None = None,
    num_cpus: int | None = None,
    progress: bool | None = None,
    image_stages: list[ImageStage] = (),
    tag: bool = True,
) -> CurateSummary:
    """Ingest and profile ``source`` into ``ws`` (resuming whatever a killed run left).

    Args:
        image_stages: image stages to run on every usable sample (see ``pipelines.stages``).
            Shards an earlier run finished without one of them get it through
            ``pipelines.backfill.run_image_stage``; nothing else of theirs is redone.
        num_cpus: CPUs of the local Ray this job starts (ignored when RAY_ADDRESS is set).
        progress: draw a progress bar (default: when stderr is a terminal).
        tag: tag every usable sample with graph concepts at the end (``engine.tagging``; skipped
            when the tags are newer than every shard).
    """
    config = config or IngestConfig()
    ws.create()
    plan = plan_source(ws, source, shard_size, limit)
    done = set(ws.list_shards("samples"))
    pending = [i for i in range(plan.shard_count) if plan.shard_id(i) not in done]
    save_source_config(ws, source, config)
    finished: list[dict] = []
    failed: dict[str, str] = {}
    # Ray starts only when there is work: a rerun of a finished job takes a moment.
    with ray_session(num_cpus) if pending else nullcontext():
        if pending:
            worker_kwargs = {
                "ws": ws,
                "source": source,
                "plan": plan,
                "config": config,
                "image_stages": list(image_stages),
            }
            finished, failures = map_shards(
                [{"shard": i} for i in pending],
                CurateShard,
                worker_kwargs,
                desc="curate",
                progress=progress,
                num_gpus=max((stage.num_gpus for stage in image_stages), default=0),
            )
            check_shared(ws, finished)
            for failure in failures:
                shard_id = plan.shard_id(failure.item["shard"])
                failed[shard_id] = record_failure(ws, shard_id, "samples", failure)
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
    index_and_dedup(ws)  # vector engine's global steps: FAISS indexes + dedup, when embeddings exist
    if tag:  # a global step: the graph grows with all the captions
        summary.tagging = run_tagging(ws, progress, list(image_stages))
    summary.catalog = refresh_catalog(ws)
    return summary
