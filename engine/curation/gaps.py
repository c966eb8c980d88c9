"""Filling gaps: pool samples outside a manifest that fit a concept or a failure description.

The paper's Active Curation loop: the trainer's feedback (``engine.curation.feedback``) or a
user names what the model gets wrong ("lorikeets", "hands holding a cup"); cross-modal retrieval
over the workspace's image index finds images that fit, the concept graph adds the samples tagged
with the concept or anything below it, and the user boosts the good ones
(``engine.curation.feedback.write_boost``) into the next manifest. Writes nothing.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import schema
from engine.workspace import Workspace

QUERY_TEMPLATE = "a picture of a {}"  # a concept's retrieval query: CLIP-style prompt of its first lemma
WIDEN = 4  # the search grows k this many times over while the manifest swallows the hits
RESULT = pa.schema(
    [
        ("sample_id", pa.string()),
        ("uri", pa.string()),
        ("caption", pa.string()),
        ("similarity", pa.float32()),  # query . image vector (both unit length): the index's cosine
        ("tagged", pa.bool_()),  # tagged with the concept or a concept below it
        ("rank", pa.int32()),  # 1 = most similar
    ]
)


def _as_ids(values) -> pa.Array:
    """A set, list or Arrow array of sample ids as one Arrow string array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    if isinstance(values, pa.Array):
        return values.cast(pa.string())
    return pa.array(list(values), pa.string())


def _usable(con, ids: pa.Array, exclude: pa.Array) -> pa.Table:
    """(sample_id, uri, caption) of the ids that are not excluded and whose sample is status ok."""
    # Look the few candidates up in the (maybe millions of) excluded ids, not the other way round:
    # the hash set is built over the value set, so it is built over the candidates.
    excluded = exclude.filter(pc.is_in(exclude, value_set=ids))
    ids = ids.filter(pc.invert(pc.is_in(ids, value_set=excluded)))
    con.register("gap_ids", pa.table({"sample_id": ids}))
    try:
        return con.sql(
            "SELECT DISTINCT s.sample_id, s.uri, s.caption FROM samples s "
            f"JOIN gap_ids USING (sample_id) WHERE s.status = '{schema.STATUS_OK}'"
        ).to_arrow_table()
    finally:
        con.unregister("gap_ids")


def _image_vectors(ws: Workspace, ids: pa.Array) -> tuple[list[str], np.ndarray]:
    """(sample_ids, float32 image vectors) of the given samples from the embeddings table.

    Reads each shard's sample_id column and the vectors only of shards that hold a wanted id, so
    a handful of candidates costs one id scan, not a read of every vector.
    """
    from engine.vectors.index import EMBEDDINGS, vectors_from_column

    found, parts = [], []
    for path in ws.shard_files(EMBEDDINGS):
        shard_ids = pq.read_table(path, columns=["sample_id"], filesystem=ws.fs)["sample_id"]
        mask = pc.is_in(shard_ids, value_set=ids)
        if not pc.any(mask).as_py():
            continue
        rows = pq.read_table(path, columns=["sample_id", "image_vec"], filesystem=ws.fs).filter(mask)
        valid, vectors = vectors_from_column(rows["image_vec"])
        found += [s for s, ok in zip(rows["sample_id"].to_pylist(), valid, strict=True) if ok]
        if len(vectors):
            parts.append(vectors)
    return found, (np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))


def _retrieve(con, vindex, query: np.ndarray, exclude: pa.Array, k: int) -> pa.Table:
    """The ``k`` nearest usable images outside ``exclude``: search k' = 2k nearest, and while too
    few are left after the exclusion, search again with WIDEN times more, up to the whole index."""
    total = int(vindex.index.ntotal)
    wanted = min(total, 2 * k)
    while wanted > 0:
        _, faiss_ids = vindex.search(query, wanted)
        hits = [str(vindex.ids[j]) for j in faiss_ids[0] if j >= 0]
        usable = _usable(con, pa.array(hits, pa.string()), exclude)
        if usable.num_rows >= k or wanted >= total:
            order = {sample_id: i for i, sample_id in enumerate(hits)}  # FAISS order picks the k
            best = sorted(usable["sample_id"].to_pylist(), key=order.__getitem__)[:k]
            return usable.filter(pc.is_in(usable["sample_id"], value_set=pa.array(best, pa.string())))
        wanted = min(total, wanted * WIDEN)
    return pa.schema([RESULT.field(name) for name in ("sample_id", "uri", "caption")]).empty_table()


