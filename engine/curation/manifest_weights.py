"""The first steps of a manifest build: which pool rows a manifest lists, and with what weight.

``engine.curation.manifest.build_manifest`` calls them in this order, each on the pool
(``engine.curation.pool.load_pool``) and what the steps before it returned:

1. **filter** (:func:`filter_rows`): the hard filters in recipe order, then the dedup rule ->
   :class:`Selection`.
2. **boost** (:func:`boost_rows`): each boosted sample's factor; a boosted sample the dedup rule
   left out comes back -> (:class:`Selection`, :class:`Boost`).
3. **tilt** (:func:`tilt_factors`): the soft tilts, ranked over the rows that passed the filters.
4. **balance** (:func:`balance_rows`): concept balancing of the kept rows -> :class:`Balanced`.
5. **feedback** (:func:`feedback_factors`): the trainer's per-concept multipliers per pool row;
   :func:`weigh_rows` multiplies them and the boosts in, leaves rows of weight 0 out and scales
   the rest to mean 1 -> :class:`TextToImage`.
6. **image-to-image** (:func:`image_to_image_rows`): pairs within near-duplicate communities and
   their share of the weight -> :class:`ImageToImage`.

Pure numpy/pyarrow over the pool's arrays, apart from the concept graph that hierarchical
balancing reads; writes nothing. The rows' contents are ``engine.curation.manifest_assembly``'s.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.curation.balancing import hierarchical_keep_prob, metaclip_keep_prob, uniform_concept_weights
from engine.curation.captions import concept_query
from engine.curation.concept_sets import ConceptSets
from engine.curation.feedback import FeedbackState, sample_multipliers
from engine.curation.pool import NUMERIC_COLUMNS, column_values
from engine.curation.recipe import Recipe
from engine.curation.sampling import keyed_uniform, range_mask, rank_tilt
from engine.workspace import Workspace

# --- 1. filter ------------------------------------------------------------------------------------


@dataclass
class Selection:
    """Which pool rows the hard filters and the dedup rule keep."""

    passed_filters: np.ndarray  # bool per pool row: passed every hard filter (tilts rank over these)
    keep: np.ndarray  # bool per pool row: passed the filters and the dedup rule, or a boost readmitted it
    filter_counts: list[dict]  # per filter, in recipe order: {"filter", "removed", "missing"}
    dedup_removed: int  # rows the dedup rule left out, less those a boost readmitted


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


def filter_rows(pool: pa.Table, recipe: Recipe, warnings: list[str]) -> Selection:
    """Step filter: the hard filters (:func:`filter_mask`), then the dedup rule (representatives
    only, unless ``dedup.keep = "all"``). Appends its warnings to ``warnings``."""
    passed, filter_counts, filter_warnings = filter_mask(pool, recipe)
    warnings += filter_warnings
    keep = passed.copy()
    dedup_removed = 0
    if recipe.dedup.keep == "representative":
        rep = pool["is_representative"]
        if rep.null_count == pool.num_rows:
            warnings.append("dedup: no dedup table (run zcurate dedup); near-duplicates are kept")
        else:
            is_rep = np.asarray(rep.fill_null(True).to_numpy(zero_copy_only=False), dtype=bool)
            dedup_removed = int((keep & ~is_rep).sum())
            keep &= is_rep
    return Selection(passed, keep, filter_counts, dedup_removed)


# --- 2. boost -------------------------------------------------------------------------------------


@dataclass
class Boost:
    """The user's boosts (engine.curation.feedback.read_boosts) on the pool."""

    factor: np.ndarray  # float64 per pool row: the sample's boost, 1 where there is none
    info: dict  # the sidecar's "boosts": samples, in_pool, filtered, applied (kept rows it multiplies)


