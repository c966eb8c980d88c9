"""The one loop of the curate and backfill jobs: read a shard's records, ingest them, run the stages.

``ShardRunner(item)`` does one shard; Ray builds one runner per actor, so the stages load their
models once per actor (tests and benchmarks call it directly, without Ray):

1. read    the shard's plan rows (``engine.profiling.plan``) and their bytes from the source;
2. ingest  each record into a ``samples`` row (``engine.profiling.ingest``); a pair repeated inside
           the shard is rejected as ``duplicate_sample`` (across shards: ``pipelines.curate``);
3. batch   the usable samples into Arrow batches (``schema.IMAGE_BATCH``), each distinct image once
           per batch (``engine.profiling.image_batch``): image work is done once per image;
4. stages  hand each batch to every stage in order (``pipelines.stages``: profile first) and keep
           the rows they return;
5. write   each stage's table shard, then ``samples`` (the mark of a finished shard), each atomically.

The curate job runs it with the profile stage and the image stages asked for, and writes
``samples``; the backfill job (an image stage added later) runs it with that one stage over the
usable samples its ``samples`` shard lists, re-read and decoded exactly as curation did, and writes
only that stage's table. A record whose file changed since (its sample_id differs now) is skipped
and counted as ``changed``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine import schema
from engine.profiling.image_batch import ImageBatchBuilder, image_rows
from engine.profiling.ingest import IngestConfig, ingest_record, make_rejected_id, reject_duplicate
from engine.profiling.plan import ShardPlan, read_shard_rows
from engine.profiling.source import Source
from engine.workspace import Workspace
from pipelines.stages import Stage


@dataclass
class ShardWork:
    """What one shard's loop produced, before anything is written."""

    samples: list[dict] = field(default_factory=list)  # samples rows (curate only), plan order
    parts: dict[str, list[pa.Table]] = field(default_factory=dict)  # stage table -> batch results
    changed: int = 0  # backfill: usable samples whose source file changed since curation


class ShardRunner:
    """read -> ingest -> stages -> write for one shard of any curated source."""

    def __init__(
        self,
        ws: Workspace,
        sources: dict[str, tuple[Source, ShardPlan, IngestConfig]],
        stages: list[Stage],
        backfill: bool = False,
    ):
        """``sources`` maps a plan's source_key to its opened source, plan and ingest config;
        ``backfill``: fill only the stages' tables of shards curated before."""
        self.ws, self.sources, self.stages, self.backfill = ws, sources, list(stages), backfill
        for stage in self.stages:
            stage.setup()

    def __call__(self, item: dict) -> dict:
        """Run one shard (``{"source_key", "shard"}``) and write its tables; returns its counts."""
        started = time.time()  # wall clock, comparable across workers; reported, never stored
        source, plan, config = self.sources[item["source_key"]]
        shard_id = plan.shard_id(item["shard"])
        work = self.run(source, plan, config, item["shard"])
        tables = {stage.table: join_parts(stage, work.parts[stage.table]) for stage in self.stages}
        for stage in self.stages:
            self.ws.write_shard(stage.table, shard_id, tables[stage.table])
        if not self.backfill:
            self.ws.write_shard(
                "samples", shard_id, pa.Table.from_pylist(work.samples, schema=schema.SAMPLES)
            )
        last = self.stages[-1].table if self.stages else None
        return {
            "shard_id": shard_id,
            "samples": len(work.samples),
            "ok": sum(s["status"] == schema.STATUS_OK for s in work.samples),
            "rows": tables[last].num_rows if last else 0,
            "changed": work.changed,
            "started": started,
            "finished": time.time(),
        }

    def run(self, source: Source, plan: ShardPlan, config: IngestConfig, index: int) -> ShardWork:
        """The loop over one shard's records (module docstring, steps 1-4)."""
        shard_id = plan.shard_id(index)
        wanted = self.usable_refs(shard_id) if self.backfill else None
        work = ShardWork(parts={stage.table: [] for stage in self.stages})
        batch = ImageBatchBuilder()
        first_row_of: dict[str, int] = {}  # sample_id -> row_index, for duplicates in this shard
        for row_index, record in enumerate(source.read_records(read_shard_rows(self.ws, plan, index))):
            if wanted is not None and record.ref not in wanted:
                continue
            result = ingest_record(record, plan.source_key, config)
            row = result.row
            if wanted is not None:  # backfill: only the samples curation kept, unchanged
                if not result.ok or row["sample_id"] != wanted[record.ref]:
                    work.changed += 1
                    continue
            else:
                row.update(source=source.location, source_kind=source.kind, shard_id=shard_id)
                row["row_index"] = row_index
                work.samples.append(row)
                if result.ok and row["sample_id"] in first_row_of:
                    reject_duplicate(row, f"{shard_id}:{first_row_of[row['sample_id']]}", plan.source_key)
                    continue
                if result.ok:
                    first_row_of[row["sample_id"]] = row_index
            if result.ok:
                batch.add(row, result.image, result.info)
            result.image = None  # free the decoded pixels: the batch holds them as bytes
            if batch.full:
                self.run_stages(batch.take(), work, plan.source_key)
        if len(batch):
            self.run_stages(batch.take(), work, plan.source_key)
        return work

    def run_stages(self, batch: pa.Table, work: ShardWork, source_key: str) -> None:
        """Every stage over one batch; samples a required stage fails on are rejected and leave it."""
        for stage in self.stages:
            rows, failed = run_stage(stage, batch)
            work.parts[stage.table].append(rows)
            if failed:
                reject_failed(work.samples, failed, source_key)
                keep = pc.invert(pc.is_in(batch["sample_id"], pa.array(list(failed), pa.string())))
                batch = batch.filter(keep)

    def usable_refs(self, shard_id: str) -> dict[str, str]:
        """ref -> sample_id of the usable samples of a curated shard (what a backfill re-reads)."""
        samples = self.ws.read_shard("samples", shard_id)
        usable = samples.filter(pc.equal(samples["status"], schema.STATUS_OK))
        return dict(zip(usable["ref"].to_pylist(), usable["sample_id"].to_pylist(), strict=True))