def _similarities(ws: Workspace, ids: list[str], query: np.ndarray) -> np.ndarray:
    """float32 query . image vector per id; NaN where the sample has no image vector."""
    found, vectors = _image_vectors(ws, pa.array(ids, pa.string()))
    sims = dict(zip(found, (vectors @ query).tolist() if len(found) else [], strict=True))
    return np.array([sims.get(s, np.nan) for s in ids], dtype=np.float32)


def gap_candidates(
    ws: Workspace,
    exclude: set[str] | pa.Array,
    concept: str | int | None = None,
    text: str | None = None,
    k: int = 50,
    embedder=None,
) -> pa.Table:
    """Usable pool samples outside ``exclude`` (a manifest's sample_ids) that fit a concept or a text.

    The query is ``text`` when given, else made from the concept's first lemma as
    ``"a picture of a <lemma>"`` (underscores as spaces: "a picture of a lorikeet"). It is embedded
    with ``embedder`` (default: the embedded default model, which must be the index's model) and
    searched against the workspace's image index (cross-modal text->image retrieval), widening the
    search until ``k`` samples outside ``exclude`` are found or the index is exhausted. With a
    concept, the samples tagged with it or any concept below it
    (``engine.graph.concept_queries.subtree_samples``) that are outside ``exclude`` are added too:
    the ``k`` most similar of those not retrieved, so at most 2k rows. Only status-ok samples are
    returned.

    Returns:
        Columns sample_id, uri, caption, similarity (query . image vector in float32, from the
        embeddings table for every row; null without an image vector), tagged (in the concept's
        subtree), rank; ordered by similarity (descending, nulls last), then sample_id.

    Raises:
        ValueError: neither concept nor text, k < 1, no image index, an index of another model,
            or a concept the workspace's graph lacks.
    """
    from engine.catalog import connect_catalog
    from engine.graph.concept_queries import resolve_concept, subtree_samples
    from engine.vectors.index import load_index, read_meta
    from engine.vectors.model_specs import load_embedder

    if concept is None and not (text or "").strip():
        raise ValueError("give a concept or a text describing the gap")
    if k < 1:
        raise ValueError(f"k must be positive, got {k}")
    meta = read_meta(ws, "image")
    if meta is None:
        raise ValueError(f"no image index in {ws.root}: run 'zcurate index --workspace {ws.root}' first")
    exclude = _as_ids(exclude)
    con = connect_catalog(ws)
    try:
        subtree = pa.array([], pa.string())
        if concept is not None:
            concept_id = resolve_concept(con, concept)
            lemmas = con.sql("SELECT lemmas FROM concepts WHERE concept_id = ?", params=[concept_id])
            lemma = lemmas.fetchall()[0][0][0].replace("_", " ")
            subtree = _as_ids(subtree_samples(ws, concept_id, limit=None)["sample_id"])
        query_text = text if (text or "").strip() else QUERY_TEMPLATE.format(lemma)
        embedder = embedder or load_embedder(None)
        if embedder.model_id != meta["model_id"]:
            raise ValueError(
                f"the index holds {meta['model_id']} vectors but the query model is {embedder.model_id}"
            )
        query = np.asarray(embedder.encode_texts([query_text])[0], np.float32)
        found = _retrieve(con, load_index(ws, "image"), query, exclude, k)
        tagged = _usable(con, subtree, exclude) if len(subtree) else found.schema.empty_table()
    finally:
        con.close()
    # One candidate table: the retrieved samples, then the tagged ones not retrieved.
    extra = tagged.filter(pc.invert(pc.is_in(tagged["sample_id"], value_set=_as_ids(found["sample_id"]))))
    rows = pa.concat_tables([found, extra.select(found.column_names)])
    sims = _similarities(ws, rows["sample_id"].to_pylist(), query)
    rows = rows.append_column("similarity", pa.array(sims, pa.float32(), from_pandas=True))  # NaN -> null
    rows = rows.append_column("tagged", pc.is_in(rows["sample_id"], value_set=subtree))
    order = [("similarity", "descending"), ("sample_id", "ascending")]
    best_tagged = rows.slice(found.num_rows).sort_by(order).slice(0, k)["sample_id"]
    keep = pc.or_(
        pc.is_in(rows["sample_id"], value_set=_as_ids(found["sample_id"])),
        pc.is_in(rows["sample_id"], value_set=_as_ids(best_tagged)),
    )
    rows = rows.filter(keep).sort_by(order)
    rows = rows.append_column("rank", pa.array(np.arange(1, rows.num_rows + 1), pa.int32()))
    return rows.cast(RESULT)
