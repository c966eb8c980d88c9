"""Sampling manifests: what a stage trains on, how often, at which resolution, with which caption.

``build_manifest(ws, recipe, seed)`` turns the workspace's tables into
``manifests/<stage>/<manifest_id>.parquet`` and a JSON sidecar next to it (DESIGN.md section 4):

1. **Pool** (:func:`load_pool`): every usable sample (``samples.status = 'ok'``) with its signals,
   OCR, clip and NSFW scores, near-duplicate community, and its concepts (the ``tags`` of the
   recipe's sources and minimum score, optionally mapped to their ancestors at a graph depth),
   in workspace order (shards, then rows). Each table is read once, only the columns the recipe
   needs, and joined on sample_id by a binary search over 64-bit id prefixes (:func:`align`).
2. **Hard filters** in recipe order, then the dedup rule; the sidecar counts what each removed.
3. **Weights** (engine/sampling.py): soft tilts, concept balancing (MetaCLIP, hierarchical
   MetaCLIP or the SFT near-uniform rule), trainer feedback multipliers (engine/feedback.py) and
   user boosts; rows whose weight is zero are left out; weights are scaled to mean 1.
4. **Image-to-image rows** (omni): within each near-duplicate community that survived the hard
   filters, the representative is the reference image of each other member (at most
   ``max_per_community``); they share ``image_to_image.share`` of the total weight.
5. **Buckets and captions**: each row's (bucket_h, bucket_w) from the recipe's bucket table and
   its caption form (original, OCR-augmented, tag names, prompt-enhanced), drawn per sample with
   a hash of (seed, sample_id) so a sample keeps its draw when the pool grows.
6. Optionally (``size``) the manifest is **materialised** as N draws, epoch by epoch, weighted
   without replacement within an epoch with a repeat cap per sample (engine.sampling.weighted_draws).

``manifest_id`` hashes the inputs (each input file's name, size and Parquet footer), the recipe,
the seed, the size, the feedback reports and the boosts, and the engine version: the same inputs
give the same id and a byte-identical file, and a build whose file exists returns it at once.
:func:`manifest_identity` gives the id without building (reads footers and reports only).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import sampling, schema
from engine.catalog import connect_catalog
from engine.feedback import (
    FeedbackConfig,
    FeedbackState,
    read_boosts,
    sample_multipliers,
    stage_feedback,
)
from engine.recipe import BOOL_COLUMNS, CAPTION_FORMS, NUMERIC_COLUMNS, TAG_SOURCES, Recipe
from engine.workspace import Workspace

MANIFESTS = "manifests"
# Tables a manifest reads; their files are fingerprinted into the manifest id.
INPUT_TABLES = (
    "samples",
    "signals",
    "embeddings",
    "safety",
    "ocr",
    "dedup",
    "tags",
    "concepts",
    "concept_ancestors",
)
FOOTER_BYTES = 65536  # the tail of a Parquet file: its footer (schema, row groups, statistics)

MANIFEST_COLUMNS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("uri", pa.string()),
        ("caption", pa.string()),  # as the stage uses it (caption_form says which form)
        ("weight", pa.float64()),  # relative sampling weight, mean 1 over the rows
        ("bucket_h", pa.int32()),
        ("bucket_w", pa.int32()),
        ("stage", pa.string()),
        ("kind", pa.string()),  # t2i (text-to-image) | i2i (image-to-image: source_* is the reference)
        ("concept_ids", pa.list_(pa.int64())),
        ("source_sample_id", pa.string()),
        ("source_uri", pa.string()),
        ("caption_form", pa.string()),  # original | ocr | tags | enhanced
    ]
)
DRAW_COLUMNS = pa.schema([("draw", pa.int64()), ("epoch", pa.int32())])


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


# The modules whose code decides a manifest's bytes: their digest is part of the engine version,
# so a fixed or changed rule gives new manifest ids instead of returning files the old code wrote.
MANIFEST_CODE = ("manifest.py", "sampling.py", "recipe.py", "feedback.py")


@functools.cache
def engine_version() -> str:
    """The package version plus a digest of the manifest code, e.g. ``0.1.0+3f2a9c0d1e2b``."""
    try:
        version = metadata.version("zcurate")
    except metadata.PackageNotFoundError:
        version = "0"
    digest = hashlib.sha256()
    for name in MANIFEST_CODE:
        with open(os.path.join(os.path.dirname(__file__), name), "rb") as f:
            digest.update(f.read())
    return f"{version}+{digest.hexdigest()[:12]}"


# --- identity ----------------------------------------------------------------------------------


def input_fingerprints(ws: Workspace) -> dict[str, dict]:
    """Per input table: its file count and a sha256 of every file's name, size and footer bytes.

    A Parquet footer holds the row groups' sizes and column statistics, so a changed file changes
    its footer; hashing footers keeps the id cheap on tables of many gigabytes (embeddings).
    """
    result = {}
    for table in INPUT_TABLES:
        digest = hashlib.sha256()
        files = ws.list_files(table, ".parquet")
        for name in files:
            path = ws.path(table, name)
            size = ws.fs.get_file_info(path).size
            with ws.fs.open_input_file(path) as f:
                f.seek(max(0, size - FOOTER_BYTES))
                tail = f.read()
            digest.update(f"{name}\0{size}\0".encode())
            digest.update(hashlib.sha256(tail).digest())
        result[table] = {"files": len(files), "sha256": digest.hexdigest() if files else ""}
    return result


def make_manifest_id(identity: dict) -> str:
    """16 hex digits of the sha256 of the canonical JSON of everything a manifest depends on."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# --- the pool ----------------------------------------------------------------------------------


