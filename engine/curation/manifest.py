"""Sampling manifests: what a stage trains on, how often, at which resolution, with which caption.

``build_manifest(ws, recipe, seed)`` turns the workspace's tables into
``manifests/<stage>/<manifest_id>.parquet`` and a JSON sidecar next to it (DESIGN.md section 4):

1. **Pool** (:func:`load_pool`): every usable sample (``samples.status = 'ok'``) with its signals,
   OCR, clip and NSFW scores, near-duplicate community, and its concepts (the ``tags`` of the
   recipe's sources and minimum score, optionally mapped to their ancestors at a graph depth),
   in workspace order (shards, then rows). Each table is read once, only the columns the recipe
   needs, and joined on sample_id by a binary search over 64-bit id prefixes (:func:`align`).
2. **Hard filters** in recipe order, then the dedup rule; the sidecar counts what each removed.
3. **Weights** (``engine.curation.sampling``, ``engine.curation.balancing``): soft tilts, concept
   balancing (MetaCLIP, hierarchical MetaCLIP or the SFT near-uniform rule), trainer feedback
   multipliers (``engine.curation.feedback``) and user boosts; rows whose weight is zero are left
   out; weights are scaled to mean 1.
4. **Image-to-image rows** (omni): within each near-duplicate community that survived the hard
   filters, the representative is the reference image of each other member (at most
   ``max_per_community``); they share ``image_to_image.share`` of the total weight.
5. **Buckets and captions**: each row's (bucket_h, bucket_w) from the recipe's bucket table and
   its caption form (original, OCR-augmented, tag names, prompt-enhanced), drawn per sample with
   a hash of (seed, sample_id) so a sample keeps its draw when the pool grows.
6. Optionally (``size``) the manifest is **materialised** as N draws, epoch by epoch, weighted
   without replacement within an epoch with a repeat cap per sample
   (``engine.curation.sampling.weighted_draws``).

``manifest_id`` hashes the inputs (each input file's name, size and Parquet footer), the recipe,
the seed, the size, the feedback reports and the boosts, and the engine version: the same inputs
give the same id and a byte-identical file, and a build whose file exists returns it at once.
:func:`manifest_identity` gives the id without building (reads footers and reports only).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine import schema
from engine.curation.balancing import (
    concept_marginal,
    hierarchical_keep_prob,
    marginal_summary,
    metaclip_keep_prob,
    uniform_concept_weights,
)
from engine.curation.captions import build_captions, concept_names, concept_query
from engine.curation.concept_sets import ConceptSets
from engine.curation.feedback import (
    sample_multipliers,
)
from engine.curation.manifest_identity import gather_inputs
from engine.curation.pool import column_values, load_pool
from engine.curation.recipe import NUMERIC_COLUMNS, Recipe
from engine.curation.sampling import (
    choose_form,
    keyed_uniform,
    nearest_bucket,
    range_mask,
    rank_tilt,
    weighted_draws,
)
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


def filter_mask(pool: pa.Table, recipe: Recipe) -> tuple[np.ndarray, list[dict], list[str]]:
    """Hard filters in recipe order: (keep mask, per-filter counts, warnings)."""
    keep = np.ones(pool.num_rows, dtype=bool)
    counts, warnings = [], []
    for f in recipe.filters:
        column = pool[f.column]
        missing = np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if f.column in NUMERIC_COLUMNS:
            values = column_values(pool, f.column)
            low = f.min
            if f.min_quantile is not None and (~missing).any():
                q = float(np.quantile(values[~missing], f.min_quantile))
                low = q if low is None else max(low, q)
            passed = range_mask(values, low, f.max, f.missing)
        else:
            equal = pc.equal(column, pa.scalar(f.equals, column.type)) if f.equals is not None else None
            passed = ~missing if equal is None else np.asarray(equal.fill_null(False).to_numpy(), dtype=bool)
            if f.missing == "keep":
                passed |= missing
        if missing.all() and pool.num_rows:
            warnings.append(
                f"filter {f.column}: the column is null for every sample (its stage has not run); "
                f"{'kept all' if f.missing == 'keep' else 'dropped all'}"
            )
        removed = int((keep & ~passed).sum())
        counts.append({"filter": f.column, "removed": removed, "missing": int(missing.sum())})
        keep &= passed
    return keep, counts, warnings


def summarize_values(values: np.ndarray) -> dict:
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


def _ancestor_pairs(ws: Workspace, concept_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(concept_index, ancestor_index, all_ids): proper-ancestor pairs of the tagged concepts in a
    dense index space whose first len(concept_ids) entries are concept_ids themselves."""
    pairs = concept_query(
        ws,
        concept_ids,
        "SELECT a.concept_id, a.ancestor_id FROM concept_ancestors a JOIN wanted USING (concept_id) "
        "WHERE a.distance > 0",
    )
    child = pairs["concept_id"].to_numpy()
    ancestor = pairs["ancestor_id"].to_numpy()
    extra = np.setdiff1d(np.unique(ancestor), concept_ids)
    all_ids = np.concatenate([concept_ids, extra])
    order = np.argsort(all_ids, kind="stable")
    position = lambda ids: order[np.searchsorted(all_ids[order], ids)]  # noqa: E731
    return position(child), position(ancestor), all_ids


