"""Fixtures of the engine's tests: a small hand-written workspace with a catalog."""

from __future__ import annotations

import pyarrow as pa
import pytest

from engine import schema
from engine.catalog import refresh_catalog
from engine.workspace import Workspace

ENTITY, ANIMAL, DOG, HOT_DOG = 1, 2, 3, 2**40  # concept ids (a mined one above 2**40)
LINE = {"text": "STOP", "confidence": 0.9, "box": [[0, 0], [1, 0], [1, 1], [0, 1]]}


def table(name: str, rows: list[dict]) -> pa.Table:
    """Rows of a workspace table; columns a row leaves out are null."""
    return pa.Table.from_pylist(rows, schema=schema.TABLES[name])


@pytest.fixture(scope="module")
def catalog_ws(tmp_path_factory) -> Workspace:
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
