"""Concepts mined from captions: words WordNet lacks, counted, and attached under a graph concept.

A caption word that WordNet does not know in any part of speech (``new_terms``: "clipart",
"emoji") becomes a concept once ``TagConfig.min_mined_samples`` samples use it. It is attached
under the WordNet concept whose text embedding is nearest its own, among the concepts it
co-occurs with (``attach_by_embedding``, when the workspace has embeddings from the embedder), or
else under the concept it co-occurs with most (``attach_by_cooccurrence``).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np
import pyarrow.parquet as pq

from engine.graph.concept_graph import DATA_DIR
from engine.graph.matching import ConceptMatcher

if TYPE_CHECKING:  # tagging imports this module: its config is only an annotation here
    from engine.graph.tagging import TagConfig

# Inflection endings stripped to find a word in WordNet's lexicon ("sailing" -> sail, "festive").
_ENDINGS = (("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"), ("es", ""), ("s", ""), ("ly", ""), ("er", ""))


@functools.lru_cache(maxsize=2)
def load_lexicon(data_dir: str = DATA_DIR) -> frozenset[str]:
    """Every one-word WordNet lemma of any part of speech (nouns included, pruned or not)."""
    words = set(pq.read_table(f"{data_dir}/wordnet_words.parquet")["word"].to_pylist())
    words.update(w for w in pq.read_table(f"{data_dir}/wordnet_lemmas.parquet")["lemma"].to_pylist())
    return frozenset(words)


def is_known_word(word: str, lexicon: frozenset[str]) -> bool:
    """Whether WordNet knows ``word`` in any part of speech, allowing for regular endings."""
    if word in lexicon:
        return True
    return any(
        word.endswith(ending) and word[: -len(ending)] + replacement in lexicon
        for ending, replacement in _ENDINGS
    )


def new_terms(matcher: ConceptMatcher, text: str, lexicon: frozenset[str]) -> set[str]:
    """Caption words that are tag candidates WordNet lacks entirely ("clipart", "emoji")."""
    return {t for t in matcher.unmatched_terms(text) if not is_known_word(t, lexicon)}


def fold_plural_terms(counts: dict[str, int]) -> dict[str, str]:
    """term -> the term it counts as: "cliparts" -> "clipart" when both were seen."""
    return {t: (t[:-1] if t.endswith("s") and t[:-1] in counts else t) for t in counts}


def shard_texts(ws, shard_id: str) -> tuple[list[str], list[str], dict[str, str]]:
    """Usable samples' ids and captions of a shard, and their OCR text when an ``ocr`` shard exists."""
    from engine import schema

    samples = ws.read_shard("samples", shard_id).select(["sample_id", "caption", "status"]).to_pylist()
    ok = [s for s in samples if s["status"] == schema.STATUS_OK]
    ocr: dict[str, str] = {}
    if ws.has_shard("ocr", shard_id):
        table = ws.read_shard("ocr", shard_id)
        if "ocr_text" in table.column_names:
            ocr = {
                r["sample_id"]: r["ocr_text"]
                for r in table.select(["sample_id", "ocr_text"]).to_pylist()
                if r["ocr_text"]
            }
    return [s["sample_id"] for s in ok], [s["caption"] for s in ok], ocr


def term_counts(signatures: Iterable[tuple[tuple[str, ...], tuple[int, ...], int]]) -> dict[str, int]:
    """Caption word WordNet lacks -> captions using it, from the shards' text summaries
    (``engine.graph.tag_state``: (new words, concepts, captions) per distinct caption kind)."""
    counts: dict[str, int] = {}
    for words, _, n in signatures:
        for word in words:
            counts[word] = counts.get(word, 0) + n
    return counts


def cooccurrence(
    signatures: Iterable[tuple[tuple[str, ...], tuple[int, ...], int]],
    terms: dict[str, int],
    fold: dict[str, str],
) -> dict[str, dict[int, int]]:
    """term -> {concept: captions where both appear}, from the shards' text summaries (the
    concepts are the base matcher's, before any mined term is added)."""
    together: dict[str, dict[int, int]] = {t: {} for t in terms}
    for words, concepts, n in signatures:
        present = {fold.get(t, t) for t in words} & together.keys()
        for term in present:
            counter = together[term]
            for c in concepts:
                counter[c] = counter.get(c, 0) + n
    return together


def attach_by_cooccurrence(
    terms: dict[str, int], together: dict[str, dict[int, int]], config: TagConfig
) -> list[tuple[str, int, float]]:
    """(term, parent, share): the concept in the most of the term's samples, if common enough."""
    attached = []
    for term in sorted(terms):
        if together[term]:
            parent, n = min(together[term].items(), key=lambda kv: (-kv[1], kv[0]))
            share = n / terms[term]
            if share >= config.min_attach_share:
                attached.append((term, parent, share))
    return attached


def attach_by_embedding(
    ws,
    graph: nx.DiGraph,
    terms: dict[str, int],
    together: dict[str, dict[int, int]],
    embedder,
    config: TagConfig,
) -> list[tuple[str, int, float]]:
    """(term, parent, cosine): the WordNet concept whose text embedding is nearest the term's,
    among the concepts in at least ``min_attach_share`` of its samples and their ancestors down
    to ``min_attach_depth`` (a CPU can embed those, not all 43k concepts, for every run)."""
    from engine.graph.concept_graph import ancestor_distances
    from engine.graph.concept_index import build_concept_index

    candidates: dict[str, set[int]] = {}
    for term in sorted(terms):
        common = [c for c, n in together[term].items() if n / terms[term] >= config.min_attach_share]
        up = ancestor_distances(graph, common) if common else {}
        candidates[term] = {
            a
            for c in common
            for a in up[c]
            if (graph.nodes[a].get("depth") or 0) >= config.min_attach_depth
            and graph.nodes[a].get("source") != "caption"
        }
    pool = sorted(set().union(*candidates.values())) if candidates else []
    if not pool:
        return []
    index = build_concept_index(graph, pool, embedder, ws)
    row_of = {c: i for i, c in enumerate(index.concept_ids.tolist())}
    concept_vecs = index.index.reconstruct_n(0, len(pool))
    names = sorted(t for t in terms if candidates[t])
    term_vecs = embedder.encode_texts(names)
    attached = []
    for term, vec in zip(names, term_vecs, strict=True):
        options = sorted(candidates[term])
        sims = concept_vecs[[row_of[c] for c in options]] @ vec
        best = int(np.argmax(sims))  # first of equals: the smallest concept id
        attached.append((term, options[best], float(sims[best])))
    return attached