# Where each pool column comes from: a table keyed by sample_id (columns of the catalog's
# ``signals`` view, DESIGN.md section 3), or derived from other pool columns.
POOL_SOURCES: dict[str, str] = {name: "signals" for name in schema.SIGNALS.names[2:]}
POOL_SOURCES |= {name: table for table, names in schema.SIGNAL_COLUMNS.items() for name in names}
POOL_SOURCES |= {"community_id": "dedup", "is_representative": "dedup", "source_kind": "samples"}
DERIVED = {"min_side", "pixels", "has_ocr_text"}


def needs_ocr_text(recipe: Recipe) -> bool:
    return any(form in ("ocr", "enhanced") and p > 0 for form, p in recipe.caption.forms)


@dataclass
class PoolIndex:
    """The pool's sample ids with a sorted index of their 64-bit keys (``sampling.id_keys``)."""

    ids: pa.Array
    keys: np.ndarray  # uint64 per pool row
    order: np.ndarray  # argsort of keys
    sorted_keys: np.ndarray

    @classmethod
    def build(cls, ids: pa.Array) -> PoolIndex:
        keys = sampling.id_keys(ids)
        order = np.argsort(keys, kind="stable")
        return cls(ids, keys, order, keys[order])


def align(pool: PoolIndex, ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """For each id of another table, its row in the pool (-1 when absent): the join on sample_id.

    The ids' 64-bit keys (the first 16 hex digits of the engine's 32-digit ids) are sorted and
    binary-searched in the pool's sorted keys (sorted queries keep the search in cache: 0.6 s for
    10M against 10M, where random ones take 10 s); every match is checked against the full id,
    and an id whose key prefix another id shares is looked up by its full id instead.
    """
    ids = ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids
    rows = np.full(len(ids), -1, dtype=np.int64)
    if len(pool.keys) == 0 or len(ids) == 0:
        return rows
    keys = sampling.id_keys(ids)
    query_order = np.argsort(keys, kind="stable")
    position = np.searchsorted(pool.sorted_keys, keys[query_order])
    position = np.minimum(position, len(pool.keys) - 1)
    found = pool.sorted_keys[position] == keys[query_order]
    rows[query_order[found]] = pool.order[position[found]]
    matched = np.flatnonzero(rows >= 0)
    same = pc.equal(pool.ids.take(pa.array(rows[matched])), ids.take(pa.array(matched)))
    wrong = matched[~np.asarray(same.to_numpy(zero_copy_only=False), dtype=bool)]
    if len(wrong):  # a shared 64-bit prefix: look those few up by their full id
        shared = np.isin(pool.keys, keys[wrong])
        lookup = dict(zip(pool.ids.filter(pa.array(shared)).to_pylist(), np.flatnonzero(shared), strict=True))
        rows[wrong] = [lookup.get(i, -1) for i in ids.take(pa.array(wrong)).to_pylist()]
    return rows


def _attach(pool: PoolIndex, table: pa.Table, names: list[str]) -> dict[str, pa.Array]:
    """Columns of ``table`` in pool order (null where the pool row has no row in the table)."""
    ids = table["sample_id"].combine_chunks()
    if len(ids) == len(pool.ids) and ids.equals(pool.ids):
        # Stage tables are written shard by shard in the samples' order: usually no join at all.
        return {name: table[name].combine_chunks() for name in names}
    rows = align(pool, ids)
    source = np.full(len(pool.keys), -1, dtype=np.int64)
    matched = rows >= 0
    source[rows[matched]] = np.flatnonzero(matched)
    index = pa.array(source, mask=source < 0)
    return {name: table[name].take(index) for name in names}


def load_pool(ws: Workspace, recipe: Recipe) -> tuple[pa.Table, sampling.ConceptSets, dict]:
    """The recipe's pool: every usable sample that has signals, in workspace order (shard by
    shard, rows in plan order), with the columns the recipe reads, its near-duplicate community,
    and its concepts.

    Returns (pool table, concept sets of its rows, counts). Each table is read once with only
    the columns needed and joined by :func:`align`; tags become CSR concept sets directly.
    """
    wanted = list(recipe.columns()) + (["ocr_text"] if needs_ocr_text(recipe) else [])
    usable = pc.field("status") == schema.STATUS_OK
    from_samples = ["sample_id", "uri", "caption"] + (["source_kind"] if "source_kind" in wanted else [])
    pool = ws.read_table("samples", from_samples, usable)
    index = PoolIndex.build(pool["sample_id"].combine_chunks())

    wanted += ["width", "height", "community_id", "is_representative"]
    wanted += ["ocr_text"] if "has_ocr_text" in wanted else []
    by_table: dict[str, list[str]] = {}
    for name in dict.fromkeys(wanted):
        if name not in DERIVED and POOL_SOURCES[name] != "samples":
            by_table.setdefault(POOL_SOURCES[name], []).append(name)
    for table_name, names in by_table.items():
        table = ws.read_table(table_name, ["sample_id", *names])
        for name, array in _attach(index, table, names).items():
            pool = pool.append_column(name, array)
    if "min_side" in wanted:
        pool = pool.append_column("min_side", pc.min_element_wise(pool["width"], pool["height"]))
    if "pixels" in wanted:
        pool = pool.append_column("pixels", pc.multiply(pool["width"].cast(pa.int64()), pool["height"]))
    if "has_ocr_text" in wanted:
        pool = pool.append_column("has_ocr_text", pc.not_equal(pool["ocr_text"], ""))
    # A usable sample without a signals row (a shard profiled by an older engine): not in the pool.
    profiled = np.asarray(pool["width"].is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    counts = {"unprofiled": int((~profiled).sum())}
    if not profiled.all():
        pool = pool.filter(pa.array(profiled))
        index = PoolIndex.build(pool["sample_id"].combine_chunks())
    return pool, pool_concepts(ws, recipe, index), counts


def _same_as_previous(ids: pa.Array) -> np.ndarray:
    """bool per row after the first: its id equals the previous row's."""
    equal = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1))
    return np.asarray(equal.to_numpy(zero_copy_only=False), dtype=bool)


