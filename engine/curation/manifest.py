"""Sampling manifests: what a stage trains on, how often, at which resolution, with which caption.

``build_manifest(ws, recipe, seed)`` turns the workspace's tables into
``manifests/<stage>/<manifest_id>.parquet`` (schema.MANIFEST_ROW, then the scores the recipe used)
and a JSON sidecar next to it (DESIGN.md section 4). It is a list of named steps:

0. **pool** (``engine.curation.pool.load_pool``): every usable sample (``samples.status = 'ok'``)
   with its signals, OCR, clip and NSFW scores, near-duplicate community and concepts, in
   workspace order (shards, then rows).
1. **filter**, 2. **boost**, 3. **tilt**, 4. **balance**, 5. **feedback**, 6. **image-to-image**
   (``engine.curation.manifest_weights``): the hard filters in recipe order and the dedup rule;
   the user's boosts; soft tilts; concept balancing (MetaCLIP, hierarchical MetaCLIP or the SFT
   near-uniform rule); trainer feedback multipliers; rows of weight 0 out, the rest to mean 1;
   omni's image-to-image pairs from near-duplicate communities with their share of the weight.
7. **assemble**, 8. **draw**, 9. **sidecar** (``engine.curation.manifest_assembly``): each row's
   bucket, concepts and caption form (drawn with a hash of (seed, sample_id), so a sample keeps
   its draw when the pool grows); with ``size``, N draws epoch by epoch; the sidecar's counts,
   marginals and summaries.

``manifest_id`` hashes the inputs, the recipe, the seed, the size, the feedback reports, the
boosts and the engine version (``engine.curation.manifest_identity``): the same inputs give the
same id and a byte-identical file, and a build whose file exists returns it at once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from engine.curation.manifest_assembly import assemble_rows, build_sidecar, draw_rows, take_rows
from engine.curation.manifest_identity import gather_inputs
from engine.curation.manifest_weights import (
    Selection,
    TextToImage,
    balance_rows,
    boost_rows,
    feedback_factors,
    filter_rows,
    image_to_image_rows,
    tilt_factors,
    weigh_rows,
)
from engine.curation.pool import load_pool
from engine.curation.recipe import Recipe
from engine.workspace import Workspace


class ManifestError(ValueError):
    """A manifest that cannot be built (empty pool, a recipe that keeps nothing, unknown id)."""


@dataclass
class ManifestResult:
    manifest_id: str
    stage: str
    path: str  # the Parquet file
    sidecar_path: str
    sidecar: dict
    cached: bool  # the file existed already (same inputs, recipe and seed)


def check_size(size: int | None) -> None:
    """A materialised manifest's size must be a positive number of draws (ManifestError)."""
    if size is not None and size < 1:
        raise ManifestError("size must be a positive number of draws")


def build_manifest(
    ws: Workspace, recipe: Recipe, seed: int = 0, size: int | None = None, force: bool = False
) -> ManifestResult:
    """Build (or find) the manifest of ``recipe`` over the workspace; see the module docstring.

    Args:
        seed: of every random choice (balancing draws, pairs, caption forms, draws).
        size: materialise this many draws (epochs without replacement, a repeat cap per row).
        force: build even when the same manifest (same id) exists.

    Raises:
        ManifestError: an empty pool, or a recipe that keeps no sample.
    """
    check_size(size)
    found = gather_inputs(ws, recipe, seed, size)
    rel = ws.manifest_rel(recipe.stage, found.manifest_id)
    paths = ws.path(f"{rel}.parquet"), ws.path(f"{rel}.json")
    if not force and ws.exists(f"{rel}.parquet") and ws.exists(f"{rel}.json"):
        return ManifestResult(
            found.manifest_id, recipe.stage, *paths, json.loads(ws.read_text(f"{rel}.json")), True
        )

    pool, pool_sets, pool_counts = load_pool(ws, recipe)
    _check_pool(ws, pool)
    warnings: list[str] = []
    selection = filter_rows(pool, recipe, warnings)
    selection, boost = boost_rows(pool, found.boosts, selection)
    _check_kept(recipe, pool, selection)
    tilt = tilt_factors(pool, recipe, selection.passed_filters)
    balanced = balance_rows(ws, recipe, pool, pool_sets, selection.keep, tilt, seed)
    feedback = feedback_factors(pool_sets, found.feedback)
    t2i = weigh_rows(balanced, tilt, feedback, boost.factor)
    _check_weighted(recipe, t2i)
    i2i = image_to_image_rows(
        pool, recipe, selection.passed_filters, tilt, feedback, t2i.weight, seed, warnings
    )
    picked = take_rows(pool, t2i, i2i)
    counts = {"pool": pool.num_rows, **pool_counts}
    del pool  # the manifest's rows are in `picked` now: free the pool's strings before the captions
    rows = assemble_rows(ws, recipe, picked, pool_sets, seed)
    manifest, draws = draw_rows(rows, recipe, size, seed, warnings)
    sidecar = build_sidecar(
        ws, recipe, found, seed, size, counts=counts, selection=selection, boost=boost, t2i=t2i, i2i=i2i,
        rows=rows, draws=draws, warnings=warnings,
    )  # fmt: skip
    ws.write_parquet(f"{rel}.parquet", manifest)
    ws.write_text(f"{rel}.json", json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return ManifestResult(found.manifest_id, recipe.stage, *paths, sidecar, False)


def _check_pool(ws: Workspace, pool: pa.Table) -> None:
    if pool.num_rows == 0:
        raise ManifestError(
            f"the workspace {ws.root} has no usable sample: curate a source first (zcurate curate)"
        )


def _check_kept(recipe: Recipe, pool: pa.Table, selection: Selection) -> None:
    if not np.any(selection.keep):
        removed = ", ".join(f"{c['filter']} {c['removed']}" for c in selection.filter_counts)
        raise ManifestError(
            f"recipe {recipe.source or recipe.stage} keeps no sample of {pool.num_rows}: "
            f"removed by filters: {removed or 'none'}; by dedup {selection.dedup_removed}"
        )


def _check_weighted(recipe: Recipe, t2i: TextToImage) -> None:
    if len(t2i.rows) == 0:
        raise ManifestError(
            f"recipe {recipe.source or recipe.stage}: every sample got weight 0 after balancing "
            f"(balance.untagged = {recipe.balance.untagged} and no sample carries a concept?)"
        )