def boost_rows(pool: pa.Table, boosts: pa.Table, selection: Selection) -> tuple[Selection, Boost]:
    """Step boost: each boosted sample's factor. A boosted sample that passed the hard filters but
    not the dedup rule is kept again (the user asked for it); the hard filters (safety, size,
    quality) still apply."""
    factor = np.ones(pool.num_rows)
    info = {"samples": boosts.num_rows, "in_pool": 0, "filtered": 0, "applied": 0}
    if not boosts.num_rows:
        return selection, Boost(factor, info)
    position = pc.index_in(boosts["sample_id"], value_set=pool["sample_id"])
    found = np.asarray(position.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    where = np.asarray(position.filter(pa.array(found)).to_numpy(), dtype=np.int64)
    factor[where] = boosts["factor"].to_numpy()[found]
    readmitted = selection.passed_filters & ~selection.keep & (factor != 1.0)
    keep = selection.keep | readmitted
    info["in_pool"] = int(found.sum())
    info["filtered"] = int((~selection.passed_filters[where]).sum())
    info["applied"] = int((factor[keep] != 1.0).sum())
    dedup_removed = selection.dedup_removed - int(readmitted.sum())
    return replace(selection, keep=keep, dedup_removed=dedup_removed), Boost(factor, info)


# --- 3. tilt --------------------------------------------------------------------------------------


def tilt_factors(pool: pa.Table, recipe: Recipe, passed_filters: np.ndarray) -> np.ndarray:
    """Step tilt: float64 per pool row, the product of the recipe's tilts; each is ranked over every
    row that passed the hard filters (image-to-image targets too); 1 on the other rows."""
    tilt = np.ones(pool.num_rows)
    for t in recipe.tilts:
        factors = np.ones(pool.num_rows)
        factors[passed_filters] = rank_tilt(column_values(pool, t.column)[passed_filters], t.strength)
        tilt *= factors
    return tilt


# --- 4. balance -----------------------------------------------------------------------------------


@dataclass
class Balanced:
    """The kept rows with their tilt and balancing weights."""

    rows: np.ndarray  # int64 pool rows that passed the filters and the dedup rule, ascending
    weight: np.ndarray  # float64 per row: tilt times the balancing factor (0: balancing dropped it)
    sets: ConceptSets  # the rows' concepts
    balance_dropped: int  # rows balancing dropped (mode "sample")


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


def balance_rows(
    ws: Workspace,
    recipe: Recipe,
    pool: pa.Table,
    pool_sets: ConceptSets,
    keep: np.ndarray,
    tilt: np.ndarray,
    seed: int,
) -> Balanced:
    """Step balance: the kept rows' tilt times their balancing factor; in mode "sample" (metaclip,
    hierarchical) a keyed draw keeps a row with its keep probability instead (weight 0 if not)."""
    rows = np.flatnonzero(keep)
    sets = pool_sets.subset(keep)
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
    return Balanced(rows, weight, sets, balance_dropped)


# --- 5. feedback (and the boosts' weights) --------------------------------------------------------


@dataclass
class TextToImage:
    """The manifest's text-to-image rows: the kept rows whose weight is positive."""

    rows: np.ndarray  # int64 pool rows
    weight: np.ndarray  # float64 per row, mean 1
    kept_sets: ConceptSets  # concepts of every kept row (Balanced.sets), the rows of weight 0 too
    positive: np.ndarray  # bool per kept row: its weight is positive (it is one of the rows above)
    balance_dropped: int  # kept rows balancing dropped (mode "sample")
    zero_weight: int  # other kept rows whose weight came out 0


def feedback_factors(pool_sets: ConceptSets, feedback: FeedbackState | None) -> np.ndarray:
    """Step feedback: float64 per pool row, the mean multiplier of its concepts
    (engine.curation.feedback.sample_multipliers); 1 without reports or with feedback off."""
    if feedback is None or not len(feedback.concept_ids):
        return np.ones(pool_sets.n_samples)
    flat = pool_sets.concept_ids[pool_sets.index]
    return sample_multipliers(pool_sets.offsets, flat, feedback.concept_ids, feedback.multipliers)


def weigh_rows(balanced: Balanced, tilt: np.ndarray, feedback: np.ndarray, boost: np.ndarray) -> TextToImage:
    """The balanced weights times the feedback factors and the boosts; rows of weight 0 left out,
    the rest scaled to mean 1 (empty when every weight is 0: the caller reports it).

    A boosted row that balancing dropped (weight 0) comes back with its tilt as weight.
    """
    rows = balanced.rows
    weight = balanced.weight * feedback[rows]
    row_boost = boost[rows]
    weight = np.where((row_boost != 1.0) & (weight <= 0), tilt[rows], weight) * row_boost
    positive = weight > 0
    zero_weight = int((~positive).sum()) - balanced.balance_dropped
    rows, weight = rows[positive], weight[positive]
    weight = weight / weight.mean() if len(weight) else weight
    return TextToImage(rows, weight, balanced.sets, positive, balanced.balance_dropped, zero_weight)


# --- 6. image-to-image ----------------------------------------------------------------------------


@dataclass
class ImageToImage:
    """The manifest's image-to-image rows (omni): a reference image and a target per pair."""

    sources: np.ndarray  # int64 pool row of each pair's reference image
    targets: np.ndarray  # int64 pool row of each pair's target (the manifest row)
    weight: np.ndarray  # float64 per pair, ``share`` of the total weight with the text-to-image rows


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


def image_to_image_rows(
    pool: pa.Table,
    recipe: Recipe,
    passed_filters: np.ndarray,
    tilt: np.ndarray,
    feedback: np.ndarray,
    t2i_weight: np.ndarray,
    seed: int,
    warnings: list[str],
) -> ImageToImage:
    """Step image-to-image: with ``image_to_image.share`` > 0, the pairs of
    :func:`image_to_image_pairs`, weighted by the target's tilt and feedback factor and scaled so
    that they take ``share`` of the total weight. Appends a warning when there is no pair."""
    share = recipe.image_to_image.share
    none = np.zeros(0, np.int64)
    if share <= 0:
        return ImageToImage(none, none, np.zeros(0))
    sources, targets = image_to_image_pairs(pool, passed_filters, recipe, seed)
    if not len(targets):
        warnings.append("image_to_image: no near-duplicate community with two usable members")
        return ImageToImage(sources, targets, np.zeros(0))
    weight = tilt[targets] * feedback[targets]
    weight *= share / (1 - share) * t2i_weight.sum() / weight.sum()
    return ImageToImage(sources, targets, weight)
