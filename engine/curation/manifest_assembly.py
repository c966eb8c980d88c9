"""The last steps of a manifest build: the rows' contents, the draws, and the sidecar.

``engine.curation.manifest.build_manifest`` calls them after ``engine.curation.manifest_weights``
chose the rows and their weights:

7. **assemble**: :func:`take_rows` takes the manifest's rows out of the pool (text-to-image rows,
   then image-to-image targets with their reference image), so the pool can be freed;
   :func:`assemble_rows` gives each row its bucket, concepts and caption form ->
   :class:`ManifestRows` (schema.MANIFEST_ROW, then the scores the recipe used).
8. **draw** (:func:`draw_rows`): with ``size``, N draws epoch by epoch (schema.MANIFEST_DRAW).
9. **sidecar** (:func:`build_sidecar`): the JSON beside the Parquet (DESIGN.md section 4).

Writes nothing itself: ``build_manifest`` writes ``Workspace.manifest_rel(stage, id)`` + ``.parquet``
and ``.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine import schema
from engine.curation.balancing import concept_marginal, marginal_summary
from engine.curation.captions import build_captions, concept_names
from engine.curation.concept_sets import ConceptSets
from engine.curation.manifest_identity import ManifestInputs
from engine.curation.manifest_weights import Boost, ImageToImage, Selection, TextToImage
from engine.curation.recipe import Recipe
from engine.curation.sampling import choose_form, keyed_uniform, nearest_bucket, weighted_draws
from engine.workspace import Workspace

# --- 7. assemble ----------------------------------------------------------------------------------


@dataclass
class PickedRows:
    """The pool's rows a manifest lists, taken out of the pool: text-to-image rows, then the
    image-to-image targets."""

    table: pa.Table  # the pool's columns for those rows
    pool_rows: np.ndarray  # int64: each row's pool row (for its concepts)
    weight: np.ndarray  # float64 per row, mean 1 over all rows
    n_t2i: int  # the first n_t2i rows are text-to-image rows
    source_sample_id: pa.Array  # the reference image of an image-to-image row; null for the others
    source_uri: pa.Array


@dataclass
class ManifestRows:
    """The manifest before the draws."""

    table: pa.Table  # schema.MANIFEST_ROW, then the pool columns the recipe read (recipe.columns())
    weight: np.ndarray  # float64 per row, mean 1 (the table's weight column)
    bucket: np.ndarray  # int64 index into recipe.buckets.sizes per row; -1 for an image without size


def take_rows(pool: pa.Table, t2i: TextToImage, i2i: ImageToImage) -> PickedRows:
    """Step assemble, first half: the manifest's rows out of the pool, with the mean-1 weights of
    the text-to-image and image-to-image rows together."""
    pool_rows = np.concatenate([t2i.rows, i2i.targets])
    weight = np.concatenate([t2i.weight, i2i.weight])
    weight = weight / weight.mean()
    n_t2i = len(t2i.rows)
    source_id = pa.nulls(n_t2i, pa.string())
    source_uri = pa.nulls(n_t2i, pa.string())
    if len(i2i.sources):
        source_id = pa.concat_arrays(
            [source_id, pool["sample_id"].take(pa.array(i2i.sources)).combine_chunks()]
        )
        source_uri = pa.concat_arrays([source_uri, pool["uri"].take(pa.array(i2i.sources)).combine_chunks()])
    return PickedRows(pool.take(pa.array(pool_rows)), pool_rows, weight, n_t2i, source_id, source_uri)


def _row_concepts(pool_sets: ConceptSets, pool_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows' concepts as CSR: (offsets int64 (rows + 1,), dense concept index per pair)."""
    starts, ends = pool_sets.offsets[pool_rows], pool_sets.offsets[pool_rows + 1]
    lengths = ends - starts
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    pair_positions = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return offsets, pool_sets.index[pair_positions]