def balance_factors(ws: Workspace, recipe: Recipe, sets: ConceptSets, base: np.ndarray) -> np.ndarray:
    """Per-sample balancing factor (weight mode) or keep probability (sample mode)."""
    b = recipe.balance
    if b.method == "metaclip":
        return metaclip_keep_prob(sets, b.threshold, b.untagged)
    if b.method == "hierarchical":
        child, ancestor, _ = _ancestor_pairs(ws, sets.concept_ids)
        return hierarchical_keep_prob(sets, (child, ancestor), b.threshold, b.alpha, b.untagged)
    if b.method == "uniform":
        weights = uniform_concept_weights(
            sets, base, temperature=b.temperature, max_ratio=b.max_ratio, untagged=b.untagged
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(base > 0, weights / base, 0.0)
    return np.ones(sets.n_samples)


def image_to_image_pairs(
    pool: pa.Table, candidates: np.ndarray, recipe: Recipe, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(source rows, target rows) of image-to-image pairs within near-duplicate communities.

    Among the candidate rows (passed the hard filters) of each community with two or more, the
    source is the representative (or the first sample_id when it was filtered out); up to
    ``max_per_community`` other members, chosen by a seeded hash, are targets.
    """
    rows = np.flatnonzero(candidates)
    community = pool["community_id"].take(pa.array(rows))
    known = np.asarray(community.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    rows, community = rows[known], community.filter(pa.array(known))
    if len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    codes = np.asarray(pc.dictionary_encode(community).combine_chunks().indices.to_numpy(), dtype=np.int64)
    rep = pool["is_representative"].take(pa.array(rows)).fill_null(False).to_numpy(zero_copy_only=False)
    order = np.lexsort((rows, ~np.asarray(rep, dtype=bool), codes))  # community, representative first, id
    rows, codes = rows[order], codes[order]
    first = np.r_[True, codes[1:] != codes[:-1]]
    group = np.cumsum(first) - 1
    size = np.bincount(group)
    source_of_group = rows[first]
    is_target = ~first & (size[group] >= 2)
    t_rows, t_group = rows[is_target], group[is_target]
    u = keyed_uniform(pool["sample_id"].take(pa.array(t_rows)), seed, "image_to_image")
    order = np.lexsort((u, t_group))
    t_rows, t_group = t_rows[order], t_group[order]
    starts = np.searchsorted(t_group, t_group, side="left")
    rank = np.arange(len(t_group)) - starts
    keep = rank < recipe.image_to_image.max_per_community
    return source_of_group[t_group[keep]], t_rows[keep]


def build_manifest(
    ws: Workspace, recipe: Recipe, seed: int = 0, size: int | None = None, force: bool = False
) -> ManifestResult:
    """Build (or find) the manifest of ``recipe`` over the workspace; see the module docstring."""
    check_size(size)
    found = gather_inputs(ws, recipe, seed, size)
    manifest_id, identity, inputs = found.manifest_id, found.identity, found.inputs
    feedback, boosts, boosts_fingerprint = found.feedback, found.boosts, found.boosts_fingerprint
    rel = ws.manifest_rel(recipe.stage, manifest_id)
    if not force and ws.exists(f"{rel}.parquet") and ws.exists(f"{rel}.json"):
        sidecar = json.loads(ws.read_text(f"{rel}.json"))
        return ManifestResult(
            manifest_id, recipe.stage, ws.path(f"{rel}.parquet"), ws.path(f"{rel}.json"), sidecar, True
        )

    pool, all_sets, pool_counts = load_pool(ws, recipe)
    if pool.num_rows == 0:
        raise ManifestError(
            f"the workspace {ws.root} has no usable sample: curate a source first (zcurate curate)"
        )
    keep, filter_counts, warnings = filter_mask(pool, recipe)
    passed_filters = keep.copy()
    dedup_removed = 0
    if recipe.dedup == "representative":
        rep = pool["is_representative"]
        if rep.null_count == pool.num_rows:
            warnings.append("dedup: no dedup table (run zcurate dedup); near-duplicates are kept")
        else:
            is_rep = np.asarray(rep.fill_null(True).to_numpy(zero_copy_only=False), dtype=bool)
            dedup_removed = int((keep & ~is_rep).sum())
            keep &= is_rep
    boost_factor = np.ones(pool.num_rows)
    boosted = {"samples": boosts.num_rows, "in_pool": 0, "filtered": 0, "applied": 0}
    if boosts.num_rows:
        position = pc.index_in(boosts["sample_id"], value_set=pool["sample_id"])
        found = np.asarray(position.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        where = np.asarray(position.filter(pa.array(found)).to_numpy(), dtype=np.int64)
        boost_factor[where] = boosts["factor"].to_numpy()[found]
        boosted["in_pool"] = int(found.sum())
        boosted["filtered"] = int((~passed_filters[where]).sum())
        readmitted = passed_filters & ~keep & (boost_factor != 1.0)
        dedup_removed -= int(readmitted.sum())
        keep |= readmitted
    counts = {"pool": pool.num_rows, **pool_counts, "filters": filter_counts, "dedup_removed": dedup_removed}
    if not keep.any():
        removed = ", ".join(f"{c['filter']} {c['removed']}" for c in filter_counts)
        raise ManifestError(
            f"recipe {recipe.source or recipe.stage} keeps no sample of {pool.num_rows}: "
            f"removed by filters: {removed or 'none'}; by dedup {dedup_removed}"
        )

    # Tilts are ranked over every sample that passed the hard filters (image-to-image targets too).
    tilt = np.ones(pool.num_rows)
    for t in recipe.tilts:
        factors = np.ones(pool.num_rows)
        factors[passed_filters] = rank_tilt(column_values(pool, t.column)[passed_filters], t.strength)
        tilt *= factors

    rows = np.flatnonzero(keep)
    sets = all_sets.subset(keep)
    marginal_before = concept_marginal(sets, np.ones(len(rows)))
    weight = tilt[rows].copy()
    factor = balance_factors(ws, recipe, sets, weight)
    balance_dropped = 0
    if recipe.balance.method in ("metaclip", "hierarchical") and recipe.balance.mode == "sample":
        u = keyed_uniform(pool["sample_id"].take(pa.array(rows)), seed, "balance")
        kept = u < factor
        balance_dropped = int((~kept).sum())
        weight = np.where(kept, weight, 0.0)
    else:
        weight = weight * factor

    feedback_factor = np.ones(pool.num_rows)
    if feedback is not None and len(feedback.concept_ids):
        flat = all_sets.concept_ids[all_sets.index]
        feedback_factor = sample_multipliers(
            all_sets.offsets, flat, feedback.concept_ids, feedback.multipliers
        )
    weight *= feedback_factor[rows]

    if boosts.num_rows:
        # A boosted sample has its weight multiplied, and one left out by dedup or by balancing
        # (weight 0) comes back with its tilt as weight: the user asked for it. Hard filters
        # (safety, size, quality) still apply.
        boost = boost_factor[rows]
        weight = np.where((boost != 1.0) & (weight <= 0), tilt[rows], weight) * boost
        boosted["applied"] = int((boost != 1.0).sum())

    positive = weight > 0
    counts["zero_weight"] = int((~positive).sum()) - balance_dropped
    counts["balance_dropped"] = balance_dropped
    rows, weight = rows[positive], weight[positive]
    if len(rows) == 0:
        raise ManifestError(
            f"recipe {recipe.source or recipe.stage}: every sample got weight 0 after balancing "
            f"(balance.untagged = {recipe.balance.untagged} and no sample carries a concept?)"
        )
    weight = weight / weight.mean()

    # Image-to-image rows (omni): they take `share` of the total weight.
    sources = np.zeros(0, np.int64)
    targets = np.zeros(0, np.int64)
    i2i_weight = np.zeros(0)
    share = recipe.image_to_image.share
    if share > 0:
        sources, targets = image_to_image_pairs(pool, passed_filters, recipe, seed)
        if len(targets):
            i2i_weight = tilt[targets] * feedback_factor[targets]
            i2i_weight *= share / (1 - share) * weight.sum() / i2i_weight.sum()
        else:
            warnings.append("image_to_image: no near-duplicate community with two usable members")

    target_rows = np.concatenate([rows, targets])
    all_weight = np.concatenate([weight, i2i_weight])
    all_weight = all_weight / all_weight.mean()
    n_t2i = len(rows)

    table = pool.take(pa.array(target_rows))
    source_id = pa.nulls(n_t2i, pa.string())
    source_uri = pa.nulls(n_t2i, pa.string())
    if len(sources):
        source_id = pa.concat_arrays([source_id, pool["sample_id"].take(pa.array(sources)).combine_chunks()])
        source_uri = pa.concat_arrays([source_uri, pool["uri"].take(pa.array(sources)).combine_chunks()])
    del pool  # the manifest's rows are in `table` now: free the pool's strings before writing
    width = table["width"].to_numpy(zero_copy_only=False)
    height = table["height"].to_numpy(zero_copy_only=False)
    bucket_sizes = np.array(recipe.buckets.sizes, dtype=np.int64)
    bucket = nearest_bucket(width, height, bucket_sizes, recipe.buckets.max_upscale)

    # Concepts (ids and names) of the manifest's rows, and the caption forms.
    offsets = all_sets.offsets
    starts, ends = offsets[target_rows], offsets[target_rows + 1]
    lengths = ends - starts
    new_offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    pair_positions = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    row_index = all_sets.index[pair_positions]

    def names_joined() -> pa.Array:  # "parrot, tree, sun" per row, for tag and enhanced captions
        names = concept_names(ws, all_sets.concept_ids)
        name_array = pa.array([names.get(int(c), str(int(c))) for c in all_sets.concept_ids], pa.string())
        pair_names = name_array.take(pa.array(row_index, pa.int64()))
        return pc.binary_join(pa.ListArray.from_arrays(pa.array(new_offsets, pa.int32()), pair_names), ", ")

    concept_lists = pa.ListArray.from_arrays(
        pa.array(new_offsets, pa.int32()), pa.array(all_sets.concept_ids[row_index], pa.int64())
    )
    probabilities = np.array([p for _, p in recipe.caption.forms])
    form_index = choose_form(keyed_uniform(table["sample_id"], seed, "caption"), probabilities)
    caption, caption_form = build_captions(table, recipe, form_index, names_joined)

    kind = pa.array(["t2i", "i2i"]).take(pa.array((np.arange(len(target_rows)) >= n_t2i).astype(np.int8)))
    columns = {
        "sample_id": table["sample_id"],
        "uri": table["uri"],
        "caption": caption,
        "weight": pa.array(all_weight, pa.float64()),
        "bucket_h": pa.array(bucket_sizes[bucket, 0], pa.int32()),
        "bucket_w": pa.array(bucket_sizes[bucket, 1], pa.int32()),
        "stage": pa.repeat(pa.scalar(recipe.stage, pa.string()), len(target_rows)),
        "kind": kind,
        "concept_ids": concept_lists,
        "source_sample_id": source_id,
        "source_uri": source_uri,
        "caption_form": caption_form,
    }
    manifest = pa.table(columns, schema=schema.MANIFEST_ROW)
    for name in recipe.columns():  # the scores the recipe used
        manifest = manifest.append_column(name, table[name])

    draws_info = None
    if size is not None:
        epoch_size = max(1, math.ceil(recipe.draws.epoch_fraction * manifest.num_rows))
        draw_rows, epochs = weighted_draws(all_weight, size, epoch_size, recipe.draws.repeat_cap, seed)
        manifest = manifest.take(pa.array(draw_rows))
        manifest = manifest.append_column("draw", pa.array(np.arange(len(draw_rows)), pa.int64()))
        manifest = manifest.append_column("epoch", pa.array(epochs, pa.int32()))
        draws_info = {
            "requested": size,
            "drawn": len(draw_rows),
            "epoch_size": epoch_size,
            "epochs": int(epochs.max()) + 1 if len(epochs) else 0,
            "repeat_cap": recipe.draws.repeat_cap,
            "distinct_rows": len(np.unique(draw_rows)),
        }
        if len(draw_rows) < size:
            warnings.append(
                f"draws: only {len(draw_rows)} of {size} draws possible with repeat_cap "
                f"{recipe.draws.repeat_cap} over {len(all_weight)} rows"
            )

    marginal_after = concept_marginal(sets.subset(positive), weight)
    # Names only for the concepts a summary lists (the top ones before and after).
    top = np.r_[np.argsort(-marginal_before)[:50], np.argsort(-marginal_after)[:50]]
    summary_names = concept_names(ws, sets.concept_ids[np.unique(top)])
    counts.update({"rows": len(target_rows), "t2i": n_t2i, "i2i": len(targets)})
    bucket_rows = np.bincount(bucket[bucket >= 0], minlength=len(bucket_sizes))
    bucket_weight = np.bincount(
        bucket[bucket >= 0], weights=all_weight[bucket >= 0], minlength=len(bucket_sizes)
    )
    forms = pc.value_counts(caption_form).to_pylist()
    sidecar = {
        "manifest_id": manifest_id,
        "stage": recipe.stage,
        "engine_version": identity["engine"],
        "seed": seed,
        "size": size,
        "recipe": recipe.to_dict(),
        "recipe_file": recipe.source,
        "inputs": inputs,
        "counts": counts,
        "weights": summarize_values(all_weight),
        "concept_marginal": {
            "before": marginal_summary(sets.concept_ids, marginal_before, names=summary_names),
            "after": marginal_summary(sets.concept_ids, marginal_after, names=summary_names),
        },
        "buckets": [
            {"h": int(h), "w": int(w), "rows": int(n), "weight_share": round(float(s / all_weight.sum()), 6)}
            for (h, w), n, s in zip(bucket_sizes, bucket_rows, bucket_weight, strict=True)
            if n
        ],
        "caption_forms": {d["values"]: d["counts"] for d in sorted(forms, key=lambda d: d["values"])},
        "feedback": feedback.summary if feedback is not None else {"enabled": False},
        "feedback_fingerprint": identity["feedback"],
        "boosts": boosted | {"fingerprint": boosts_fingerprint},  # applied: rows whose weight it set
        "draws": draws_info,
        "warnings": warnings,
    }
    ws.write_parquet(f"{rel}.parquet", manifest)
    ws.write_text(f"{rel}.json", json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    return ManifestResult(
        manifest_id, recipe.stage, ws.path(f"{rel}.parquet"), ws.path(f"{rel}.json"), sidecar, False
    )
