"""Questions asked of a workspace's concepts: the one resolver, and concept search by name."""

from __future__ import annotations

import numpy as np
import pytest

from engine.catalog import connect_catalog
from engine.graph.concept_queries import ConceptNotFound, resolve_concept, search_concepts
from engine.workspace import Workspace
from tests.engine.conftest import DOG, HOT_DOG


@pytest.fixture
def ws(catalog_ws) -> Workspace:
    return catalog_ws


@pytest.mark.parametrize(
    "concept, expected",
    [
        (DOG, DOG),
        (str(DOG), DOG),
        ("0003", DOG),
        (np.int64(DOG), DOG),
        ("dog.n.01", DOG),
        (HOT_DOG, HOT_DOG),
    ],
)
def test_resolve_concept(ws, concept, expected):
    con = connect_catalog(ws)
    try:
        assert resolve_concept(con, concept) == expected
    finally:
        con.close()


@pytest.mark.parametrize("concept", [99, "99", str(2**63), 2**64, "٣", "dog", "DOG.n.01", "-3", ""])
def test_an_unknown_concept_is_not_found(ws, concept):
    con = connect_catalog(ws)
    try:
        with pytest.raises(ConceptNotFound, match="not in this workspace's graph"):
            resolve_concept(con, concept)
    finally:
        con.close()
    assert issubclass(ConceptNotFound, ValueError)  # callers that catch ValueError still do


def test_search_concepts(ws):
    found = search_concepts(ws, " Dog ", 10).to_pylist()
    # the exact name first, then by samples (rolled up): hot_dog's lemma contains "dog" too
    assert [r["synset"] for r in found] == ["dog.n.01", "hot_dog.x.01"]
    assert found[0] == {"concept_id": DOG, "synset": "dog.n.01", "depth": 2, "n_direct": 2, "n_rollup": 2}
    assert [r["synset"] for r in search_concepts(ws, "hot dog", 10).to_pylist()] == ["hot_dog.x.01"]
    assert [r["synset"] for r in search_concepts(ws, "BEAST", 10).to_pylist()] == ["animal.n.01"]
    assert search_concepts(ws, "o", 1).num_rows == 1
    with pytest.raises(ValueError, match="empty"):
        search_concepts(ws, "   ", 10)