def pool_concepts(ws: Workspace, recipe: Recipe, index: PoolIndex) -> sampling.ConceptSets:
    """The pool's concepts: tags of the recipe's sources with score >= min_score, optionally
    mapped to their ancestors at ``concepts.depth`` (a shallower concept stays itself)."""
    cfg = recipe.concepts
    chosen = pc.field("score") >= cfg.min_score
    if set(cfg.sources) != set(TAG_SOURCES):
        chosen &= pc.field("source").isin(list(cfg.sources))
    tags = ws.read_table("tags", ["sample_id", "concept_id"], chosen)  # filtered while scanning
    if cfg.depth > 0 and tags.num_rows:
        concepts = ws.read_table("concepts", ["concept_id", "depth"])
        at_depth = concepts.filter(pc.equal(concepts["depth"], cfg.depth)).select(["concept_id"])
        ancestors = ws.read_table("concept_ancestors", ["concept_id", "ancestor_id"])
        mapping = ancestors.join(at_depth.rename_columns(["ancestor_id"]), "ancestor_id", join_type="inner")
        tags = tags.join(mapping, "concept_id", join_type="left outer")
        mapped = pc.coalesce(tags["ancestor_id"], tags["concept_id"])
        tags = pa.table({"sample_id": tags["sample_id"], "concept_id": mapped})
    # A sample's tags are consecutive rows (tagging writes them sample by sample): join each run of
    # one sample_id once (chunk by chunk, no copy of the 30M ids), then give its tags the run's row.
    run_ids, run_lengths = [], []
    for chunk in tags["sample_id"].chunks:
        if len(chunk) == 0:
            continue
        starts = np.flatnonzero(np.r_[True, ~_same_as_previous(chunk)])
        run_ids.append(chunk.take(pa.array(starts)))
        run_lengths.append(np.diff(np.r_[starts, len(chunk)]))
    if not run_ids:
        return sampling.ConceptSets.from_pairs(
            np.zeros(0, np.int64), pa.array([], pa.int64()), len(index.keys)
        )
    run_rows = align(index, pa.concat_arrays(run_ids))
    rows = np.repeat(run_rows, np.concatenate(run_lengths))
    known = rows >= 0
    values = tags["concept_id"].combine_chunks().filter(pa.array(known))
    return sampling.ConceptSets.from_pairs(rows[known], values, len(index.keys))


