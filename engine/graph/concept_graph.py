"""The World Knowledge Topological Graph (paper section 2.3): concepts, hierarchy, pruning.

The base is WordNet 3.0's noun hierarchy, converted once by ``scripts/build_wordnet_graph.py``
into ``engine/graph/data/wordnet_*.parquet`` (WordNet's licence: ``engine/graph/data/WORDNET_LICENSE``).
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
   tagged it. The teleport vector is 1 + the SemCor count; once a dataset is tagged, each edge's
   weight is 1 + the samples its child's subtree holds (how often parent and child co-occur in
   rolled-up tags), so what the data shows pulls its neighbourhood up, as the paper's
   co-occurrence-weighted PageRank does.

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
import pyarrow.compute as pc
import pyarrow.parquet as pq

DATA_DIR = os.path.join(os.path.dirname(__file__), "data")

TAXONOMY_KINDS = ("is_a", "instance_of")  # the edges rollups and ancestors follow

ROOT_SYNSET = "entity.n.01"

# Ids of concepts mined from captions: above every WordNet offset (< 10^8), from a hash of the
# term, so the same term gets the same id in every workspace and every run.
MINED_ID_BASE = 1 << 40


@dataclass(frozen=True)
class GraphConfig:
    """How the base graph is pruned. Defaults keep 43.1k of WordNet's 82.1k noun synsets
    (docs/engines/graph.md)."""

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
    # data ever saw is dropped. Unseen common-noun leaves score 0.23 / 0.24 / 0.32 (1st / 5th /
    # 50th percentile, measured), so 0.23 drops only the ~1% hanging in the most crowded sibling
    # sets: WordNet's common nouns are curated, and a higher cut starts losing plainly visual
    # things (ice-cream_cone.n.01 scores 0.249). The real cut falls on named entities (below).
    min_pagerank: float = 0.23
    # The same for named entities (instance_of nodes), as the paper prunes Wikipedia entities by
    # PageRank: unseen ones have a median of 0.36 (measured), so 0.5 keeps the best-connected
    # fifth (the Eiffel Tower 0.77) and drops obscure places and people that mostly cause false
    # matches ("sierra", "gaul").
    min_pagerank_instance: float = 0.5
    # Edge weight per observed sample (tags) and teleport mass per SemCor count: what the data
    # and SemCor see, and its neighbourhood, rise in rank.
    count_weight: float = 1.0
    include_part_of: bool = True  # part_of edges take part in PageRank (not in rollups)


@dataclass
class PruneResult:
    """What ``prune_graph`` decided, per concept."""

    kept: set[int]  # concept ids kept
    visual: set[int]  # concept ids that passed the visual filter
    pagerank: dict[int, float] = field(default_factory=dict)  # relative PageRank (1.0 = uniform)


def load_wordnet_tables(data_dir: str = DATA_DIR) -> tuple[pa.Table, pa.Table]:
    """The committed WordNet concept and edge tables (see ``engine.graph.wordnet``)."""
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
    rows = concepts.select(columns).to_pylist()
    graph.add_nodes_from(zip(concepts["concept_id"].to_pylist(), rows, strict=True))
    graph.add_edges_from(
        (parent, child, {"kind": kind})
        for parent, child, kind in zip(
            edges["parent_id"].to_pylist(),
            edges["child_id"].to_pylist(),
            edges["kind"].to_pylist(),
            strict=True,
        )
    )
    graph.graph["by_synset"] = {attrs["synset"]: n for n, attrs in graph.nodes(data=True)}
    return graph


@functools.lru_cache(maxsize=2)
def _cached_tables(data_dir: str) -> tuple[pa.Table, pa.Table]:
    return load_wordnet_tables(data_dir)


def load_graph(data_dir: str = DATA_DIR) -> nx.DiGraph:
    """The base WordNet graph, built fresh (callers may grow it); the tables are cached."""
    return build_graph(*_cached_tables(data_dir))


def concept_id_of(graph: nx.DiGraph, synset: str) -> int:
    """The id of a synset name such as ``lorikeet.n.01``; KeyError with the name when unknown."""
    try:
        return graph.graph["by_synset"][synset]
    except KeyError:
        raise KeyError(f"unknown concept {synset!r}") from None


def taxonomy_links(graph: nx.DiGraph) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """(parents, children) along is_a / instance_of edges, as plain dicts (fast to walk)."""
    parents: dict[int, list[int]] = {}
    children: dict[int, list[int]] = {}
    for parent, child, kind in graph.edges(data="kind"):
        if kind in TAXONOMY_KINDS:
            parents.setdefault(child, []).append(parent)
            children.setdefault(parent, []).append(child)
    return parents, children


def taxonomy_parents(graph: nx.DiGraph, node: int) -> list[int]:
    """The is_a / instance_of parents of a node."""
    return [p for p, _, kind in graph.in_edges(node, data="kind") if kind in TAXONOMY_KINDS]


def taxonomy_children(graph: nx.DiGraph, node: int) -> list[int]:
    return [c for _, c, kind in graph.out_edges(node, data="kind") if kind in TAXONOMY_KINDS]


def _closure(start: Iterable[int], links: dict[int, list[int]]) -> set[int]:
    stack = list(start)
    seen = set(stack)
    while stack:
        for nxt in links.get(stack.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def visual_concepts(graph: nx.DiGraph, config: GraphConfig) -> set[int]:
    """Concepts that descend from one of the visual roots (roots included)."""
    _, children = taxonomy_links(graph)
    return _closure((concept_id_of(graph, s) for s in config.visual_roots), children)


def pagerank_scores(
    graph: nx.DiGraph, config: GraphConfig, counts: dict[int, int] | None = None
) -> dict[int, float]:
    """PageRank over the undirected graph, times N (so 1.0 is the uniform score).

    ``counts``: samples per concept, rolled up (from a tagged dataset); they weight the edges
    (co-occurrence of parent and child). SemCor's counts weight the teleport vector. Power
    iteration on a scipy sparse matrix, as networkx's ``pagerank`` does, without building an
    undirected networkx copy first (the same scores, several times faster on 82k nodes).
    """
    import numpy as np
    import scipy.sparse as sp

    counts = counts or {}
    nodes = sorted(graph.nodes)
    index = {n: i for i, n in enumerate(nodes)}
    rows, cols, weights = [], [], []
    for parent, child, kind in graph.edges(data="kind"):
        if kind in TAXONOMY_KINDS or (config.include_part_of and kind == "part_of"):
            w = 1.0 + config.count_weight * counts.get(child, 0)
            rows += [index[parent], index[child]]
            cols += [index[child], index[parent]]
            weights += [w, w]
    n = len(nodes)
    matrix = sp.csr_array((weights, (rows, cols)), shape=(n, n))
    matrix.sum_duplicates()  # a pair linked twice (is_a and part_of) counts both weights
    out = np.asarray(matrix.sum(axis=1)).ravel()
    transition = sp.diags_array(np.divide(1.0, out, out=np.zeros(n), where=out > 0)) @ matrix
    teleport = np.array([1.0 + config.count_weight * (graph.nodes[v].get("freq") or 0) for v in nodes])
    teleport /= teleport.sum()
    dangling = out == 0
    x = np.full(n, 1.0 / n)
    for _ in range(200):  # converges in well under 100 iterations at alpha 0.85 (tol below)
        previous = x
        x = config.pagerank_alpha * (x @ transition + x[dangling].sum() * teleport)
        x += (1 - config.pagerank_alpha) * teleport
        if np.abs(x - previous).sum() < n * 1e-10:
            break
    return dict(zip(nodes, (x * n).tolist(), strict=True))


def prune_graph(graph: nx.DiGraph, config: GraphConfig, counts: dict[int, int] | None = None) -> PruneResult:
    """Decide which concepts to keep (module docstring); ``counts`` are rolled-up sample counts."""
    counts = counts or {}
    visual = visual_concepts(graph, config)
    ranks = pagerank_scores(graph, config, counts)
    instances = {c for _, c, kind in graph.edges(data="kind") if kind == "instance_of"}
    kept = set()
    for n in visual:
        threshold = config.min_pagerank_instance if n in instances else config.min_pagerank
        if ranks[n] >= threshold or (graph.nodes[n].get("freq") or 0) > 0 or counts.get(n, 0) > 0:
            kept.add(n)
    parents, _ = taxonomy_links(graph)
    kept = _closure(kept, parents)  # every ancestor of a kept concept is kept
    return PruneResult(kept=kept, visual=visual, pagerank=ranks)


def ancestor_distances(graph: nx.DiGraph, nodes: Iterable[int] | None = None) -> dict[int, dict[int, int]]:
    """node -> {ancestor: fewest is_a/instance_of steps}, the node itself at distance 0."""
    parents, children = taxonomy_links(graph)
    pending = {n: len(parents.get(n, ())) for n in graph.nodes}
    ready = sorted(n for n, k in pending.items() if k == 0)
    ancestors: dict[int, dict[int, int]] = {}
    while ready:  # Kahn's topological order: every parent is done before its children
        node = ready.pop()
        own = {node: 0}
        for parent in parents.get(node, ()):
            for ancestor, distance in ancestors[parent].items():
                if own.get(ancestor, 1 << 30) > distance + 1:
                    own[ancestor] = distance + 1
        ancestors[node] = own
        for child in children.get(node, ()):
            pending[child] -= 1
            if pending[child] == 0:
                ready.append(child)
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
        gloss=f"mined from captions; attached under {parent_attrs['synset']} by {method} (score {score:.3f})",
        depth=(parent_attrs.get("depth") or 0) + 1,
        lexname=parent_attrs.get("lexname"),
        freq=0,
        source="caption",
    )
    graph.add_edge(parent, concept_id, kind="is_a")
    graph.graph["by_synset"][graph.nodes[concept_id]["synset"]] = concept_id
    return concept_id


def load_workspace_graph(ws) -> nx.DiGraph:
    """The base graph plus the concepts a workspace mined from its captions (and their edges)."""
    graph = load_graph()
    if not ws.list_shards("concepts"):
        return graph
    concepts = ws.read_table("concepts")
    mined = concepts.filter(pc.equal(concepts["source"], "caption")).to_pylist()
    edges = ws.read_table("concept_edges").to_pylist()
    for row in mined:
        concept_id = row.pop("concept_id")
        graph.add_node(concept_id, **{k: v for k, v in row.items() if k not in ("pagerank", "noise")}, freq=0)
        graph.graph["by_synset"][row["synset"]] = concept_id
    mined_ids = {graph.graph["by_synset"][row["synset"]] for row in mined}
    for edge in edges:
        if edge["child_id"] in mined_ids:
            graph.add_edge(edge["parent_id"], edge["child_id"], kind=edge["kind"])
    return graph


def write_workspace_graph(
    ws, graph: nx.DiGraph, config: GraphConfig | None = None, noise: dict[int, str] | None = None
) -> int:
    """Prune ``graph`` with the workspace's tag counts and write its concept tables (``noise``:
    concept id -> why it is corpus noise, ``engine.graph.noise``).

    Writes ``concepts``, ``concept_edges`` and ``concept_ancestors`` (one file each) for the
    concepts kept; PageRank is weighted by the rolled-up counts of the ``tags`` table. Returns
    the number of concepts written.
    """
    from engine import schema

    config = config or GraphConfig()
    tags = ws.read_table("tags", columns=["sample_id", "concept_id"])
    direct: dict[int, set[str]] = {}
    for sample_id, concept_id in zip(
        tags["sample_id"].to_pylist(), tags["concept_id"].to_pylist(), strict=True
    ):
        direct.setdefault(concept_id, set()).add(sample_id)
    ancestors = ancestor_distances(graph)
    counts = rollup_counts(direct, ancestors)
    pruned = prune_graph(graph, config, counts)
    kept = pruned.kept | {c for c in direct if c in graph}  # a tagged concept is never dropped
    nodes = sorted(kept)
    attrs = [graph.nodes[n] for n in nodes]
    concepts = pa.table(
        {
            "concept_id": nodes,
            "synset": [a["synset"] for a in attrs],
            "lemmas": [a["lemmas"] for a in attrs],
            "gloss": [a["gloss"] for a in attrs],
            "depth": [a["depth"] for a in attrs],
            "source": [a.get("source") or "wordnet" for a in attrs],
            "lexname": [a.get("lexname") for a in attrs],
            "pagerank": [pruned.pagerank.get(n, 0.0) for n in nodes],
            "noise": pa.array([(noise or {}).get(n) for n in nodes], pa.string()),
        }
    )
    edges = sorted((p, c, kind) for p, c, kind in graph.edges(data="kind") if p in kept and c in kept)
    edge_table = pa.table(
        {
            "parent_id": [e[0] for e in edges],
            "child_id": [e[1] for e in edges],
            "kind": [e[2] for e in edges],
        }
    )
    rows = [(n, a, d) for n in nodes for a, d in sorted(ancestors[n].items())]
    ancestor_table = pa.table(
        {
            "concept_id": [r[0] for r in rows],
            "ancestor_id": [r[1] for r in rows],
            "distance": [r[2] for r in rows],
        }
    )
    ws.write_shard("concept_edges", schema.GRAPH_SHARD, edge_table)
    ws.write_shard("concept_ancestors", schema.GRAPH_SHARD, ancestor_table)
    ws.write_shard("concepts", schema.GRAPH_SHARD, concepts)
    return len(nodes)
