"""Tagging a workspace: every usable sample's caption, OCR text and image, with graph concepts.

``tag_workspace`` runs the passes in order (``engine.graph.mining`` for new concepts,
``engine.graph.matching`` for text tags, ``engine.graph.zero_shot`` for CLIP tags) and writes the
``tags`` table and the workspace's concept tables (``engine.graph.concept_graph``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from engine import schema
from engine.graph.concept_graph import (
    GraphConfig,
    add_mined_concept,
    load_graph,
    prune_graph,
    write_workspace_graph,
)
from engine.graph.matching import (
    SOURCE_CAPTION,
    SOURCE_OCR,
    ConceptMatcher,
    build_matcher,
    tag_texts,
    tags_table,
)
from engine.graph.mining import (
    attach_by_cooccurrence,
    attach_by_embedding,
    cooccurrence,
    fold_plural_terms,
    load_lexicon,
    new_terms,
    shard_texts,
)
from engine.graph.zero_shot import clip_tags, load_clip_embedder


@dataclass(frozen=True)
class TagConfig:
    """How a workspace is tagged; see the module docstring and docs/engines/graph.md."""

    # A caption word WordNet lacks becomes a concept once this many samples use it: rarer words
    # are mostly typos and names (openclipart: 72 terms pass at 5, among them "clipart",
    # "filesystem", "roadsign", "stickmen").
    min_mined_samples: int = 5
    # Without an embedder a mined term is attached under the concept it co-occurs with most,
    # provided that concept is in at least this share of the term's samples; otherwise the term
    # is left out (no parent is better than a wrong one).
    min_attach_share: float = 0.3
    # Most mined terms a run adds (the most frequent first), so a noisy dataset cannot flood the graph.
    max_mined: int = 5000
    # Embedding attachment looks no higher than this depth: above it sit "whole", "object",
    # "artifact", which are near everything and say nothing.
    min_attach_depth: int = 4
    # CLIP zero-shot: candidates per image before the calibrated threshold (module docstring of
    # engine.graph.concept_index); 5 covers an object, its scene and a colour or two.
    clip_top_k: int = 5
    # The calibrated threshold is the lowest cosine whose candidates the text tags confirm at
    # least this often; 0.5 = at least every second clip tag agrees with the caption's own
    # concepts (a lower bound: captions leave things out).
    clip_min_precision: float = 0.5
    clip: bool = True  # run zero-shot tagging when the workspace has embeddings from this embedder
    embedder: str | None = None  # engine.vectors.model_specs.load_embedder spec (None: the embedded default)


@dataclass
class TagSummary:
    """What ``tag_workspace`` did."""

    samples: int = 0  # usable samples read
    tagged_samples: int = 0  # with at least one tag
    tags: int = 0  # rows written
    by_source: dict[str, int] = field(default_factory=dict)
    mined: list[str] = field(default_factory=list)  # new concepts, as synset names
    attach_method: str = ""  # embedding | cooccurrence
    clip_skipped: str = ""  # why zero-shot tagging did not run ("" when it ran)
    clip_threshold: float | None = None  # calibrated cosine threshold for clip tags
    clip_precision: float | None = None  # share of clip tags the text tags confirm (at the threshold)
    clip_recall: float | None = None  # share of confirmed candidates kept
    concepts: int = 0  # concepts in the workspace graph
    seconds: float = 0.0


def tag_workspace(
    ws,
    graph_config: GraphConfig | None = None,
    config: TagConfig | None = None,
    progress: bool | None = None,
) -> TagSummary:
    """Tag every usable sample's caption (and OCR text) with concepts; write ``tags`` and the graph.

    Passes over the captions, so the result depends only on the data and the configs:
    ``mine_terms`` counts caption words WordNet lacks; ``attach_terms`` attaches the frequent ones
    to the graph (by text-embedding similarity when the workspace has embeddings from
    ``config.embedder``, else by co-occurrence); ``tag_shards`` tags every shard with the grown
    graph. With embeddings, images then get CLIP zero-shot tags over the concepts the text tags use
    (``engine.graph.zero_shot``). Last, ``engine.graph.concept_graph.write_workspace_graph`` writes
    the workspace's concept tables, pruned again with PageRank weighted by the observed counts.
    """
    started = time.perf_counter()
    graph_config = graph_config or GraphConfig()
    config = config or TagConfig()
    graph = load_graph()
    matcher = build_matcher(graph, set(prune_graph(graph, graph_config).kept))
    shards = ws.list_shards("samples")
    show = sys.stderr.isatty() if progress is None else progress
    summary = TagSummary()
    terms, fold = mine_terms(ws, shards, matcher, config, show)
    embedder, summary.clip_skipped = load_clip_embedder(ws, config.embedder) if config.clip else (None, "off")
    if terms:
        attach_terms(ws, graph, matcher, shards, terms, fold, embedder, config, summary)
    vocabulary = tag_shards(ws, shards, matcher, summary, show)
    if embedder is not None:
        clip_tags(ws, graph, shards, vocabulary, embedder, config, summary)
    summary.concepts = write_workspace_graph(ws, graph, graph_config)
    summary.seconds = time.perf_counter() - started
    return summary


def mine_terms(
    ws, shards: list[str], matcher: ConceptMatcher, config: TagConfig, show: bool
) -> tuple[dict[str, int], dict[str, str]]:
    """(the caption words WordNet lacks that enough samples use -> their sample counts, the plural
    spellings folded into each): the candidates for new concepts, most frequent first."""
    lexicon = load_lexicon()
    counts: dict[str, int] = {}
    for shard_id in tqdm(shards, desc="tag: mine", unit="shard", disable=not show):
        _, captions, _ = shard_texts(ws, shard_id)
        for caption in captions:
            for term in new_terms(matcher, caption, lexicon):
                counts[term] = counts.get(term, 0) + 1
    fold = fold_plural_terms(counts)
    folded: dict[str, int] = {}
    for term, n in counts.items():
        folded[fold[term]] = folded.get(fold[term], 0) + n
    frequent = sorted(
        (t for t, n in folded.items() if n >= config.min_mined_samples), key=lambda t: (-folded[t], t)
    )
    return {t: folded[t] for t in frequent[: config.max_mined]}, fold


def attach_terms(
    ws, graph, matcher: ConceptMatcher, shards, terms, fold, embedder, config: TagConfig, summary
) -> None:
    """Add the mined terms to the graph under their parents and teach the matcher their spellings."""
    together = cooccurrence(ws, shards, matcher, terms, fold)
    if embedder is not None:
        summary.attach_method = "embedding"
        attached = attach_by_embedding(ws, graph, terms, together, embedder, config)
    else:
        summary.attach_method = "cooccurrence"
        attached = attach_by_cooccurrence(terms, together, config)
    for term, parent, score in attached:
        concept_id = add_mined_concept(graph, term, parent, score, summary.attach_method)
        summary.mined.append(graph.nodes[concept_id]["synset"])
        matcher.add_term(term, concept_id)
        for variant, base in fold.items():  # the plural spellings seen ("cliparts")
            if base == term and variant != term:
                matcher.add_term(variant, concept_id)


def tag_shards(ws, shards: list[str], matcher: ConceptMatcher, summary: TagSummary, show: bool) -> set[int]:
    """Write each shard's caption and OCR tags; returns the concepts they use (the zero-shot labels)."""
    vocabulary: set[int] = set()
    for shard_id in tqdm(shards, desc="tag", unit="shard", disable=not show):
        sample_ids, captions, ocr = shard_texts(ws, shard_id)
        rows = tag_texts(matcher, sample_ids, captions, SOURCE_CAPTION)
        ocr_ids = sorted(ocr)
        rows += tag_texts(matcher, ocr_ids, [ocr[s] for s in ocr_ids], SOURCE_OCR)
        ws.write_shard("tags", shard_id, tags_table(rows, schema.TAGS))
        vocabulary.update(r["concept_id"] for r in rows)
        summary.samples += len(sample_ids)
        summary.tagged_samples += len({r["sample_id"] for r in rows})
        summary.tags += len(rows)
        for r in rows:
            summary.by_source[r["source"]] = summary.by_source.get(r["source"], 0) + 1
    return vocabulary


def tags_up_to_date(ws) -> bool:
    """Whether ``tags`` and the graph are newer than every ``samples``, ``ocr`` and ``embeddings``
    shard (and the record of the active model), so a rerun of a finished curate job can skip tagging."""
    from engine import schema
    from engine.embedding_models import MODELS_FILE

    samples = ws.list_shards("samples")
    if not samples or set(ws.list_shards("tags")) != set(samples) or not ws.list_shards("concepts"):
        return False
    inputs = ws.shard_files("samples") + ws.shard_files("ocr") + ws.shard_files("embeddings")
    if ws.exists(MODELS_FILE):  # rewritten when the active model changes: zero-shot tags follow it
        inputs.append(ws.path(MODELS_FILE))
    infos = ws.fs.get_file_info([*inputs, ws.path("concepts", f"{schema.GRAPH_SHARD}.parquet")])
    return max(i.mtime for i in infos[:-1]) <= infos[-1].mtime