def column_values(pool: pa.Table, name: str) -> np.ndarray:
    """A pool column as float64 with NaN for nulls (bools as 0/1)."""
    column = pool[name]
    if name in BOOL_COLUMNS:
        column = pc.cast(column, pa.int8())
    return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


# --- filters -------------------------------------------------------------------------------------


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
            passed = sampling.range_mask(values, low, f.max, f.missing)
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


# --- captions --------------------------------------------------------------------------------------


def _split_format(template: str, placeholder: str) -> tuple[str, str]:
    """A one-placeholder str.format template as (prefix, suffix) literal strings."""
    marker = "\x00"
    text = template.format(**{placeholder: marker})
    prefix, _, suffix = text.partition(marker)
    return prefix, suffix


def _wrap(values: pa.Array, template: str, placeholder: str) -> pa.Array:
    prefix, suffix = _split_format(template, placeholder)
    return pc.binary_join_element_wise(prefix, values, suffix, "")


def concept_names(ws: Workspace, concept_ids: np.ndarray) -> dict[int, str]:
    """Readable names of concepts (first lemma, underscores as spaces) for captions and summaries."""
    if len(concept_ids) == 0:
        return {}
    rows = _concept_query(
        ws,
        concept_ids,
        "SELECT c.concept_id, coalesce(c.lemmas[1], split_part(c.synset, '.', 1)) AS name "
        "FROM concepts c JOIN wanted USING (concept_id)",
    ).to_pylist()
    return {r["concept_id"]: r["name"].replace("_", " ") for r in rows}


