"""Tagging a workspace: every usable sample's caption, OCR text and image, with graph concepts.

``tag_workspace`` runs the passes in order (``engine.graph.mining`` for new concepts,
``engine.graph.matching`` for text tags, ``engine.graph.zero_shot`` for CLIP tags) and writes the
``tags`` table and the workspace's concept tables (``engine.graph.concept_graph``). The two passes
over the captions and the zero-shot search are maps over shards (``summarise_shard``,
``tag_shard``, ``engine.graph.zero_shot.search_shard``) with small reduces between them, so they
run in this process or on a Ray cluster's actors (``ShardMap``) with the same result.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from engine import schema
from engine.graph import tag_state
from engine.graph.concept_graph import (
    DATA_DIR,
    GraphConfig,
    add_mined_concept,
    load_graph,
    prune_graph,
    write_workspace_graph,
)
from engine.graph.matching import (
    SOURCE_CAPTION,
    SOURCE_CLIP,
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
    shard_texts,
    term_counts,
)
from engine.graph.noise import detect_noise
from engine.graph.zero_shot import clip_tags, load_clip_embedder

# How the per-shard passes run: shard_map(fn, shared, items, desc, show) returns [fn(shared, item)
# for item in items], in item order. ``local_map`` loops in this process; on a Ray cluster
# ``pipelines.tag_job.ray_shard_map`` runs them on actors that receive ``shared`` (the matcher) once.
ShardMap = Callable[[Callable, dict, list, str, bool], list]


def local_map(fn: Callable, shared: dict, items: list, desc: str, show: bool) -> list:
    """The shard map of one process (``ShardMap``)."""
    return [fn(shared, item) for item in tqdm(items, desc=desc, unit="shard", disable=not show)]


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
    # the same precision on captions the threshold was not calibrated on (halves by caption, crossed)
    clip_precision_unseen: float | None = None
    clip_unseen_kept: int = 0  # the candidates that unseen precision was measured on (both halves)
    clip_candidates: int = 0  # zero-shot candidates (clip_top_k per image) the threshold chose from
    clip_base_precision: float | None = None  # share of them the text confirms: no threshold's precision
    concepts: int = 0  # concepts in the workspace graph
    noise: list[str] = field(default_factory=list)  # concepts marked as corpus noise (engine.graph.noise)
    shards_read: int = 0  # shards whose captions were read for mining (the rest: kept summaries)
    shards_tagged: int = 0  # shards whose text tags were written (the rest were still right)
    shards_searched: int = 0  # shards whose images were searched for zero-shot candidates
    seconds: float = 0.0


def tag_workspace(
    ws,
    graph_config: GraphConfig | None = None,
    config: TagConfig | None = None,
    progress: bool | None = None,
    shard_map: ShardMap = local_map,
) -> TagSummary:
    """Tag every usable sample's caption (and OCR text) with concepts; write ``tags`` and the graph.

    Passes over the captions, so the result depends only on the data and the configs:
    ``summarise_shards`` reads each shard's captions once (caption words WordNet lacks, with the
    concepts beside them); ``mine_terms`` counts those words and ``attach_terms`` attaches the
    frequent ones to the graph (by text-embedding similarity when the workspace has embeddings
    from ``config.embedder``, else by co-occurrence); ``tag_shards`` tags every shard with the
    grown graph. With embeddings, images then get CLIP zero-shot tags over the concepts the text
    tags use (``engine.graph.zero_shot``). Last, ``engine.graph.concept_graph.write_workspace_graph``
    writes the workspace's concept tables, pruned again with PageRank weighted by the observed counts.

    On a workspace tagged before, each pass redoes only the shards whose result can differ
    (``engine.graph.tag_state``): a grown workspace is summarised and tagged for its new shards,
    and old ones only where a newly mined term appears or the zero-shot labels changed.
    ``shard_map`` runs the per-shard passes (``ShardMap``; default: in this process).
    """
    started = time.perf_counter()
    graph_config = graph_config or GraphConfig()
    config = config or TagConfig()
    graph = load_graph()
    matcher = build_matcher(graph, set(prune_graph(graph, graph_config).kept))
    shards = ws.list_shards("samples")
    tag_state.forget_shards(ws, set(shards))
    show = sys.stderr.isatty() if progress is None else progress
    summary = TagSummary()
    settings = tag_state.digest([tag_state.VERSION, asdict(graph_config), _data_stamp()])
    summaries = summarise_shards(ws, shards, matcher, settings, summary, show, shard_map)
    signatures = [s for text_summary in summaries.values() for s in text_summary.signatures]
    terms, fold = mine_terms(signatures, config)
    embedder, summary.clip_skipped = load_clip_embedder(ws, config.embedder) if config.clip else (None, "off")
    attached = (
        attach_terms(ws, graph, matcher, signatures, terms, fold, embedder, config, summary) if terms else []
    )
    mined = tag_state.matcher_terms(attached, fold)
    matcher_hash = tag_state.digest([settings, mined])
    tag_state.save_matcher(ws, matcher_hash, mined)
    grown = (matcher_hash, mined, settings)
    vocabulary = tag_shards(ws, shards, matcher, summaries, grown, summary, show, shard_map)
    clip_tags(ws, graph, shards, vocabulary, embedder, config, summary, shard_map)
    noise = detect_noise(ws, graph, shards, embedder)
    summary.noise = sorted(graph.nodes[c]["synset"] for c in noise)
    summary.concepts = write_workspace_graph(ws, graph, graph_config, noise)
    summary.seconds = time.perf_counter() - started
    return summary


def _data_stamp() -> list:
    """Size and mtime of the base graph's data files: a new graph release remakes every summary."""
    return sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in Path(DATA_DIR).glob("*.parquet"))


