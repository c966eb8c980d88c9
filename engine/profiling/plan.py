"""The shard plan: which record of a source goes into which shard, fixed once and saved.

A plan is what makes a killed job resumable without duplicates or gaps: the first run of a
source lists its records, cuts them into shards of ``shard_size`` in listing order and saves the
assignment in ``WS/_plans/<kind>-<key>.parquet`` before any work starts. A rerun reads that
plan back, so every record lands in the same shard as before, and only shards whose ``samples``
file is missing are worked on. Records that appear in the source later (or a larger
``--limit``) are appended as new shards; a plan never shrinks or reshuffles.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import schema
from engine.profiling.ingest import IngestConfig
from engine.profiling.source import Source, load_source
from engine.workspace import Workspace


@dataclass
class ShardPlan:
    """A source's saved plan."""

    source_kind: str
    source_key: str
    path: str  # workspace-relative path of the plan file
    shard_count: int
    record_count: int
    added_records: int  # records this call appended to the plan

    @property
    def prefix(self) -> str:
        """The start every shard id of this source shares."""
        return f"{self.source_kind}-{self.source_key}"

    def shard_id(self, index: int) -> str:
        return f"{self.prefix}-{index:06d}"

    @property
    def shard_ids(self) -> list[str]:
        return [self.shard_id(i) for i in range(self.shard_count)]


def plan_source(ws: Workspace, source: Source, shard_size: int, limit: int | None = None) -> ShardPlan:
    """Create or extend the plan of ``source`` in ``ws`` and return it.

    Args:
        shard_size: records per new shard (existing shards keep their size).
        limit: take only the first ``limit`` records of the source's listing.
    """
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    rel_path = ws.plan_rel(f"{source.kind}-{source.key}")
    listing = source.list_records()
    if limit is not None:
        listing = listing.slice(0, max(0, limit))
    if ws.exists(rel_path):
        existing = pq.read_table(ws.path(rel_path), filesystem=ws.fs, schema=schema.PLAN_FILE)
        known = pc.is_in(listing["ref"], value_set=existing["ref"])
        new = listing.filter(pc.invert(known))
        first_shard = (pc.max(existing["shard"]).as_py() + 1) if existing.num_rows else 0
    else:
        existing, new, first_shard = schema.PLAN_FILE.empty_table(), listing, 0
    if new.num_rows:
        shards = pa.array([first_shard + i // shard_size for i in range(new.num_rows)], pa.int32())
        new = new.cast(schema.PLAN_ROW).add_column(0, "shard", shards)
        existing = pa.concat_tables([existing, new])
        # One row group per shard-sized run of rows, so a worker reading one shard skips the rest.
        ws.write_parquet(rel_path, existing, row_group_size=shard_size)
    shard_count = (pc.max(existing["shard"]).as_py() + 1) if existing.num_rows else 0
    return ShardPlan(source.kind, source.key, rel_path, shard_count, existing.num_rows, new.num_rows)


def read_shard_rows(ws: Workspace, plan: ShardPlan, index: int) -> pa.Table:
    """The plan rows of one shard, in plan order."""
    table = pq.read_table(ws.path(plan.path), filesystem=ws.fs, filters=[("shard", "=", index)])
    return table.drop_columns(["shard"])


def save_source_config(ws: Workspace, source: Source, config: IngestConfig) -> None:
    """Remember how ``source`` was opened and judged, beside its plan.

    Jobs that come later (a stage added to a curated workspace) reopen the source from this file
    and re-read a shard's images exactly as the curate job did.
    """
    opened = {
        "location": source.location,
        "kind": source.kind,
        "max_file_bytes": source.max_file_bytes,
        "image_column": getattr(source, "image_column", None),
        "caption_column": getattr(source, "caption_column", None),
        "ingest": asdict(config),
    }
    ws.write_text(
        ws.source_config_rel(f"{source.kind}-{source.key}"), json.dumps(opened, indent=1, sort_keys=True)
    )


def load_plans(ws: Workspace) -> list[tuple[Source, ShardPlan, IngestConfig]]:
    """Every source curated into ``ws``, reopened, with its saved plan (not extended)."""
    found = []
    for name in ws.list_files(ws.plans, ".json"):
        opened = json.loads(ws.read_text(f"{ws.plans}/{name}"))
        source = load_source(
            opened["location"],
            opened["kind"],
            opened["max_file_bytes"],
            opened["image_column"],
            opened["caption_column"],
        )
        rel_path = ws.plan_rel(f"{source.kind}-{source.key}")
        shards = pq.read_table(ws.path(rel_path), filesystem=ws.fs, columns=["shard"])["shard"]
        shard_count = (pc.max(shards).as_py() + 1) if len(shards) else 0
        plan = ShardPlan(source.kind, source.key, rel_path, shard_count, len(shards), 0)
        found.append((source, plan, IngestConfig(**opened["ingest"])))
    return found