def _concept_query(ws: Workspace, concept_ids: np.ndarray, sql: str) -> pa.Table:
    """Run ``sql`` over the catalog with the given concept ids as table ``wanted``."""
    con = connect_catalog(ws)
    try:
        con.register("wanted", pa.table({"concept_id": pa.array(concept_ids, pa.int64())}))
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def build_captions(
    rows: pa.Table, recipe: Recipe, forms: np.ndarray, names_joined: Callable[[], pa.Array]
) -> tuple[pa.Array, pa.Array]:
    """(caption, caption_form) per row; a form without material (no OCR text, no concept) falls
    back to the original caption. Only the forms the recipe uses are built (``names_joined``
    is called only when a form needs concept names)."""
    cfg = recipe.caption
    original = rows["caption"].combine_chunks()
    used = [(i, form) for i, (form, p) in enumerate(cfg.forms) if p > 0 and form != "original"]
    code = np.zeros(rows.num_rows, dtype=np.int64)  # index into CAPTION_FORMS; 0 = original
    caption = original
    if used:
        ocr_part = names_part = None
        has_ocr = has_names = None
        if any(form in ("ocr", "enhanced") for _, form in used):
            text = rows["ocr_text"].combine_chunks() if "ocr_text" in rows.column_names else None
            if text is None:
                text = pa.nulls(rows.num_rows, pa.string())
            text = pc.utf8_slice_codeunits(
                pc.utf8_trim_whitespace(pc.replace_substring(text, "\n", " / ")), 0, cfg.max_ocr_chars
            )
            has_ocr = pc.fill_null(pc.greater(pc.utf8_length(text), 0), False)
            ocr_part = pc.if_else(has_ocr, _wrap(pc.fill_null(text, ""), cfg.ocr_format, "text"), "")
        if any(form in ("tags", "enhanced") for _, form in used):
            names = names_joined()
            has_names = pc.greater(pc.utf8_length(names), 0)
            names_part = pc.if_else(has_names, _wrap(names, cfg.concepts_format, "names"), "")
        everywhere = pa.array(np.ones(rows.num_rows, dtype=bool))
        for i, form in used:
            if form == "ocr":
                text, usable = pc.binary_join_element_wise(original, ocr_part, ""), has_ocr
            elif form == "tags":
                text, usable = _wrap(names, cfg.tags_format, "names"), has_names
            else:  # enhanced: caption + OCR text + concept names, each part only when there is one
                parts = [p for p in (ocr_part, names_part) if p is not None]
                text, usable = pc.binary_join_element_wise(original, *parts, ""), everywhere
            chosen = (forms == i) & np.asarray(usable.to_numpy(zero_copy_only=False), dtype=bool)
            code[chosen] = CAPTION_FORMS.index(form)
            caption = pc.if_else(pa.array(chosen), text, caption)
    form_names = pa.array(CAPTION_FORMS, pa.string()).take(pa.array(code))
    return caption, form_names


# --- the build -------------------------------------------------------------------------------------