def summarise_shards(
    ws,
    shards: list[str],
    matcher: ConceptMatcher,
    settings: str,
    summary: TagSummary,
    show: bool,
    shard_map: ShardMap = local_map,
) -> dict[str, tag_state.TextSummary]:
    """Every shard's text summary: the kept one while its samples and OCR files are unchanged, else
    read from the shard (with ``matcher`` the base matcher) and kept."""
    shared = {"ws": ws, "matcher": matcher, "settings": settings}
    results = shard_map(summarise_shard, shared, shards, "tag: mine", show)
    summary.shards_read += sum(made for _, made in results)
    return {shard_id: text_summary for shard_id, (text_summary, _) in zip(shards, results, strict=True)}


def summarise_shard(shared: dict, shard_id: str) -> tuple[tag_state.TextSummary, bool]:
    """One shard's text summary and whether it was made now (False: the kept one was still right)."""
    ws = shared["ws"]
    key = f"{shared['settings']};{tag_state.input_stamp(ws, ('samples', 'ocr'), shard_id)}"
    kept = tag_state.read_text_summary(ws, shard_id, key)
    if kept is not None:
        return kept, False
    _, captions, ocr = shard_texts(ws, shard_id)
    kept = tag_state.summarise_texts(shared["matcher"], captions, ocr.values(), load_lexicon())
    tag_state.write_text_summary(ws, shard_id, kept, key)
    return kept, True


def mine_terms(signatures: list, config: TagConfig) -> tuple[dict[str, int], dict[str, str]]:
    """(the caption words WordNet lacks that enough samples use -> their sample counts, the plural
    spellings folded into each): the candidates for new concepts, most frequent first."""
    counts = term_counts(signatures)
    fold = fold_plural_terms(counts)
    folded: dict[str, int] = {}
    for term, n in counts.items():
        folded[fold[term]] = folded.get(fold[term], 0) + n
    frequent = sorted(
        (t for t, n in folded.items() if n >= config.min_mined_samples), key=lambda t: (-folded[t], t)
    )
    return {t: folded[t] for t in frequent[: config.max_mined]}, fold


