"""The WordNet concept graph: the committed tables, loading, pruning, ancestors, PageRank."""

from __future__ import annotations

import os
from pathlib import Path

import networkx as nx
import pyarrow.parquet as pq
import pytest

from engine.graph.concept_graph import (
    DATA_DIR,
    GraphConfig,
    ancestor_distances,
    concept_id_of,
    load_graph,
    pagerank_scores,
    prune_graph,
    rollup_counts,
    visual_concepts,
)
from engine.graph.wordnet import WORDNET_DIR


@pytest.fixture(scope="module")
def graph() -> nx.DiGraph:
    return load_graph()


@pytest.fixture(scope="module")
def pruned(graph):
    return prune_graph(graph, GraphConfig())


def synsets(graph, ids) -> set[str]:
    return {graph.nodes[n]["synset"] for n in ids}


def test_committed_tables_follow_nltk_names_and_wordnet_offsets(graph):
    # nltk's names: first lemma + .n. + the sense's rank among the lemma's offsets in index.noun
    christmas_tree = concept_id_of(graph, "christmas_tree.n.05")
    assert christmas_tree == 3026626  # the byte offset of the synset in data.noun
    assert "ornamented evergreen" in graph.nodes[christmas_tree]["gloss"]
    assert graph.nodes[concept_id_of(graph, "entity.n.01")]["depth"] == 0
    lorikeet = graph.nodes[concept_id_of(graph, "lorikeet.n.01")]
    assert lorikeet["lemmas"] == ["lorikeet"] and lorikeet["lexname"] == "noun.animal"
    assert graph.number_of_nodes() == 82115  # every WordNet 3.0 noun synset
    kinds = {kind for _, _, kind in graph.edges(data="kind")}
    assert kinds == {"is_a", "instance_of", "part_of"}
    # a part_of edge points from the whole to the part: wheel is part of (wheeled) vehicle
    wheel = concept_id_of(graph, "wheel.n.01")
    wholes = {graph.nodes[p]["synset"] for p, _, k in graph.in_edges(wheel, data="kind") if k == "part_of"}
    assert wholes, "wheel.n.01 has no part_of parent"
    assert os.path.exists(os.path.join(DATA_DIR, "WORDNET_LICENSE"))


@pytest.mark.slow
def test_the_conversion_script_reproduces_the_committed_tables_byte_for_byte(tmp_path):
    if not os.path.exists(os.path.join(WORDNET_DIR, "data.noun")):
        pytest.fail("Debian's wordnet-base is missing: scripts/setup.sh installs it")
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.dirname(DATA_DIR)))  # engine/graph/data -> the checkout
    script = os.path.join(repo, "scripts", "build_wordnet_graph.py")
    subprocess.run([sys.executable, script, "--out", str(tmp_path)], check=True, capture_output=True)
    for name in ("concepts", "edges", "lemmas", "morph", "words"):
        built = (tmp_path / f"wordnet_{name}.parquet").read_bytes()
        committed = Path(DATA_DIR, f"wordnet_{name}.parquet").read_bytes()
        assert built == committed, f"wordnet_{name}.parquet differs from the committed one"


def test_ancestors_roll_a_lorikeet_up_to_parrot_bird_and_animal(graph):
    lorikeet = concept_id_of(graph, "lorikeet.n.01")
    up = ancestor_distances(graph, [lorikeet])[lorikeet]
    names = {graph.nodes[a]["synset"]: d for a, d in up.items()}
    assert names["lorikeet.n.01"] == 0
    assert names["lory.n.01"] == 1
    assert names["parrot.n.01"] == 2
    assert {"bird.n.01", "animal.n.01", "entity.n.01"} <= set(names)
    assert "financial_institution.n.01" not in names


def test_rollup_counts_count_each_sample_once_per_ancestor(graph):
    lorikeet, parrot = concept_id_of(graph, "lorikeet.n.01"), concept_id_of(graph, "parrot.n.01")
    bird = concept_id_of(graph, "bird.n.01")
    ancestors = ancestor_distances(graph, [lorikeet, parrot])
    counts = rollup_counts({lorikeet: {"a", "b"}, parrot: {"b", "c"}}, ancestors)
    assert counts[lorikeet] == 2 and counts[parrot] == 3 and counts[bird] == 3


def test_visual_filter_keeps_things_and_colours_and_drops_ideas(graph, pruned):
    kept = synsets(graph, pruned.kept)
    assert {"lorikeet.n.01", "cat.n.01", "red.n.01", "rainbow.n.01", "logo.n.01"} <= kept
    visual = synsets(graph, visual_concepts(graph, GraphConfig()))
    assert "idea.n.01" not in visual and "depository_financial_institution.n.01" not in visual
    assert "bank.n.01" in visual  # the river bank is land


def test_pagerank_prunes_obscure_entities_and_keeps_the_hierarchy_closed(graph, pruned):
    kept = pruned.kept
    assert concept_id_of(graph, "eiffel_tower.n.01") in kept
    assert concept_id_of(graph, "einstein.n.01") not in kept  # an unseen, weakly linked entity
    assert 30_000 < len(kept) < len(pruned.visual)
    for node in kept:  # every kept concept still reaches entity.n.01
        for parent, _, kind in graph.in_edges(node, data="kind"):
            if kind in ("is_a", "instance_of"):
                assert parent in kept
    # observed counts keep a concept the PageRank rule alone would drop
    einstein = concept_id_of(graph, "einstein.n.01")
    assert einstein in prune_graph(graph, GraphConfig(), counts={einstein: 3}).kept


def test_pagerank_equals_networkx_on_a_subgraph(graph):
    birds = nx.descendants(graph, concept_id_of(graph, "bird.n.01")) | {concept_id_of(graph, "bird.n.01")}
    sub = graph.subgraph(birds).copy()
    ours = pagerank_scores(sub, GraphConfig(include_part_of=True))
    undirected = nx.Graph()
    undirected.add_nodes_from(sub.nodes)
    undirected.add_edges_from(sub.edges())
    teleport = {n: 1.0 + (sub.nodes[n]["freq"] or 0) for n in sub.nodes}
    reference = nx.pagerank(undirected, alpha=0.85, personalization=teleport, tol=1e-13, max_iter=1000)
    n = sub.number_of_nodes()
    assert max(abs(ours[v] - reference[v] * n) for v in sub.nodes) < 1e-4


def test_committed_tables_are_small():
    sizes = {
        f: os.path.getsize(os.path.join(DATA_DIR, f)) for f in os.listdir(DATA_DIR) if f.endswith(".parquet")
    }
    assert sum(sizes.values()) < 8_000_000, sizes
    assert pq.read_metadata(os.path.join(DATA_DIR, "wordnet_concepts.parquet")).num_rows == 82115