def run_stage(stage: Stage, batch: pa.Table) -> tuple[pa.Table, dict[str, str]]:
    """A stage's rows for a batch, and the samples whose image it failed on (sample_id -> error).

    A required stage (profile) that raises is run again image by image, so one image that breaks
    it rejects only its own samples. Any other stage already turns a bad image into nulls: if it
    raises anyway, that is a bug, and the shard fails with the stage named.
    """
    try:
        return checked_rows(stage, batch, stage(batch)), {}
    except Exception as e:
        if not stage.required:
            raise RuntimeError(
                f"{stage.name} stage failed on a batch of {batch.num_rows} samples: {type(e).__name__}: {e}"
            ) from e
    first, image_of_row = image_rows(batch)
    parts, failed = [], {}
    for image in range(len(first)):
        part = batch.take(pa.array(np.flatnonzero(image_of_row == image)))
        try:
            parts.append(checked_rows(stage, part, stage(part)))
        except Exception as e:  # this image breaks the stage: its samples are rejected
            error = f"{stage.name}: {type(e).__name__}: {e}"
            failed.update((sample_id, error) for sample_id in part["sample_id"].to_pylist())
    rows = pa.concat_tables(parts) if parts else stage.schema.empty_table()
    position = {sample_id: i for i, sample_id in enumerate(batch["sample_id"].to_pylist())}
    order = np.argsort([position[s] for s in rows["sample_id"].to_pylist()], kind="stable")
    return rows.take(pa.array(order, pa.int64())), failed


def checked_rows(stage: Stage, batch: pa.Table, rows: pa.Table) -> pa.Table:
    """The stage's rows, after checking it kept its promise: one row per batch row, same order."""
    if rows.column_names[:1] != ["sample_id"] or not rows["sample_id"].equals(batch["sample_id"]):
        raise RuntimeError(f"{stage.name} stage returned rows that do not match its batch")
    return rows


def reject_failed(samples: list[dict], failed: dict[str, str], source_key: str) -> None:
    """Turn the samples a required stage failed on into ``internal_error`` rejects."""
    for sample in samples:
        error = failed.get(sample["sample_id"]) if sample["status"] == schema.STATUS_OK else None
        if error is not None:
            sample.update(
                status=schema.STATUS_REJECTED,
                reject_reason="internal_error",
                reject_detail=error,
                sample_id=make_rejected_id(source_key, sample["ref"]),
            )


def join_parts(stage: Stage, parts: list[pa.Table]) -> pa.Table:
    """A stage's batch results as one table of its schema (empty with the schema when none)."""
    tables = [part.cast(stage.schema) for part in parts if part.num_rows]
    return pa.concat_tables(tables).combine_chunks() if tables else stage.schema.empty_table()
