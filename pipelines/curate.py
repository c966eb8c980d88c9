"""The curate job: a source -> ``samples`` and ``signals`` shards in a workspace, on Ray.

Top to bottom:

1. plan     ``engine.plan.plan_source`` fixes which record goes into which shard (saved first).
2. shards   every shard without a ``samples`` file becomes one Ray Data row; ``CurateShard``
            runs the stages over its records and writes ``signals`` then ``samples``
            atomically (a ``samples`` file is the mark of a finished shard).
3. finalize ``mark_duplicate_rows`` rejects repeated (image, caption) pairs across shards.
4. catalog  ``engine.catalog.refresh_catalog`` rebuilds the DuckDB views.

Kill it at any point and run it again: finished shards are skipped, unfinished ones redone,
and finalize is idempotent, so the result has every record exactly once.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
from tqdm import tqdm

from engine import schema
from engine.catalog import refresh_catalog
from engine.dedup import index_and_dedup
from engine.ingest import IngestConfig, find_duplicate_rows, make_rejected_id
from engine.plan import ShardPlan, plan_source, read_shard_rows
from engine.source import Source
from engine.workspace import Workspace
from pipelines.runtime import ray_session
from pipelines.stages import IngestStage, ProfileStage

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


class CurateShard:
    """Runs the record stages over one shard and writes its tables.

    Ray Data builds one per actor (stages set up once: imports, the language model), then calls
    it once per shard. Tests and benchmarks call it directly, without Ray.
    """

    def __init__(self, ws: Workspace, source: Source, plan: ShardPlan, config: IngestConfig):
        self.ws, self.source, self.plan = ws, source, plan
        self.ingest = IngestStage(plan.source_key, config)
        self.profile = ProfileStage()
        for stage in (self.ingest, self.profile):
            stage.setup()

    def __call__(self, item: dict) -> dict:
        started = time.time()  # wall clock, comparable across workers; reported, never stored
        index = item["shard"]
        shard_id = self.plan.shard_id(index)
        self.profile.setup()  # forget the previous shard's image cache
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
            samples.append(sample)
            result.image = None  # free the decoded pixels before the next record
        self.ws.write_shard("signals", shard_id, pa.Table.from_pylist(signals, schema=schema.SIGNALS))
        self.ws.write_shard("samples", shard_id, pa.Table.from_pylist(samples, schema=schema.SAMPLES))
        ok = sum(s["status"] == schema.STATUS_OK for s in samples)
        return {
            "shard_id": shard_id,
            "samples": len(samples),
            "ok": ok,
            "started": started,
            "finished": time.time(),
        }


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
    shard finished first. Affected shards are rewritten atomically, signals before samples;
    rerunning after a kill finds what is left. Returns the number of rows marked.
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
        signals = ws.read_shard("signals", shard_id)
        signals = signals.filter(pc.invert(pc.is_in(signals["sample_id"], pa.array(sorted(dropped)))))
        ws.write_shard("signals", shard_id, signals)
        ws.write_shard("samples", shard_id, pa.Table.from_pylist(samples, schema=schema.SAMPLES))
    return duplicates.num_rows


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


def run_curate(
    source: Source,
    ws: Workspace,
    config: IngestConfig | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    limit: int | None = None,
    num_cpus: int | None = None,
    progress: bool | None = None,
) -> CurateSummary:
    """Ingest and profile ``source`` into ``ws`` (resuming whatever a killed run left).

    Args:
        num_cpus: CPUs of the local Ray this job starts (ignored when RAY_ADDRESS is set).
        progress: draw a progress bar (default: when stderr is a terminal).
    """
    import ray

    config = config or IngestConfig()
    ws.create()
    plan = plan_source(ws, source, shard_size, limit)
    done = set(ws.list_shards("samples"))
    pending = [i for i in range(plan.shard_count) if plan.shard_id(i) not in done]
    finished: list[dict] = []
    if pending:
        with ray_session(num_cpus):
            items = [{"shard": i} for i in pending]
            dataset = ray.data.from_items(items, override_num_blocks=len(items))
            # One actor per CPU (stages set up once per actor), each with two shards queued so it
            # never waits for the scheduler between shards. Ray restarts an actor whose process
            # died (OOM, a decoder segfault) and retries its shard.
            workers = max(1, min(len(pending), int(ray.cluster_resources().get("CPU", 1))))
            pool = ray.data.ActorPoolStrategy(
                min_size=1, max_size=workers, initial_size=workers, max_tasks_in_flight_per_actor=2
            )
            dataset = dataset.map(
                CurateShard,
                fn_constructor_kwargs={"ws": ws, "source": source, "plan": plan, "config": config},
                compute=pool,
                num_cpus=1,
            )
            show = sys.stderr.isatty() if progress is None else progress
            with tqdm(total=len(pending), unit="shard", disable=not show, desc="curate") as bar:
                for done_shard in dataset.iter_rows():
                    finished.append(done_shard)
                    bar.update(1)
    duplicates = mark_duplicate_rows(ws)
    summary = summarize(ws, plan, len(pending), duplicates)
    if finished:
        summary.records_run = sum(f["samples"] for f in finished)
        summary.work_span_s = max(f["finished"] for f in finished) - min(f["started"] for f in finished)
        summary.shard_busy_s = sum(f["finished"] - f["started"] for f in finished)
    index_and_dedup(ws)  # vector engine's global steps: FAISS indexes + dedup, when embeddings exist
    summary.catalog = refresh_catalog(ws)
    return summary