def attach_terms(
    ws, graph, matcher: ConceptMatcher, signatures, terms, fold, embedder, config: TagConfig, summary
) -> list[tuple[str, int, int, float]]:
    """Add the mined terms to the graph under their parents and teach the matcher their spellings;
    returns (term, concept id, parent, score) per term attached."""
    together = cooccurrence(signatures, terms, fold)
    if embedder is not None:
        summary.attach_method = "embedding"
        attached = attach_by_embedding(ws, graph, terms, together, embedder, config)
    else:
        summary.attach_method = "cooccurrence"
        attached = attach_by_cooccurrence(terms, together, config)
    added = []
    for term, parent, score in attached:
        concept_id = add_mined_concept(graph, term, parent, score, summary.attach_method)
        summary.mined.append(graph.nodes[concept_id]["synset"])
        matcher.add_term(term, concept_id)
        for variant, base in fold.items():  # the plural spellings seen ("cliparts")
            if base == term and variant != term:
                matcher.add_term(variant, concept_id)
        added.append((term, concept_id, parent, score))
    return added


def tag_shards(
    ws,
    shards: list[str],
    matcher: ConceptMatcher,
    summaries: dict,
    grown: tuple,
    summary: TagSummary,
    show: bool,
    shard_map: ShardMap = local_map,
) -> set[int]:
    """Write each shard's caption and OCR tags (where the grown matcher can tag it differently from
    the one its tags were written with); returns the concepts they use (the zero-shot labels).

    ``grown`` is (the grown matcher's hash, its mined terms, the settings of the summaries)."""
    shared = {"ws": ws, "matcher": matcher, "grown": grown}
    items = [(shard_id, summaries[shard_id]) for shard_id in shards]
    vocabulary: set[int] = set()
    for shard in shard_map(tag_shard, shared, items, "tag", show):
        vocabulary |= shard.vocabulary
        summary.shards_tagged += shard.written
        summary.samples += shard.samples
        summary.tagged_samples += shard.tagged_samples
        summary.tags += shard.tags
        for source, n in shard.by_source.items():
            summary.by_source[source] = summary.by_source.get(source, 0) + n
    return vocabulary


@dataclass
class ShardTags:
    """What ``tag_shard`` did to one shard (summed into the ``TagSummary``)."""

    vocabulary: set[int]  # the concepts its text tags use
    samples: int
    tagged_samples: int
    tags: int
    by_source: dict[str, int]
    written: bool  # its tags were written now (False: still right)


def tag_shard(shared: dict, item: tuple) -> ShardTags:
    """Tag one shard (``item``: its id and text summary) with the grown matcher, where needed."""
    ws, matcher = shared["ws"], shared["matcher"]
    matcher_hash, mined, settings = shared["grown"]
    shard_id, text_summary = item
    written = tag_state.needs_retag(ws, text_summary, matcher_hash, mined, ws.has_shard("tags", shard_id))
    if written:
        sample_ids, captions, ocr = shard_texts(ws, shard_id)
        rows = tag_texts(matcher, sample_ids, captions, SOURCE_CAPTION)
        ocr_ids = sorted(ocr)
        rows += tag_texts(matcher, ocr_ids, [ocr[s] for s in ocr_ids], SOURCE_OCR)
        ws.write_shard("tags", shard_id, tags_table(rows, schema.TAGS))
    else:
        rows = [r for r in ws.read_shard("tags", shard_id).to_pylist() if r["source"] != SOURCE_CLIP]
    if text_summary.matcher != matcher_hash:  # the shard's text tags now stand for this matcher
        text_summary.matcher = matcher_hash
        key = f"{settings};{tag_state.input_stamp(ws, ('samples', 'ocr'), shard_id)}"
        tag_state.write_text_summary(ws, shard_id, text_summary, key)
    return ShardTags(
        vocabulary={r["concept_id"] for r in rows},
        samples=text_summary.samples,
        tagged_samples=len({r["sample_id"] for r in rows}),
        tags=len(rows),
        by_source=dict(Counter(r["source"] for r in rows)),
        written=written,
    )


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
