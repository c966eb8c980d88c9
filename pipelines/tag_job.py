"""Tagging on Ray: the per-shard passes of ``engine.graph.tagging`` on a pool of actors.

Tagging reads every caption twice (a summary per shard for mining new concepts, then the tags per
shard with the grown matcher), then searches every shard's image vectors for zero-shot candidates;
between the passes sit small reduces (term counts, attachment, the calibrated threshold).
``ray_shard_map`` is the ``ShardMap`` that runs a pass on ``pipelines.runtime.map_shards``'s
actors: the shared state (the workspace handle and the concept matcher, ~22 MiB pickled:
bench/results-global.json) goes into the object store once and each actor reads it once, then
takes shard after shard, writing its ``tags`` shard itself (atomic writes, so a shard redone after
a lost node is written whole, once).
The driver keeps the per-shard summaries and, for the zero-shot threshold, every shard's candidates
(``clip_top_k`` per image: the part of tagging that still grows with the pool in one process). The
result is the one-process result: the passes are the same functions, their outputs put back in
shard order.

``run_tag_job`` is what the curate job calls: on Ray when ``RAY_ADDRESS`` is set (a cluster) or the
workspace has at least ``RAY_MIN_SHARDS`` shards (a local Ray's start and its actors' matcher loads
cost ~8 s, which the ~42 ms a shard of one-process tagging does not earn back on a small
workspace: docs/benchmarks.md, "Global steps on Ray"), else in this process.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pipelines.runtime import map_shards, ray_session

# Shards (of 256 records) from which a local Ray is worth starting for tagging: at 196 shards one
# process took 8 s and a 2-CPU local Ray 15 s (bench/results-global.json); from 1,024 the ~43 s
# of one-process passes can earn back Ray's start on two cores
RAY_MIN_SHARDS = 1024


class SharedFnWorker:
    """A ``map_shards`` worker: ``fn(shared, value)`` per item, ``shared`` fetched once per actor."""

    def __init__(self, fn: Callable, shared_ref: list):
        import ray

        self.fn = fn
        self.shared = ray.get(shared_ref[0])  # in a list: Ray resolves only top-level references

    def __call__(self, item: dict) -> dict:
        return {"index": item["index"], "value": self.fn(self.shared, item["value"])}


def ray_shard_map(fn: Callable, shared: dict, items: list, desc: str, show: bool) -> list:
    """``engine.graph.tagging.ShardMap`` on the Ray of the current ``ray_session``: results in item
    order. A shard that fails every attempt fails the pass (tags are not written half)."""
    import ray

    work = [{"index": i, "value": value} for i, value in enumerate(items)]
    worker_kwargs = {"fn": fn, "shared_ref": [ray.put(shared)]}
    results, failures = map_shards(work, SharedFnWorker, worker_kwargs, desc, show)
    if failures:
        raise RuntimeError(f"{desc}: {len(failures)} shards failed; first: {failures[0].error}")
    ordered: list = [None] * len(items)
    for result in results:
        ordered[result["index"]] = result["value"]
    return ordered


def use_ray(ws) -> bool:
    """Whether ``run_tag_job`` tags on Ray (module docstring)."""
    return bool(os.environ.get("RAY_ADDRESS")) or len(ws.list_shards("samples")) >= RAY_MIN_SHARDS


def run_tag_job(ws, config=None, progress: bool | None = None, num_cpus: int | None = None, on_ray=None):
    """``engine.graph.tagging.tag_workspace`` with its per-shard passes on Ray where that pays
    (``use_ray``; ``on_ray`` True/False forces it), else in this process."""
    from engine.graph.tagging import tag_workspace

    if not (use_ray(ws) if on_ray is None else on_ray):
        return tag_workspace(ws, config=config, progress=progress)
    with ray_session(num_cpus):
        return tag_workspace(ws, config=config, progress=progress, shard_map=ray_shard_map)
