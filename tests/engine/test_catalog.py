"""The catalog's queries on a small hand-written workspace (tests/engine/conftest.py; no models, no
Ray): the explorer's page, one sample, the communities, and the column groups of engine/schema.py
they list. The concept resolver and search are in tests/engine/graph/test_concept_queries.py;
counts over a real curated workspace, against pyarrow, in tests/api/test_dashboard_routes.py."""

from __future__ import annotations

import pyarrow as pa
import pytest

from engine import schema
from engine.catalog import (
    SORT_KEYS,
    SampleQuery,
    communities,
    dataset_stats,
    sample_detail,
    sample_page,
)
from engine.graph.concept_queries import ConceptNotFound
from engine.workspace import Workspace
from tests.engine.conftest import DOG, HOT_DOG


@pytest.fixture
def ws(catalog_ws) -> Workspace:
    return catalog_ws


def page_ids(ws: Workspace, **query) -> tuple[int, list[str]]:
    total, rows = sample_page(ws, SampleQuery(**query))
    return total, [r["sample_id"] for r in rows]


def test_a_card_has_the_explorer_columns(ws):
    total, rows = sample_page(ws, SampleQuery())
    assert total == 5 and [r["sample_id"] for r in rows] == ["s1", "s2", "s3", "s4", "s5"]  # no reject
    expected = ["sample_id", "caption", *schema.EXPLORER_SIGNALS, "has_text", "community_id"]
    assert list(rows[0]) == expected
    assert [r["has_text"] for r in rows] == [True, False, None, None, None]  # null: OCR not run
    assert rows[4]["clip_score"] is None and rows[0]["width"] == 100


@pytest.mark.parametrize(
    "query, total, ids",
    [
        ({"ranges": {"clip_score": (0.2, None)}}, 3, ["s1", "s3", "s4"]),  # s5 has no score: no match
        ({"ranges": {"clip_score": (0.15, 0.35), "width": (None, 200)}}, 1, ["s1"]),
        ({"ranges": {"width": (None, None)}}, 5, ["s1", "s2", "s3", "s4", "s5"]),
        ({"concept": "animal.n.01"}, 3, ["s1", "s2", "s5"]),  # tagged below it too (dog)
        ({"concept": DOG}, 2, ["s1", "s5"]),
        ({"concept": str(HOT_DOG)}, 1, ["s4"]),
        ({"concept": "entity.n.01", "has_text": True}, 1, ["s1"]),
        ({"has_text": False}, 1, ["s2"]),
        ({"community": "s4"}, 2, ["s4", "s5"]),
        ({"near_duplicate": False}, 1, ["s3"]),
        ({"near_duplicate": True, "caption": "DOG"}, 3, ["s1", "s4", "s5"]),
        ({"sort": "-clip_score"}, 5, ["s4", "s1", "s3", "s2", "s5"]),  # nulls last either way
        ({"sort": "clip_score"}, 5, ["s2", "s3", "s1", "s4", "s5"]),
        ({"sort": "-height", "limit": 2, "offset": 1}, 5, ["s3", "s2"]),
        ({"offset": 100}, 5, []),  # past the end: still the total
        ({"caption": "zebra"}, 0, []),
    ],
)
def test_sample_page_filters_sorts_and_pages(ws, query, total, ids):
    assert page_ids(ws, **query) == (total, ids)


def test_sample_page_refuses_names_outside_the_lists(ws):
    assert "sample_id" in SORT_KEYS and "-blur" in SORT_KEYS and "caption" not in SORT_KEYS
    with pytest.raises(ValueError, match="cannot sort"):
        sample_page(ws, SampleQuery(sort="caption; DROP TABLE samples"))
    with pytest.raises(ValueError, match="no range filter"):
        sample_page(ws, SampleQuery(ranges={"ocr_text": (None, "x")}))
    with pytest.raises(ConceptNotFound):
        sample_page(ws, SampleQuery(concept="zebra.n.01"))


def test_sample_detail(ws):
    assert sample_detail(ws, "s6")["signals"] is None  # a reject has no signals row
    assert sample_detail(ws, "nope") is None
    detail = sample_detail(ws, "s1")
    assert detail["sample"]["caption"] == "A dog" and detail["signals"]["ocr_text"] == "STOP"
    assert "ocr_lines" not in detail["signals"] and detail["signals"]["clip_score"] == pytest.approx(0.3)
    assert detail["dedup"]["community_id"] == "s1" and detail["dedup"]["community_size"] == 2
    assert [(t["synset"], t["score"]) for t in detail["tags"]] == [("dog.n.01", 1.0), ("animal.n.01", 0.5)]


def test_communities(ws):
    assert communities(ws, 20) == {
        "communities": 2,
        "samples": 4,
        "largest": [
            {"community_id": "s1", "n_samples": 2, "max_sim": pytest.approx(0.9)},
            {"community_id": "s4", "n_samples": 2, "max_sim": pytest.approx(0.9)},
        ],
    }
    assert communities(ws, 1)["largest"][0]["community_id"] == "s1"


def test_dataset_stats_lists_the_stat_signals(ws):
    assert [s["signal"] for s in dataset_stats(ws)["signals"]] == list(schema.STAT_SIGNALS)


@pytest.mark.parametrize("group", ["STAT_SIGNALS", "SCORE_SIGNALS", "EXPLORER_SIGNALS"])
def test_column_groups_are_numeric_signals(group):
    view = schema.signals_view()
    names = getattr(schema, group)
    assert len(set(names)) == len(names)
    for name in names:
        kind = view.field(name).type  # KeyError: not a column of the signals view
        assert pa.types.is_integer(kind) or pa.types.is_floating(kind), (group, name, kind)
    assert set(schema.EXPLORER_SIGNALS) <= set(schema.SCORE_SIGNALS)
