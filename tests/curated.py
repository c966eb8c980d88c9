"""TEST FIXTURE: a small real workspace curated with every stage, built once per test session.

``zcurate demo`` in miniature: openclipart pairs (Debian's openclipart-png/-svg) through ingest,
profile, the OCR, embed and safety stages, the FAISS index, near-duplicate communities and the
concept tags, all with the embedded default models. Tests that write into a workspace (manifests
with feedback, boosts) take a copy (:func:`copy_workspace`); the catalog notices the move.
"""

from __future__ import annotations

import shutil

from engine.profiling.source import load_source
from engine.workspace import Workspace
from pipelines.curate import run_curate
from pipelines.stages import build_image_stages, default_stage_names

CURATED_LIMIT = 160  # enough for tens of tagged concepts and a few near-duplicate communities
CURATED_SHARD_SIZE = 80


def curate_small_workspace(root: str, limit: int = CURATED_LIMIT) -> Workspace:
    ws = Workspace(root)
    run_curate(
        load_source("openclipart"),
        ws,
        limit=limit,
        shard_size=CURATED_SHARD_SIZE,
        num_cpus=2,
        progress=False,
        image_stages=build_image_stages(default_stage_names()),
    )
    return ws


def copy_workspace(ws: Workspace, root: str) -> Workspace:
    """A copy without the catalog file and manifests: the copy rebuilds its own catalog."""
    shutil.copytree(ws.root, root, ignore=shutil.ignore_patterns("catalog.duckdb", "manifests", "_tmp"))
    return Workspace(root)
