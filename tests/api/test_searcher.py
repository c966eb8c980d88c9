"""api.searcher.Searcher on the session workspace: the in-memory sample lookup answers what the
table scan answers, and a repeated text query reuses its vector."""

from __future__ import annotations

import numpy as np

from api import searcher as searcher_module
from api.searcher import Searcher
from engine.workspace import Workspace


def test_lookup_and_scan_give_the_same_rows(workspace, monkeypatch):
    ws = Workspace(workspace)
    ids = ws.read_table("samples", ["sample_id"])["sample_id"].to_pylist()
    wanted = [*ids[::3], "0" * 32, "not-an-id"]  # unknown ids are simply absent
    held = Searcher(ws).sample_rows(wanted)
    monkeypatch.setattr(searcher_module, "LOOKUP_MAX_ROWS", 0)  # too big to hold: scan per search
    scanner = Searcher(ws)
    scanned = scanner.sample_rows(wanted)
    assert scanner.lookup(ws.shard_files("samples")) is None
    assert held == scanned and len(held) == len(ids[::3])
    assert all(set(row) == {"caption", "uri"} and row["uri"] for row in held.values())


def test_a_repeated_text_query_reuses_its_vector(workspace):
    s = Searcher(Workspace(workspace), torch_threads=1)
    first = s.query_text("a red parrot")
    assert s.query_text("a red parrot") is first and not first.flags.writeable
    fresh = s.embedder().encode_texts(["a red parrot"])[0]
    np.testing.assert_allclose(first, fresh, atol=1e-6)
    assert not np.allclose(s.query_text("a blue car"), first)