def assemble_rows(
    ws: Workspace, recipe: Recipe, picked: PickedRows, pool_sets: ConceptSets, seed: int
) -> ManifestRows:
    """Step assemble, second half: each row's bucket (recipe.buckets), concept ids, caption and
    caption form (drawn per sample with a hash of (seed, sample_id), engine.curation.captions)."""
    table = picked.table
    width = table["width"].to_numpy(zero_copy_only=False)
    height = table["height"].to_numpy(zero_copy_only=False)
    bucket_sizes = np.array(recipe.buckets.sizes, dtype=np.int64)
    bucket = nearest_bucket(width, height, bucket_sizes, recipe.buckets.max_upscale)

    offsets, concept_index = _row_concepts(pool_sets, picked.pool_rows)

    def names_joined() -> pa.Array:  # "parrot, tree, sun" per row, for tag and enhanced captions
        names = concept_names(ws, pool_sets.concept_ids)
        name_array = pa.array([names.get(int(c), str(int(c))) for c in pool_sets.concept_ids], pa.string())
        pair_names = name_array.take(pa.array(concept_index, pa.int64()))
        return pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pair_names), ", ")

    concept_lists = pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), pa.array(pool_sets.concept_ids[concept_index], pa.int64())
    )
    probabilities = np.array([p for _, p in recipe.caption.forms])
    form_index = choose_form(keyed_uniform(table["sample_id"], seed, "caption"), probabilities)
    caption, caption_form = build_captions(table, recipe, form_index, names_joined)

    n_rows = len(picked.pool_rows)
    kind = pa.array(["t2i", "i2i"]).take(pa.array((np.arange(n_rows) >= picked.n_t2i).astype(np.int8)))
    columns = {
        "sample_id": table["sample_id"],
        "uri": table["uri"],
        "caption": caption,
        "weight": pa.array(picked.weight, pa.float64()),
        "bucket_h": pa.array(bucket_sizes[bucket, 0], pa.int32()),
        "bucket_w": pa.array(bucket_sizes[bucket, 1], pa.int32()),
        "stage": pa.repeat(pa.scalar(recipe.stage, pa.string()), n_rows),
        "kind": kind,
        "concept_ids": concept_lists,
        "source_sample_id": picked.source_sample_id,
        "source_uri": picked.source_uri,
        "caption_form": caption_form,
    }
    manifest = pa.table(columns, schema=schema.MANIFEST_ROW)
    for name in recipe.columns():  # the scores the recipe used
        manifest = manifest.append_column(name, table[name])
    return ManifestRows(manifest, picked.weight, bucket)


# --- 8. draw --------------------------------------------------------------------------------------


def draw_rows(
    rows: ManifestRows, recipe: Recipe, size: int | None, seed: int, warnings: list[str]
) -> tuple[pa.Table, dict | None]:
    """Step draw: with ``size``, the manifest as ``size`` draws, epoch by epoch, weighted without
    replacement within an epoch with a repeat cap (engine.curation.sampling.weighted_draws), plus
    the draw columns; else the rows as they are. Returns (manifest, the sidecar's "draws")."""
    if size is None:
        return rows.table, None
    epoch_size = max(1, math.ceil(recipe.draws.epoch_fraction * rows.table.num_rows))
    drawn, epochs = weighted_draws(rows.weight, size, epoch_size, recipe.draws.repeat_cap, seed)
    manifest = rows.table.take(pa.array(drawn))
    manifest = manifest.append_column("draw", pa.array(np.arange(len(drawn)), pa.int64()))
    manifest = manifest.append_column("epoch", pa.array(epochs, pa.int32()))
    if len(drawn) < size:
        warnings.append(
            f"draws: only {len(drawn)} of {size} draws possible with repeat_cap "
            f"{recipe.draws.repeat_cap} over {len(rows.weight)} rows"
        )
    return manifest, {
        "requested": size,
        "drawn": len(drawn),
        "epoch_size": epoch_size,
        "epochs": int(epochs.max()) + 1 if len(epochs) else 0,
        "repeat_cap": recipe.draws.repeat_cap,
        "distinct_rows": len(np.unique(drawn)),
    }


