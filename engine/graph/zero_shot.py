"""CLIP zero-shot tags: each image's nearest concept texts, above a threshold calibrated on the data.

The label set is the concepts the text tags use; the threshold is the lowest cosine at which the
candidates are confirmed by the sample's own text tags often enough (``engine.graph.concept_index``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.compute as pc

from engine import schema
from engine.graph.concept_index import calibrate_threshold, unseen_precision
from engine.graph.matching import SOURCE_CLIP, tags_table
from engine.graph.mining import shard_texts
from engine.vectors.embedder_split import normalised_caption

if TYPE_CHECKING:  # tagging imports this module: its config is only an annotation here
    from engine.graph.tagging import TagConfig


def load_clip_embedder(ws, embedder_spec: str | None) -> tuple[object | None, str]:
    """The embedder of the workspace's active model (``engine.embedding_models``), or None and why
    zero-shot is off. ``embedder_spec`` overrides the recorded spec (same weights, another path)."""
    from engine.embedding_models import active_model

    active = active_model(ws)
    if active is None or not ws.list_shards("embeddings"):
        return None, "no embeddings table (run 'zcurate embed' first)"
    spec = embedder_spec or active.spec or "default"  # not recorded (an adopted workspace): try the default
    try:
        from engine.vectors.model_specs import load_embedder
    except ImportError as e:  # torch/open_clip come with the [all] extra
        return None, f"the embedder cannot be imported: {e}"
    try:
        embedder = load_embedder(spec)
    except Exception as e:  # a bad spec or missing weights: tag without CLIP, say why
        return None, f"embedder {spec}: {e}"
    if active.model_id != embedder.model_id:
        return None, f"embeddings were made by {active.model_id}, the embedder is {embedder.model_id}"
    return embedder, ""


def clip_tags(ws, graph, shards, vocabulary, embedder, config: TagConfig, summary, shard_map) -> None:
    """Zero-shot ``clip`` tags for every sample with an image vector (``engine.graph.concept_index``),
    added to the text tags; rewrites each tags shard whose rows changed (every shard's old clip
    tags go when ``embedder`` is None).

    A shard's candidates are kept (``engine.graph.tag_state``) and searched again only when the
    model, the label set or its vectors changed (one ``search_shard`` per shard, run by ``shard_map``:
    ``engine.graph.tagging.ShardMap``); the threshold is calibrated over all of them."""
    from engine.graph.concept_graph import ancestor_distances

    candidates = (
        search_shards(ws, shards, vocabulary, graph, embedder, config, summary, shard_map) if embedder else {}
    )
    ancestors = ancestor_distances(graph) if candidates else {}
    all_scores, all_confirmed, all_halves = [], [], []
    for shard_id, shard_candidates in candidates.items():
        text_tags: dict[str, set[int]] = {}
        for row in text_rows(ws, shard_id):
            text_tags.setdefault(row["sample_id"], set()).add(row["concept_id"])
        known = {s: set().union(*(ancestors.get(c, {c: 0}) for c in cs)) for s, cs in text_tags.items()}
        sample_ids, captions, _ = shard_texts(ws, shard_id)
        half_of = dict(zip(sample_ids, map(caption_half, captions), strict=True))
        for sample_id, c, score in shard_candidates:
            mine, up = text_tags.get(sample_id, set()), known.get(sample_id, set())
            all_scores.append(score)
            all_halves.append(half_of.get(sample_id, 0))
            all_confirmed.append(c in up or not mine.isdisjoint(ancestors.get(c, {})))
    scores, confirmed = np.array(all_scores), np.array(all_confirmed, bool)
    threshold, precision, recall = calibrate_threshold(scores, confirmed, config.clip_min_precision)
    if embedder is not None:
        summary.clip_threshold, summary.clip_precision, summary.clip_recall = threshold, precision, recall
        summary.clip_candidates = len(scores)
        summary.clip_base_precision = float(confirmed.mean()) if len(confirmed) else None
        unseen = unseen_precision(scores, confirmed, np.array(all_halves), config.clip_min_precision)
        summary.clip_precision_unseen, summary.clip_unseen_kept = unseen or (None, 0)
    for shard_id in shards:
        current = ws.read_shard("tags", shard_id)
        rows = [
            {"sample_id": s, "concept_id": c, "source": SOURCE_CLIP, "score": score, "hits": 1, "span": None}
            for s, c, score in candidates.get(shard_id, [])
            if score >= threshold
        ]
        tags = tags_table([r for r in current.to_pylist() if r["source"] != SOURCE_CLIP] + rows, schema.TAGS)
        if not tags.equals(current):
            ws.write_shard("tags", shard_id, tags)
        if rows:
            summary.tags += len(rows)
            summary.by_source[SOURCE_CLIP] = summary.by_source.get(SOURCE_CLIP, 0) + len(rows)


def caption_half(caption: str | None) -> int:
    """0 or 1, fixed by the normalised caption: the halves that cross-check the threshold. By
    caption, not by sample, so a caption repeated on many images (a scrape's stock title) is in one
    half only and the other half's precision is measured on captions the threshold never saw."""
    text = normalised_caption(caption or "")
    return int(hashlib.sha256(text.encode()).digest()[0] & 1)


def text_rows(ws, shard_id: str) -> list[dict]:
    """A shard's caption and OCR tags (its clip tags left out)."""
    table = ws.read_shard("tags", shard_id).select(["sample_id", "concept_id", "source"])
    return [r for r in table.to_pylist() if r["source"] != SOURCE_CLIP]


def search_shards(
    ws, shards, vocabulary, graph, embedder, config: TagConfig, summary, shard_map
) -> dict[str, list]:
    """shard -> its zero-shot candidates (sample, concept, cosine): the ``clip_top_k`` nearest
    labels of each image vector, kept or searched (``search_shard``, run by ``shard_map``)."""
    from engine.graph import tag_state
    from engine.graph.concept_index import build_concept_index

    index = build_concept_index(graph, vocabulary, embedder, ws)
    labels = tag_state.digest([embedder.model_id, config.clip_top_k, index.concept_ids.tolist()])
    shared = {"ws": ws, "index": index, "labels": labels, "top_k": config.clip_top_k}
    out = {}
    results = shard_map(search_shard, shared, shards, "tag: clip", False)
    for shard_id, (kept, searched) in zip(shards, results, strict=True):
        summary.shards_searched += searched
        if kept:
            out[shard_id] = kept
    return out


def search_shard(shared: dict, shard_id: str) -> tuple[list, bool]:
    """(a shard's zero-shot candidates, whether they were searched now: False when kept)."""
    from engine.graph import tag_state
    from engine.vectors.embedder import vectors

    ws = shared["ws"]
    if not ws.has_shard("embeddings", shard_id):
        return [], False
    key = f"{shared['labels']};{tag_state.input_stamp(ws, ('embeddings',), shard_id)}"
    kept = tag_state.read_candidates(ws, shard_id, key)
    if kept is not None:
        return kept, False
    table = ws.read_shard("embeddings", shard_id).select(["sample_id", "image_vec"])
    table = table.filter(pc.is_valid(table["image_vec"]))
    kept = []
    if table.num_rows:
        scores, ids = shared["index"].search(vectors(table["image_vec"]), shared["top_k"])
        for i, sample_id in enumerate(table["sample_id"].to_pylist()):
            pairs = zip(scores[i].tolist(), ids[i].tolist(), strict=True)
            kept += [(sample_id, c, s) for s, c in pairs if c >= 0]
    tag_state.write_candidates(ws, shard_id, kept, key)
    return kept, True
