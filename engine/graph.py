"""The World Knowledge Topological Graph (paper section 2.3): concepts, hierarchy, pruning, queries.

The base is WordNet 3.0's noun hierarchy, converted once by ``scripts/build_wordnet_graph.py``
into ``engine/data/wordnet_*.parquet`` (WordNet's licence: ``engine/data/WORDNET_LICENSE``).
``load_graph`` reads it into a networkx DiGraph whose edges point from parent to child, with a
``kind`` of ``is_a``, ``instance_of`` or ``part_of``. Rollups and ancestors follow ``is_a`` and
``instance_of`` only: a wheel is part of a car, but a picture of a wheel is not a picture of a car.

Pruning (``prune_graph``) keeps a concept when both hold:

1. **visual**: it descends (by is_a/instance_of) from one of ``GraphConfig.visual_roots``:
   ``physical_entity.n.01`` (objects, living things, substances, natural phenomena) plus the few
   abstract branches that are seen in images: shapes, visual properties (colours), signals and
   symbols (letters, logos, icons), visual communication (gestures, smiles), happenings (fire,
   waves), signs. Everything else under ``abstraction.n.06`` (cognition, acts, relations,
   quantities, time) is out: "a wonderful idea" names nothing one can draw.
2. **salient**: its PageRank over the undirected graph, relative to the uniform 1/N, is at least
   ``min_pagerank``, or SemCor tagged it at least once (WordNet's sense counts), or the dataset
   tagged it. Once a dataset is tagged, the PageRank's teleport vector and edge weights grow with
   the observed counts (an edge's weight is 1 + the samples its child's subtree holds, i.e. how
   often parent and child co-occur in rolled-up tags), so what the data shows pulls its
   neighbourhood up, as the paper's co-occurrence-weighted PageRank does.

A kept concept's ancestors are kept too, so every kept concept still rolls up to ``entity.n.01``.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field

import networkx as nx
import pyarrow as pa
import pyarrow.parquet as pq

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")
TAXONOMY_KINDS = ("is_a", "instance_of")  # the edges rollups and ancestors follow
ROOT_SYNSET = "entity.n.01"
# Ids of concepts mined from captions: above every WordNet offset (< 10^8), from a hash of the
# term, so the same term gets the same id in every workspace and every run.
MINED_ID_BASE = 1 << 40


@dataclass(frozen=True)
class GraphConfig:
    """How the base graph is pruned. Defaults keep ~44k of WordNet's 82k noun synsets (README)."""

    # Roots of the visual filter; see the module docstring for why each is in.
    visual_roots: tuple[str, ...] = (
        "physical_entity.n.01",
        "shape.n.02",
        "visual_property.n.01",
        "signal.n.01",
        "visual_communication.n.01",
        "happening.n.01",
        "sign.n.02",
    )
    pagerank_alpha: float = 0.85  # the usual damping factor (Brin and Page)
    # Relative PageRank (N * score; 1.0 = uniform) below which a concept neither SemCor nor the
    # data ever saw is dropped. Leaves score 0.26-1.1 (5th-90th percentile measured): 0.25 drops
    # the few hundred leaves of the most crowded sibling sets (rare archaic armour, minor regions).
    min_pagerank: float = 0.25
    # The same for named entities (instance_of nodes), as the paper prunes Wikipedia entities by
    # PageRank: their median is 0.40 (measured), so 0.5 keeps the better-connected ~third of the
    # unseen ones (the Eiffel Tower 0.77) and drops obscure places and people that mostly cause
    # false matches ("sierra", "gaul").
    min_pagerank_instance: float = 0.5
    # Teleport mass per observed sample (tags) and per SemCor count: observed concepts and their
    # neighbourhoods rise in rank.
    count_weight: float = 1.0
    include_part_of: bool = True  # part_of edges take part in PageRank (not in rollups)


@dataclass
class PruneResult:
    """What ``prune_graph`` decided, per concept."""

    kept: set[int]  # concept ids kept
    visual: set[int]  # concept ids that passed the visual filter
    pagerank: dict[int, float] = field(default_factory=dict)  # relative PageRank (1.0 = uniform)


# --- loading -------------------------------------------------------------------------------------