# --- 9. sidecar -----------------------------------------------------------------------------------


def summarize_values(values: np.ndarray) -> dict:
    """min, p50, p99, max and mean of the values (6 decimals); {} for none."""
    if len(values) == 0:
        return {}
    q = np.quantile(values, [0.0, 0.5, 0.99, 1.0])
    return {
        "min": round(float(q[0]), 6),
        "p50": round(float(q[1]), 6),
        "p99": round(float(q[2]), 6),
        "max": round(float(q[3]), 6),
        "mean": round(float(values.mean()), 6),
    }


def _concept_marginals(ws: Workspace, t2i: TextToImage) -> dict:
    """The concept marginal of the kept rows before weighting (each counts 1) and after (the
    text-to-image weights), each summarised with the names of its top concepts."""
    sets = t2i.kept_sets
    before = concept_marginal(sets, np.ones(sets.n_samples))
    after = concept_marginal(sets.subset(t2i.positive), t2i.weight)
    # Names only for the concepts a summary lists (the top ones before and after).
    top = np.r_[np.argsort(-before)[:50], np.argsort(-after)[:50]]
    names = concept_names(ws, sets.concept_ids[np.unique(top)])
    return {
        "before": marginal_summary(sets.concept_ids, before, names=names),
        "after": marginal_summary(sets.concept_ids, after, names=names),
    }


def _bucket_shares(recipe: Recipe, rows: ManifestRows) -> list[dict]:
    """Rows and share of the weight per bucket that has rows."""
    sizes = np.array(recipe.buckets.sizes, dtype=np.int64)
    sized = rows.bucket >= 0
    counts = np.bincount(rows.bucket[sized], minlength=len(sizes))
    weight = np.bincount(rows.bucket[sized], weights=rows.weight[sized], minlength=len(sizes))
    return [
        {"h": int(h), "w": int(w), "rows": int(n), "weight_share": round(float(s / rows.weight.sum()), 6)}
        for (h, w), n, s in zip(sizes, counts, weight, strict=True)
        if n
    ]


def build_sidecar(
    ws: Workspace,
    recipe: Recipe,
    found: ManifestInputs,
    seed: int,
    size: int | None,
    *,
    counts: dict,
    selection: Selection,
    boost: Boost,
    t2i: TextToImage,
    i2i: ImageToImage,
    rows: ManifestRows,
    draws: dict | None,
    warnings: list[str],
) -> dict:
    """Step sidecar: the recipe, the seed, the inputs' hashes, the counts of every step, the
    weights, the concept marginal before and after, the buckets, caption forms, feedback, boosts
    and draws. ``counts`` holds the pool's counts ("pool", "unprofiled"); the steps' follow."""
    counts = counts | {
        "filters": selection.filter_counts,
        "dedup_removed": selection.dedup_removed,
        "zero_weight": t2i.zero_weight,
        "balance_dropped": t2i.balance_dropped,
        "rows": rows.table.num_rows,
        "t2i": len(t2i.rows),
        "i2i": len(i2i.targets),
    }
    forms = pc.value_counts(rows.table["caption_form"]).to_pylist()
    return {
        "manifest_id": found.manifest_id,
        "stage": recipe.stage,
        "engine_version": found.identity["engine"],
        "seed": seed,
        "size": size,
        "recipe": recipe.to_dict(),
        "recipe_file": recipe.source,
        "inputs": found.inputs,
        "counts": counts,
        "weights": summarize_values(rows.weight),
        "concept_marginal": _concept_marginals(ws, t2i),
        "buckets": _bucket_shares(recipe, rows),
        "caption_forms": {d["values"]: d["counts"] for d in sorted(forms, key=lambda d: d["values"])},
        "feedback": found.feedback.summary if found.feedback is not None else {"enabled": False},
        "feedback_fingerprint": found.identity["feedback"],
        "boosts": boost.info | {"fingerprint": found.boosts_fingerprint},  # applied: rows whose weight it set
        "draws": draws,
        "warnings": warnings,
    }
