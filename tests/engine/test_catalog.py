"""The catalog's queries on a small hand-written workspace (no models, no Ray): the explorer's page,
one sample, the communities; the concept resolver and concept search they share with the CLI; the
column groups of engine/schema.py they list. Counts over a real curated workspace, against pyarrow,
are in tests/api/test_dashboard_routes.py."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from engine import schema
from engine.catalog import (
    SORT_KEYS,
    SampleQuery,
    communities,
    connect_catalog,
    dataset_stats,
    refresh_catalog,
    sample_detail,
    sample_page,
)
from engine.graph.concept_queries import ConceptNotFound, resolve_concept, search_concepts
from engine.workspace import Workspace

ENTITY, ANIMAL, DOG, HOT_DOG = 1, 2, 3, 2**40  # concept ids (a mined one above 2**40)
LINE = {"text": "STOP", "confidence": 0.9, "box": [[0, 0], [1, 0], [1, 1], [0, 1]]}


def table(name: str, rows: list[dict]) -> pa.Table:
    """Rows of a workspace table; columns a row leaves out are null."""
    return pa.Table.from_pylist(rows, schema=schema.TABLES[name])


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    """Five usable samples and a rejected one, with signals, partial scores and OCR, two
    near-duplicate communities and a four-concept graph."""
    ws = Workspace(str(tmp_path_factory.mktemp("catalog") / "ws")).create()
    ids = [f"s{i}" for i in range(1, 7)]
    captions = ["A dog", "an Animal", "a cat", "hot dog stand", "a dog again", "bad"]
    ws.write_shard(
        "samples",
        "t-0",
        table(
            "samples",
            [
                {"sample_id": s, "image_id": s, "caption": c, "status": "ok" if s != "s6" else "rejected"}
                for s, c in zip(ids, captions, strict=True)
            ],
        ),
    )
    sizes = {"s1": (100, 50), "s2": (200, 100), "s3": (300, 300), "s4": (50, 400), "s5": (120, 80)}
    ws.write_shard(
        "signals",
        "t-0",
        table(
            "signals",
            [
                {"sample_id": s, "image_id": s, "width": w, "height": h, "blur": float(w)}
                for s, (w, h) in sizes.items()
            ],
        ),
    )
    clip = {"s1": 0.3, "s2": 0.1, "s3": 0.2, "s4": 0.4}  # s5: the embed stage has not run
    ws.write_shard(
        "embeddings", "t-0", table("embeddings", [{"sample_id": s, "clip_score": v} for s, v in clip.items()])
    )
    ocr = [
        {"sample_id": "s1", "ocr_text": "STOP", "ocr_lines": [LINE], "text_area_ratio": 0.5},
        {"sample_id": "s2", "ocr_text": "", "ocr_lines": [], "text_area_ratio": 0.0},
    ]  # s3-s5: OCR has not run
    ws.write_shard("ocr", "t-0", table("ocr", ocr))
    dedup = [("s1", "s1"), ("s2", "s1"), ("s3", "s3"), ("s4", "s4"), ("s5", "s4")]
    ws.write_shard(
        "dedup",
        "all",
        table("dedup", [{"sample_id": s, "community_id": c, "nearest_sim": 0.9} for s, c in dedup]),
    )
    concepts = [
        (ENTITY, "entity.n.01", ["entity"], 0),
        (ANIMAL, "animal.n.01", ["animal", "beast"], 1),
        (DOG, "dog.n.01", ["dog", "domestic_dog"], 2),
        (HOT_DOG, "hot_dog.x.01", ["hot_dog"], 1),
    ]
    rows = [{"concept_id": c, "synset": n, "lemmas": lm, "depth": d} for c, n, lm, d in concepts]
    ws.write_shard("concepts", schema.GRAPH_SHARD, table("concepts", rows))
    up = [(ENTITY, ENTITY, 0), (ANIMAL, ANIMAL, 0), (ANIMAL, ENTITY, 1), (DOG, DOG, 0), (DOG, ANIMAL, 1)]
    up += [(DOG, ENTITY, 2), (HOT_DOG, HOT_DOG, 0), (HOT_DOG, ENTITY, 1)]
    rows = [{"concept_id": c, "ancestor_id": a, "distance": d} for c, a, d in up]
    ws.write_shard("concept_ancestors", schema.GRAPH_SHARD, table("concept_ancestors", rows))
    tags = [("s1", DOG, 1.0), ("s1", ANIMAL, 0.5), ("s2", ANIMAL, 1.0), ("s4", HOT_DOG, 1.0)]
    tags += [("s5", DOG, 1.0)]
    rows = [{"sample_id": s, "concept_id": c, "source": "caption", "score": x, "hits": 1} for s, c, x in tags]
    ws.write_shard("tags", schema.GRAPH_SHARD, table("tags", rows))
    refresh_catalog(ws)
    return ws


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


@pytest.mark.parametrize("group", ["STAT_SIGNALS", "SCORE_SIGNALS", "EXPLORER_SIGNALS"])
def test_column_groups_are_numeric_signals(group):
    view = schema.signals_view()
    names = getattr(schema, group)
    assert len(set(names)) == len(names)
    for name in names:
        kind = view.field(name).type  # KeyError: not a column of the signals view
        assert pa.types.is_integer(kind) or pa.types.is_floating(kind), (group, name, kind)
    assert set(schema.EXPLORER_SIGNALS) <= set(schema.SCORE_SIGNALS)