def load_wordnet_tables(data_dir: str = DATA_DIR) -> tuple[pa.Table, pa.Table]:
    """The committed WordNet concept and edge tables (see ``engine.wordnet``)."""
    concepts = pq.read_table(os.path.join(data_dir, "wordnet_concepts.parquet"))
    edges = pq.read_table(os.path.join(data_dir, "wordnet_edges.parquet"))
    return concepts, edges


def load_morph_exceptions(data_dir: str = DATA_DIR) -> dict[str, list[str]]:
    """WordNet's irregular noun forms (``noun.exc``): inflected form -> base forms."""
    table = pq.read_table(os.path.join(data_dir, "wordnet_morph.parquet"))
    exceptions: dict[str, list[str]] = {}
    for form, base in zip(table["form"].to_pylist(), table["base"].to_pylist(), strict=True):
        exceptions.setdefault(form, []).append(base)
    return exceptions


def build_graph(concepts: pa.Table, edges: pa.Table) -> nx.DiGraph:
    """A DiGraph (parent -> child) with the concept columns as node attributes."""
    graph = nx.DiGraph()
    columns = [c for c in concepts.column_names if c != "concept_id"]
    values = [concepts[c].to_pylist() for c in columns]
    for i, concept_id in enumerate(concepts["concept_id"].to_pylist()):
        graph.add_node(concept_id, **{c: v[i] for c, v in zip(columns, values, strict=True)})
    for parent, child, kind in zip(
        edges["parent_id"].to_pylist(), edges["child_id"].to_pylist(), edges["kind"].to_pylist(), strict=True
    ):
        graph.add_edge(parent, child, kind=kind)
    graph.graph["by_synset"] = {graph.nodes[n]["synset"]: n for n in graph.nodes}
    return graph


@functools.lru_cache(maxsize=2)
def _cached_base_graph(data_dir: str) -> nx.DiGraph:
    return build_graph(*load_wordnet_tables(data_dir))


def load_graph(data_dir: str = DATA_DIR) -> nx.DiGraph:
    """The base WordNet graph (a fresh copy; the parsed tables are cached per process)."""
    graph = _cached_base_graph(data_dir).copy()
    graph.graph["by_synset"] = dict(graph.graph["by_synset"])  # copy() shares graph attributes
    return graph


def concept_id_of(graph: nx.DiGraph, synset: str) -> int:
    """The id of a synset name such as ``lorikeet.n.01``; KeyError with the name when unknown."""
    try:
        return graph.graph["by_synset"][synset]
    except KeyError:
        raise KeyError(f"unknown concept {synset!r}") from None


def taxonomy_parents(graph: nx.DiGraph, node: int) -> list[int]:
    """The is_a / instance_of parents of a node."""
    return [p for p, _, kind in graph.in_edges(node, data="kind") if kind in TAXONOMY_KINDS]


def taxonomy_children(graph: nx.DiGraph, node: int) -> list[int]:
    return [c for _, c, kind in graph.out_edges(node, data="kind") if kind in TAXONOMY_KINDS]


# --- pruning -------------------------------------------------------------------------------------


