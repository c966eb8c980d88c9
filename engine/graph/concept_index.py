"""Concept text embeddings in their own FAISS index: CLIP zero-shot tagging and attaching mined terms.

A concept's text is its first lemma with spaces ("rainbow lorikeet"): the embedded default
embedder was trained on openclipart titles and keywords, which are bare names, so a prompt such
as "a photo of a ..." would only move the text away from what the model saw. Vectors are cached
per workspace (``WS/_cache/concept_vectors/<model digest>.parquet``, text -> vector), so each
concept is encoded once per model; the index is an exact inner-product ``faiss.IndexFlatIP``
over L2-normalised vectors, so scores are cosines.

Zero-shot tagging (``zero_shot_candidates`` then ``calibrate_threshold``): each image's top-k
concepts by cosine are candidates; a candidate counts as confirmed when the sample's caption or
OCR tags contain it, an ancestor of it or a descendant of it. The threshold is the lowest score
at which the candidates above it are confirmed at least ``TagConfig.clip_min_precision`` of the
time, so it is calibrated on the workspace's own data and reported with its precision and
recall; candidates at or above it become ``clip`` tags (confirmed or not: the point is to add
what captions left out).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

TEXT_BATCH = 256  # texts per encoder call: large enough to amortise the call, small in memory


def concept_text(attrs: dict) -> str:
    """The text a concept is embedded as: its first lemma, underscores as spaces."""
    return attrs["lemmas"][0].replace("_", " ")


def _cache_path(ws, model_id: str) -> str:
    digest = hashlib.blake2b(model_id.encode(), digest_size=8).hexdigest()
    return f"{ws.cache}/concept_vectors/{digest}.parquet"


def encode_concept_texts(ws, texts: list[str], embedder) -> np.ndarray:
    """(n, d) unit vectors for ``texts``, reusing and extending the workspace's cache."""
    import pyarrow.parquet as pq

    cached: dict[str, np.ndarray] = {}
    path = _cache_path(ws, embedder.model_id)
    if ws is not None and ws.exists(path):
        table = pq.read_table(ws.path(path), filesystem=ws.fs)
        vecs = table["vec"].combine_chunks().flatten().to_numpy(zero_copy_only=False)
        vecs = vecs.astype(np.float32).reshape(table.num_rows, -1)
        cached = dict(zip(table["text"].to_pylist(), vecs, strict=True))
    missing = sorted({t for t in texts if t not in cached})
    for start in range(0, len(missing), TEXT_BATCH):
        batch = missing[start : start + TEXT_BATCH]
        cached.update(zip(batch, embedder.encode_texts(batch), strict=True))
    if missing and ws is not None:
        names = sorted(cached)
        matrix = np.stack([cached[t] for t in names]).astype(np.float32)
        vec_type = pa.list_(pa.float32(), matrix.shape[1])
        column = pa.FixedSizeListArray.from_arrays(pa.array(matrix.ravel()), type=vec_type)
        ws.write_parquet(path, pa.table({"text": names, "vec": column}))
    if not texts:
        return np.zeros((0, embedder.embed_dim), dtype=np.float32)
    return np.stack([cached[t] for t in texts]).astype(np.float32)


@dataclass
class ConceptIndex:
    """Concept text vectors in a FAISS inner-product index."""

    concept_ids: np.ndarray  # (n,) int64, row i of the index
    index: object  # faiss.IndexFlatIP
    model_id: str

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, concept ids) of the k nearest concepts per row; id -1 where there are fewer."""
        k = min(k, len(self.concept_ids))
        if k == 0 or len(vectors) == 0:
            return np.zeros((len(vectors), 0), np.float32), np.zeros((len(vectors), 0), np.int64)
        scores, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        ids = np.where(rows >= 0, self.concept_ids[np.maximum(rows, 0)], -1)
        return scores, ids

    def __getstate__(self) -> dict:
        """Pickled as the index's bytes (a FAISS object does not pickle): Ray sends it to actors."""
        import faiss

        return {
            "concept_ids": self.concept_ids,
            "index": faiss.serialize_index(self.index),
            "model_id": self.model_id,
        }

    def __setstate__(self, state: dict) -> None:
        import faiss

        self.concept_ids, self.model_id = state["concept_ids"], state["model_id"]
        self.index = faiss.deserialize_index(state["index"])


def build_concept_index(graph, concept_ids, embedder, ws=None) -> ConceptIndex:
    """Embed the given concepts' texts (cached in ``ws`` when given) into a FAISS index."""
    import faiss

    ids = np.array(sorted(concept_ids), dtype=np.int64)
    vectors = encode_concept_texts(ws, [concept_text(graph.nodes[c]) for c in ids], embedder)
    index = faiss.IndexFlatIP(embedder.embed_dim)
    if len(ids):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return ConceptIndex(concept_ids=ids, index=index, model_id=embedder.model_id)


def calibrate_threshold(
    scores: np.ndarray, confirmed: np.ndarray, min_precision: float
) -> tuple[float, float, float]:
    """(threshold, precision, recall): the lowest score t at which the candidates scoring >= t
    are confirmed at least ``min_precision`` of the time (so as many tags as that precision
    allows). No such t, or nothing confirmed: (inf, 0, 0), i.e. no clip tags.

    The precision is measured against text tags, which miss things the image shows, so it is a
    lower bound of the real one.
    """
    total = int(confirmed.sum())
    if total == 0 or len(scores) == 0:
        return float("inf"), 0.0, 0.0
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    hits = np.cumsum(confirmed[order])
    precision = hits / np.arange(1, len(scores) + 1)
    # only cut where the score changes, so every candidate at the threshold is in
    last_of_value = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    ok = np.flatnonzero(last_of_value & (precision >= min_precision))
    if len(ok) == 0:
        return float("inf"), 0.0, 0.0
    best = int(ok[-1])
    return float(sorted_scores[best]), float(precision[best]), float(hits[best] / total)


def unseen_precision(
    scores: np.ndarray, confirmed: np.ndarray, halves: np.ndarray, min_precision: float
) -> tuple[float, int] | None:
    """(precision, kept) of a threshold on samples it was not calibrated on: calibrate on each half
    (``halves`` is 0 or 1 per candidate), measure on the other, average the two precisions;
    ``kept`` counts the candidates both measurements kept (how much the figure rests on). None when
    a half gives no threshold or keeps nothing of the other half."""
    measured, kept_total = [], 0
    for half in (0, 1):
        mine, other = halves == half, halves != half
        threshold, _, _ = calibrate_threshold(scores[mine], confirmed[mine], min_precision)
        kept = other & (scores >= threshold)
        if not np.isfinite(threshold) or not kept.any():
            return None
        measured.append(float(confirmed[kept].mean()))
        kept_total += int(kept.sum())
    return float(np.mean(measured)), kept_total
