"""The sources of a workspace: listing them, and taking one out as if it had never been curated.

A source is known by its prefix, ``<kind>-<key>`` (``folder-3f2a...``), the start of every shard
id it made (``engine.profiling.plan``). ``remove_source`` deletes its shards from every table
(every embedding model's too), its plan and its failure records, then redoes the global steps
over what is left: the indexes (rebuilt: a shard they held is gone), dedup, tags (the graph's
counts and mined concepts change) and the catalog. A manifest built afterwards cannot name its
samples.

One subtlety: a record of another source that repeats one of this source's pairs was rejected as
``duplicate_sample`` of it (the earliest shard keeps a repeated pair, ``pipelines.curate``). With
the kept copy gone it should count again, so the shards holding such records are deleted too, and
``RemoveSummary.rerun`` names their sources: curating them again (a resume) brings the records back
as usable samples.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import pyarrow.compute as pc

from engine.catalog import refresh_catalog
from engine.embedding_models import list_models
from engine.profiling.file_stamps import stamps_rel
from engine.workspace import Workspace


class SourceNotFound(ValueError):
    """A source the workspace does not hold; the message lists the ones it does."""


@dataclass
class SourceInfo:
    """One source of a workspace, as ``zcurate sources`` lists it."""

    prefix: str
    location: str  # what curate was given (a path, a URI, "openclipart")
    shards: int
    samples: int
    usable: int


@dataclass
class RemoveSummary:
    """What ``remove_source`` did."""

    prefix: str
    location: str
    shards_removed: int
    samples_removed: int
    rerun: dict[str, str] = field(default_factory=dict)  # prefix -> location of sources to curate again
    seconds: float = 0.0


def list_sources(ws: Workspace) -> list[SourceInfo]:
    """Every source curated into ``ws`` (from its saved plans), with its shard and sample counts."""
    samples = ws.read_table("samples", ["shard_id", "status"])
    found = []
    for name in ws.list_files(ws.plans, ".json"):
        prefix = name.removesuffix(".json")
        opened = json.loads(ws.read_text(ws.source_config_rel(prefix)))
        mine = samples.filter(pc.starts_with(samples["shard_id"], prefix + "-"))
        shards = len(set(mine["shard_id"].to_pylist()))
        usable = int(pc.sum(pc.equal(mine["status"], "ok")).as_py() or 0)
        found.append(SourceInfo(prefix, opened.get("location", ""), shards, mine.num_rows, usable))
    return found


def find_source(ws: Workspace, text: str) -> SourceInfo:
    """A source by prefix or by the location curate was given (the path as typed, or made absolute)."""
    import os

    sources = list_sources(ws)
    for source in sources:
        if text in (source.prefix, source.location) or os.path.abspath(text) == source.location:
            return source
    known = ", ".join(f"{s.prefix} ({s.location})" for s in sources) or "none"
    raise SourceNotFound(f"no source {text!r} in {ws.root} (sources: {known}; see 'zcurate sources')")


def remove_source(ws: Workspace, text: str, progress=None) -> RemoveSummary:
    """Take the source named ``text`` out of every table, index and derived result (module doc)."""
    started = time.monotonic()
    source = find_source(ws, text)
    own = [s for s in ws.list_shards("samples") if s.startswith(source.prefix + "-")]
    dependents = duplicate_dependents(ws, source.prefix)
    doomed = set(own) | set(dependents)
    samples = ws.read_table("samples", ["shard_id"])
    removed_rows = int(pc.sum(pc.starts_with(samples["shard_id"], source.prefix + "-")).as_py() or 0)
    drop_shards(ws, doomed)
    for rel in (
        ws.plan_rel(source.prefix),
        ws.source_config_rel(source.prefix),
        stamps_rel(ws, source.prefix),
    ):
        if ws.exists(rel):
            ws.fs.delete_file(ws.path(rel))
    redo_global_steps(ws, progress)
    rerun = {}
    for shard in dependents:
        prefix = shard.rsplit("-", 1)[0]
        rerun[prefix] = next((s.location for s in list_sources(ws) if s.prefix == prefix), prefix)
    return RemoveSummary(
        source.prefix, source.location, len(own), removed_rows, rerun, round(time.monotonic() - started, 3)
    )


def drop_shards(ws: Workspace, shards) -> None:
    """Delete these shards from every table (every model's embeddings too) and their failure records;
    ``samples`` last, so a killed call leaves shards that a rerun of their source finds missing."""
    doomed = set(shards)
    for table in ws.table_names():
        for shard in ws.list_shards(table) if table != "samples" else []:
            if shard in doomed:
                ws.fs.delete_file(ws.shard_path(table, shard))
    for shard in sorted(doomed):
        if ws.has_shard("samples", shard):
            ws.fs.delete_file(ws.shard_path("samples", shard))
        if ws.exists(ws.failed_rel(shard)):
            ws.fs.delete_file(ws.path(ws.failed_rel(shard)))


def duplicate_dependents(ws: Workspace, prefix: str) -> list[str]:
    """Shards of other sources holding a record rejected as a duplicate of one of ``prefix``'s."""
    samples = ws.read_table("samples", ["shard_id", "reject_reason", "reject_detail"])
    hit = pc.and_(
        pc.equal(samples["reject_reason"], "duplicate_sample"),
        pc.match_substring(samples["reject_detail"], f" as {prefix}-"),
    )
    shards = samples.filter(pc.fill_null(hit, False))["shard_id"].to_pylist()
    return sorted({s for s in shards if not s.startswith(prefix + "-")})


def redo_global_steps(ws: Workspace, progress=None) -> None:
    """Indexes (rebuilt where a shard went), dedup, tags and the catalog over what the workspace holds."""
    from engine.vectors.dedup import dedup_workspace
    from engine.vectors.index import build_index
    from pipelines.models import retag

    for model in list_models(ws):
        for modality in ("image", "text"):
            build_index(ws, modality, progress=progress, model=model.key)
    if list_models(ws) or ws.has_shard("dedup", "all"):
        dedup_workspace(ws)
    retag(ws, progress)
    refresh_catalog(ws)