def visual_concepts(graph: nx.DiGraph, config: GraphConfig) -> set[int]:
    """Concepts that descend from one of the visual roots (roots included)."""
    stack = [concept_id_of(graph, s) for s in config.visual_roots]
    seen = set(stack)
    while stack:
        for child in taxonomy_children(graph, stack.pop()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


def pagerank_scores(
    graph: nx.DiGraph, config: GraphConfig, counts: dict[int, int] | None = None
) -> dict[int, float]:
    """PageRank over the undirected graph, times N (so 1.0 is the uniform score).

    ``counts``: samples per concept, rolled up (from a tagged dataset); they weight the edges
    (co-occurrence of parent and child) and, with SemCor's counts, the teleport vector.
    """
    counts = counts or {}
    undirected = nx.Graph()
    undirected.add_nodes_from(graph.nodes)
    for parent, child, kind in graph.edges(data="kind"):
        if kind in TAXONOMY_KINDS or (config.include_part_of and kind == "part_of"):
            undirected.add_edge(parent, child, weight=1.0 + config.count_weight * counts.get(child, 0))
    teleport = {
        n: 1.0 + config.count_weight * (counts.get(n, 0) + (graph.nodes[n].get("freq") or 0))
        for n in graph.nodes
    }
    scores = nx.pagerank(undirected, alpha=config.pagerank_alpha, personalization=teleport, weight="weight")
    n = graph.number_of_nodes()
    return {node: score * n for node, score in scores.items()}


def prune_graph(graph: nx.DiGraph, config: GraphConfig, counts: dict[int, int] | None = None) -> PruneResult:
    """Decide which concepts to keep (module docstring); ``counts`` are rolled-up sample counts."""
    counts = counts or {}
    visual = visual_concepts(graph, config)
    ranks = pagerank_scores(graph, config, counts)
    kept = set()
    for n in visual:
        is_instance = any(kind == "instance_of" for _, _, kind in graph.in_edges(n, data="kind"))
        threshold = config.min_pagerank_instance if is_instance else config.min_pagerank
        if ranks[n] >= threshold or (graph.nodes[n].get("freq") or 0) > 0 or counts.get(n, 0) > 0:
            kept.add(n)
    stack = list(kept)
    while stack:  # close upwards: every ancestor of a kept concept is kept
        for parent in taxonomy_parents(graph, stack.pop()):
            if parent not in kept:
                kept.add(parent)
                stack.append(parent)
    return PruneResult(kept=kept, visual=visual, pagerank=ranks)


# --- ancestors and rollups -----------------------------------------------------------------------


def ancestor_distances(graph: nx.DiGraph, nodes: Iterable[int] | None = None) -> dict[int, dict[int, int]]:
    """node -> {ancestor: fewest is_a/instance_of steps}, the node itself at distance 0."""
    taxonomy = nx.DiGraph(
        (p, c) for p, c, kind in graph.edges(data="kind") if kind in TAXONOMY_KINDS
    )
    taxonomy.add_nodes_from(graph.nodes)
    ancestors: dict[int, dict[int, int]] = {}
    for node in nx.topological_sort(taxonomy):  # parents before children
        own = {node: 0}
        for parent in taxonomy.predecessors(node):
            for ancestor, distance in ancestors[parent].items():
                if own.get(ancestor, 1 << 30) > distance + 1:
                    own[ancestor] = distance + 1
        ancestors[node] = own
    if nodes is not None:
        wanted = set(nodes)
        ancestors = {n: a for n, a in ancestors.items() if n in wanted}
    return ancestors


def rollup_counts(direct: dict[int, set[str]], ancestors: dict[int, dict[int, int]]) -> dict[int, int]:
    """Distinct samples per concept counting every descendant's samples (lorikeet -> parrot)."""
    samples_of: dict[int, set[str]] = {}
    for concept, samples in direct.items():
        for ancestor in ancestors.get(concept, {concept: 0}):
            samples_of.setdefault(ancestor, set()).update(samples)
    return {c: len(s) for c, s in samples_of.items()}


# --- concepts mined from captions ----------------------------------------------------------------


def mined_concept_id(term: str) -> int:
    """A stable id for a term mined from captions (above every WordNet id)."""
    digest = hashlib.blake2b(term.encode("utf-8"), digest_size=5).digest()
    return MINED_ID_BASE + int.from_bytes(digest, "big")


def add_mined_concept(graph: nx.DiGraph, term: str, parent: int, score: float, method: str) -> int:
    """Attach a caption term that WordNet lacks under ``parent``; returns its concept id."""
    concept_id = mined_concept_id(term)
    parent_attrs = graph.nodes[parent]
    graph.add_node(
        concept_id,
        synset=f"{term.replace(' ', '_')}.x.01",  # .x.: not a WordNet synset
        lemmas=[term.replace(" ", "_")],
        gloss=f"mined from captions; attached under {parent_attrs['synset']} by {method} "
        f"(score {score:.3f})",
        depth=(parent_attrs.get("depth") or 0) + 1,
        lexname=parent_attrs.get("lexname"),
        freq=0,
        source="caption",
    )
    graph.add_edge(parent, concept_id, kind="is_a")
    graph.graph["by_synset"][graph.nodes[concept_id]["synset"]] = concept_id
    return concept_id
