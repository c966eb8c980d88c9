"""StampedCache: answers are reused until a table folder or the catalog changes."""

from __future__ import annotations

import time

import pyarrow as pa

from api.cache import StampedCache, workspace_stamp
from engine import schema
from engine.workspace import Workspace


def count_samples(ws: Workspace) -> int:
    return ws.read_table("samples", ["sample_id"]).num_rows


def write_samples(ws: Workspace, shard: str, n: int) -> None:
    rows = [{name: None for name in schema.SAMPLES.names} | {"sample_id": f"{shard}-{i}"} for i in range(n)]
    ws.write_shard("samples", shard, pa.Table.from_pylist(rows, schema=schema.SAMPLES))


def test_answers_are_kept_until_a_shard_is_written(tmp_path):
    ws = Workspace(str(tmp_path / "ws")).create()
    write_samples(ws, "a", 3)
    cache, calls = StampedCache(ws), []

    def compute():
        calls.append(1)
        return count_samples(ws)

    assert cache.get("n", compute) == 3 and cache.get("n", compute) == 3 and len(calls) == 1
    before = workspace_stamp(ws)
    time.sleep(0.02)  # past the folder mtime's clock tick
    write_samples(ws, "b", 2)
    assert workspace_stamp(ws) != before
    assert cache.get("n", compute) == 5 and len(calls) == 2


def test_the_cache_is_bounded(tmp_path):
    cache = StampedCache(Workspace(str(tmp_path)), max_entries=2)
    for key in ("a", "b", "c"):
        cache.get(key, lambda k=key: k.upper())
    assert cache.get("a", lambda: "recomputed") == "recomputed"  # the oldest went first
    assert cache.get("c", lambda: "recomputed") == "C"
