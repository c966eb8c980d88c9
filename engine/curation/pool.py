"""The pool a manifest is built from: every usable sample with the columns its recipe reads.

Owns the pool's column vocabulary: the catalog's ``signals`` view (``engine.schema.signals_view``),
the samples' ``source_kind``, the near-duplicate community (``dedup``) and three columns derived
from the others (:data:`DERIVED`). The ones a recipe may filter or tilt on are
:data:`FILTER_COLUMNS`, by kind: :data:`NUMERIC_COLUMNS`, :data:`BOOL_COLUMNS`, :data:`TEXT_COLUMNS`.

``load_pool`` reads each table once (only the columns needed) and joins them on sample_id by a
binary search over 64-bit id prefixes (``align``); ``pool_concepts`` turns the ``tags`` of the
recipe's sources into :class:`~engine.curation.concept_sets.ConceptSets`. Writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine import schema
from engine.curation.concept_sets import ConceptSets
from engine.curation.sampling import id_keys
from engine.workspace import Workspace

if TYPE_CHECKING:  # recipe.py checks its columns against this module's vocabulary
    from engine.curation.recipe import Recipe

# Where each pool column comes from: a table keyed by sample_id (columns of the catalog's
# ``signals`` view, DESIGN.md section 3), or derived from other pool columns.
POOL_SOURCES: dict[str, str] = {name: "signals" for name in schema.SIGNALS.names[2:]}
POOL_SOURCES |= {name: table for table, names in schema.SIGNAL_COLUMNS.items() for name in names}
POOL_SOURCES |= {"community_id": "dedup", "is_representative": "dedup", "source_kind": "samples"}

# Columns load_pool computes from the others, with the types it gives them.
DERIVED = pa.schema(
    [
        ("min_side", pa.int32()),  # min(width, height): the side a bucket upscales most
        ("pixels", pa.int64()),  # width * height (int64: 50k x 50k overflows int32)
        ("has_ocr_text", pa.bool_()),  # ocr_text is not "": the OCR found text
    ]
)


def _comparable(field: pa.Field) -> bool:
    """A column a filter compares with a number, a bool or a string: not a list, not the pHash
    (a 64-bit hash: its order means nothing), not an id."""
    return field.name not in ("sample_id", "image_id", "phash") and not pa.types.is_list(field.type)


# Every pool column a recipe may filter or tilt on, with its Arrow type.
FILTER_COLUMNS = pa.schema(
    [f for f in schema.signals_view() if _comparable(f)]
    + list(DERIVED)
    + [schema.SAMPLES.field("source_kind")]
)
NUMERIC_COLUMNS = tuple(
    f.name for f in FILTER_COLUMNS if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
)
BOOL_COLUMNS = tuple(f.name for f in FILTER_COLUMNS if pa.types.is_boolean(f.type))
TEXT_COLUMNS = tuple(f.name for f in FILTER_COLUMNS if pa.types.is_string(f.type))


def needs_ocr_text(recipe: Recipe) -> bool:
    """Whether the recipe's captions use the OCR text (the ocr or enhanced form)."""
    return any(form in ("ocr", "enhanced") and p > 0 for form, p in recipe.caption.forms)


@dataclass
class PoolIndex:
    """The pool's sample ids with a sorted index of their 64-bit keys (``id_keys``)."""

    ids: pa.Array
    keys: np.ndarray  # uint64 per pool row
    order: np.ndarray  # argsort of keys
    sorted_keys: np.ndarray

    @classmethod
    def build(cls, ids: pa.Array) -> PoolIndex:
        keys = id_keys(ids)
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
    keys = id_keys(ids)
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


def load_pool(ws: Workspace, recipe: Recipe) -> tuple[pa.Table, ConceptSets, dict]:
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
        if name not in DERIVED.names and POOL_SOURCES[name] != "samples":
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


def stopped_concepts(ws: Workspace, cfg) -> list[int]:
    """Concept ids the recipe's ``[concepts]`` leaves out: marked as noise by tagging (unless
    ``noise = "keep"`` or listed in ``keep``) and listed in ``stop``. A listed synset the workspace's
    graph lacks is a RecipeError naming it."""
    from engine.curation.recipe import RecipeError

    if not ws.list_shards("concepts"):
        return []
    table = ws.read_shard("concepts", schema.GRAPH_SHARD)  # a workspace tagged before has no noise column
    concepts = table.select(
        [n for n in ("concept_id", "synset", "noise") if n in table.column_names]
    ).to_pylist()
    by_synset = {c["synset"]: c["concept_id"] for c in concepts}
    for key in ("keep", "stop"):
        unknown = [s for s in getattr(cfg, key) if s not in by_synset]
        if unknown:
            raise RecipeError(f"concepts.{key}: unknown concept {unknown[0]!r} (see 'zcurate graph show')")
    keep = set(cfg.keep)
    stopped = {by_synset[s] for s in cfg.stop}
    if cfg.noise == "stop":
        stopped |= {c["concept_id"] for c in concepts if c.get("noise") and c["synset"] not in keep}
    return sorted(stopped)


def pool_concepts(ws: Workspace, recipe: Recipe, index: PoolIndex) -> ConceptSets:
    """The pool's concepts: tags of the recipe's sources with score >= min_score, but the stopped
    concepts (``stopped_concepts``), optionally mapped to their ancestors at ``concepts.depth``
    (a shallower concept stays itself)."""
    cfg = recipe.concepts
    chosen = pc.field("score") >= cfg.min_score
    if set(cfg.sources) != set(schema.TAG_SOURCES):
        chosen &= pc.field("source").isin(list(cfg.sources))
    stopped = stopped_concepts(ws, cfg)
    if stopped:
        chosen &= ~pc.field("concept_id").isin(stopped)
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
        return ConceptSets.from_pairs(np.zeros(0, np.int64), pa.array([], pa.int64()), len(index.keys))
    run_rows = align(index, pa.concat_arrays(run_ids))
    rows = np.repeat(run_rows, np.concatenate(run_lengths))
    known = rows >= 0
    values = tags["concept_id"].combine_chunks().filter(pa.array(known))
    return ConceptSets.from_pairs(rows[known], values, len(index.keys))


def column_values(pool: pa.Table, name: str) -> np.ndarray:
    """A pool column as float64 with NaN for nulls (bools as 0/1)."""
    column = pool[name]
    if name in BOOL_COLUMNS:
        column = pc.cast(column, pa.int8())
    return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