def _summary(values: np.ndarray) -> dict:
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
    pairs = _concept_query(
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


def balance_factors(
    ws: Workspace, recipe: Recipe, sets: sampling.ConceptSets, base: np.ndarray
) -> np.ndarray:
    """Per-sample balancing factor (weight mode) or keep probability (sample mode)."""
    b = recipe.balance
    if b.method == "metaclip":
        return sampling.metaclip_keep_prob(sets, b.threshold, b.untagged)
    if b.method == "hierarchical":
        child, ancestor, _ = _ancestor_pairs(ws, sets.concept_ids)
        return sampling.hierarchical_keep_prob(sets, (child, ancestor), b.threshold, b.alpha, b.untagged)
    if b.method == "uniform":
        weights = sampling.uniform_concept_weights(
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
    u = sampling.keyed_uniform(pool["sample_id"].take(pa.array(t_rows)), seed, "image_to_image")
    order = np.lexsort((u, t_group))
    t_rows, t_group = t_rows[order], t_group[order]
    starts = np.searchsorted(t_group, t_group, side="left")
    rank = np.arange(len(t_group)) - starts
    keep = rank < recipe.image_to_image.max_per_community
    return source_of_group[t_group[keep]], t_rows[keep]


def feedback_config(recipe: Recipe) -> FeedbackConfig:
    """The recipe's [feedback] step as engine.feedback's config."""
    f = recipe.feedback
    return FeedbackConfig(step_size=f.step_size, smoothing=f.smoothing, cap=f.cap, min_samples=f.min_samples)


@dataclass
class ManifestInputs:
    """Everything a manifest's identity hashes, read once (cheap: Parquet footers, feedback reports
    and boost files; no table is scanned)."""

    manifest_id: str
    identity: dict  # what make_manifest_id hashes
    inputs: dict[str, dict]  # input_fingerprints
    feedback: FeedbackState | None  # None when the recipe disables feedback
    boosts: pa.Table  # read_boosts: sample_id, factor
    boosts_fingerprint: str


def gather_inputs(ws: Workspace, recipe: Recipe, seed: int = 0, size: int | None = None) -> ManifestInputs:
    """The identity of the manifest ``build_manifest(ws, recipe, seed, size)`` would write, with the
    feedback state and boosts it reads; raises ManifestError for a size below 1."""
    if size is not None and size < 1:
        raise ManifestError("size must be a positive number of draws")
    feedback = stage_feedback(ws, recipe.stage, feedback_config(recipe)) if recipe.feedback.enabled else None
    boosts, boosts_fingerprint = read_boosts(ws, recipe.stage)
    inputs = input_fingerprints(ws)
    identity = {
        "engine": engine_version(),
        "inputs": {name: info["sha256"] for name, info in inputs.items()},
        "recipe": recipe.to_dict(),
        "seed": seed,
        "size": size,
        "feedback": feedback.fingerprint if feedback else "",
        "boosts": boosts_fingerprint,
    }
    return ManifestInputs(make_manifest_id(identity), identity, inputs, feedback, boosts, boosts_fingerprint)


def manifest_identity(
    ws: Workspace, recipe: Recipe, seed: int = 0, size: int | None = None
) -> tuple[str, dict]:
    """(manifest_id, identity) of a build without building it: what a service answers at once."""
    found = gather_inputs(ws, recipe, seed, size)
    return found.manifest_id, found.identity


def manifest_rel(stage: str, manifest_id: str) -> str:
    """The workspace path of a manifest without suffix (``.parquet`` and ``.json`` follow)."""
    return f"{MANIFESTS}/{stage}/{manifest_id}"


def build_manifest(
    ws: Workspace, recipe: Recipe, seed: int = 0, size: int | None = None, force: bool = False
) -> ManifestResult:
    """Build (or find) the manifest of ``recipe`` over the workspace; see the module docstring."""
    found = gather_inputs(ws, recipe, seed, size)
    manifest_id, identity, inputs = found.manifest_id, found.identity, found.inputs
    feedback, boosts, boosts_fingerprint = found.feedback, found.boosts, found.boosts_fingerprint
    rel = manifest_rel(recipe.stage, manifest_id)
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
        factors[passed_filters] = sampling.rank_tilt(
            column_values(pool, t.column)[passed_filters], t.strength
        )
        tilt *= factors

    rows = np.flatnonzero(keep)
    sets = all_sets.subset(keep)
    marginal_before = sampling.concept_marginal(sets, np.ones(len(rows)))
    weight = tilt[rows].copy()
    factor = balance_factors(ws, recipe, sets, weight)
    balance_dropped = 0
    if recipe.balance.method in ("metaclip", "hierarchical") and recipe.balance.mode == "sample":
        u = sampling.keyed_uniform(pool["sample_id"].take(pa.array(rows)), seed, "balance")
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
    bucket = sampling.nearest_bucket(width, height, bucket_sizes, recipe.buckets.max_upscale)

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
    form_index = sampling.choose_form(
        sampling.keyed_uniform(table["sample_id"], seed, "caption"), probabilities
    )
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
    manifest = pa.table(columns, schema=MANIFEST_COLUMNS)
    for name in recipe.columns():  # the scores the recipe used
        manifest = manifest.append_column(name, table[name])

    draws_info = None
    if size is not None:
        epoch_size = max(1, math.ceil(recipe.draws.epoch_fraction * manifest.num_rows))
        draw_rows, epochs = sampling.weighted_draws(
            all_weight, size, epoch_size, recipe.draws.repeat_cap, seed
        )
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

    marginal_after = sampling.concept_marginal(sets.subset(positive), weight)
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
        "weights": _summary(all_weight),
        "concept_marginal": {
            "before": sampling.marginal_summary(sets.concept_ids, marginal_before, names=summary_names),
            "after": sampling.marginal_summary(sets.concept_ids, marginal_after, names=summary_names),
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


# --- finding, showing and comparing manifests ---------------------------------------------------


def list_manifests(ws: Workspace, stage: str | None = None) -> list[dict]:
    """Every complete manifest (sidecar present): id, stage, rows, seed, path; sorted by stage, id."""
    result = []
    stages = [stage] if stage else [d for d in _subdirs(ws, MANIFESTS)]
    for s in sorted(stages):
        for name in ws.list_files(f"{MANIFESTS}/{s}", ".json"):
            manifest_id = name[:-5]
            if not ws.exists(MANIFESTS, s, f"{manifest_id}.parquet"):
                continue
            sidecar = json.loads(ws.read_text(f"{MANIFESTS}/{s}/{name}"))
            result.append(
                {
                    "manifest_id": manifest_id,
                    "stage": s,
                    "rows": sidecar["counts"]["rows"],
                    "seed": sidecar["seed"],
                    "size": sidecar["size"],
                    "path": ws.path(MANIFESTS, s, f"{manifest_id}.parquet"),
                }
            )
    return result


def _subdirs(ws: Workspace, rel: str) -> list[str]:
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(ws.path(rel), allow_not_found=True)
    return sorted(i.base_name for i in ws.fs.get_file_info(selector) if i.type == pafs.FileType.Directory)


def find_manifest(ws: Workspace, manifest_id: str) -> tuple[str, dict]:
    """(Parquet path, sidecar) of a manifest id (or a unique prefix of one)."""
    matches = [m for m in list_manifests(ws) if m["manifest_id"].startswith(manifest_id)]
    if not manifest_id or not matches:
        raise ManifestError(f"no manifest {manifest_id!r} in {ws.path(MANIFESTS)}")
    if len(matches) > 1:
        raise ManifestError(
            f"manifest id {manifest_id!r} is ambiguous: {', '.join(m['manifest_id'] for m in matches)}"
        )
    m = matches[0]
    return m["path"], json.loads(ws.read_text(f"{MANIFESTS}/{m['stage']}/{m['manifest_id']}.json"))


def read_manifest_table(ws: Workspace, manifest_id: str) -> pa.Table:
    path, _ = find_manifest(ws, manifest_id)
    return pq.read_table(path, filesystem=ws.fs)


def _flatten(data, prefix: str = "") -> dict[str, object]:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def diff_manifests(ws: Workspace, a: str, b: str, top: int = 10) -> dict:
    """What changed from manifest a to b: rows added/removed, weight changes, concept shares, recipe keys."""
    path_a, side_a = find_manifest(ws, a)
    path_b, side_b = find_manifest(ws, b)
    cols = ["sample_id", "weight", "kind", "source_sample_id"]
    ta = pq.read_table(path_a, columns=cols, filesystem=ws.fs)
    tb = pq.read_table(path_b, columns=cols, filesystem=ws.fs)

    def weights(t: pa.Table) -> dict[tuple, float]:
        keys = zip(t["sample_id"].to_pylist(), t["source_sample_id"].to_pylist(), strict=True)
        out: dict[tuple, float] = {}
        for key, w in zip(keys, t["weight"].to_pylist(), strict=True):
            out[key] = out.get(key, 0.0) + w  # draws of an expanded manifest add up
        return out

    wa, wb = weights(ta), weights(tb)
    sa, sb = sum(wa.values()), sum(wb.values())
    common = wa.keys() & wb.keys()
    ratios = np.array([(wb[k] / sb) / (wa[k] / sa) for k in common]) if common else np.zeros(0)
    recipe_a, recipe_b = _flatten(side_a["recipe"]), _flatten(side_b["recipe"])
    recipe_changes = [
        {"key": k, "a": recipe_a.get(k), "b": recipe_b.get(k)}
        for k in sorted(recipe_a.keys() | recipe_b.keys())
        if recipe_a.get(k) != recipe_b.get(k)
    ]
    shares_a = {c["concept_id"]: c for c in side_a["concept_marginal"]["after"]["top"]}
    shares_b = {c["concept_id"]: c for c in side_b["concept_marginal"]["after"]["top"]}
    return {
        "a": side_a["manifest_id"],
        "b": side_b["manifest_id"],
        "rows": {
            "a": len(wa),
            "b": len(wb),
            "only_a": len(wa.keys() - wb.keys()),
            "only_b": len(wb.keys() - wa.keys()),
            "common": len(common),
        },
        "share_ratio_b_over_a": _summary(ratios),
        "concept_marginal": {
            side: {
                k: side_x["concept_marginal"]["after"][k]
                for k in ("concepts", "entropy", "normalized_entropy", "gini")
            }
            for side, side_x in (("a", side_a), ("b", side_b))
        },
        "top_concepts": {"a": list(shares_a.values())[:top], "b": list(shares_b.values())[:top]},
        "recipe_changes": recipe_changes,
        "seed": {"a": side_a["seed"], "b": side_b["seed"]},
        "feedback_changed": side_a.get("feedback_fingerprint") != side_b.get("feedback_fingerprint"),
    }
