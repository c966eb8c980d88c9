"""TEST FIXTURE: stage manifests built by hand from real openclipart images.

The Active Curation Engine (engine/manifest.py) writes the real manifests (the trainer's test of
the feedback loop uses one); most trainer tests build a small manifest by hand, to control its
rows exactly, with the same columns (schema.MANIFEST_ROW, DESIGN.md section 4): sample_id, uri,
caption, weight, bucket_h, bucket_w, stage, kind, concept_ids, and for image-to-image rows the
source sample (source_sample_id, source_uri), caption_form. Captions are openclipart's own (SVG
title + keywords); the concept of a row is its openclipart category folder (animals, food, ...),
as an int64 id like the graph's (CATEGORY_IDS).
"""

from __future__ import annotations

import hashlib
import os

import pyarrow as pa
import pyarrow.parquet as pq

from engine import schema
from engine.profiling.openclipart_source import OPENCLIPART_ROOT, openclipart_caption

CATEGORIES = ("animals", "food", "plants", "transportation", "buildings", "people", "shapes", "tools")
# A category's concept id; small made-up ints (the graph's are WordNet offsets), 0 left unused.
CATEGORY_IDS = {category: i + 1 for i, category in enumerate(CATEGORIES)}
MAX_FILE_BYTES = 12_000  # small PNGs decode in milliseconds: keeps the tests fast


def openclipart_rows(n: int, categories: tuple[str, ...] = CATEGORIES) -> list[dict]:
    """n openclipart images spread over categories (small files, deterministic choice)."""
    per_category: dict[str, list[str]] = {}
    for category in categories:
        folder = os.path.join(OPENCLIPART_ROOT, "png", category)
        files = []
        for directory, _, names in os.walk(folder):
            for name in names:
                path = os.path.join(directory, name)
                if name.endswith(".png") and os.path.getsize(path) <= MAX_FILE_BYTES:
                    files.append(path)
        files.sort(key=lambda p: hashlib.blake2b(p.encode(), digest_size=8).digest())
        per_category[category] = files
    rows: list[dict] = []
    i = 0
    while len(rows) < n:
        category = categories[i % len(categories)]
        files = per_category[category]
        k = i // len(categories)
        i += 1
        if k >= len(files):
            if i > n * len(categories) * 4:
                raise RuntimeError("not enough small openclipart images")
            continue
        path = files[k]
        svg = os.path.join(
            OPENCLIPART_ROOT, "svg", os.path.relpath(path, os.path.join(OPENCLIPART_ROOT, "png"))
        )
        try:
            with open(svg[:-4] + ".svg", "rb") as f:
                caption = openclipart_caption(f.read())
        except (OSError, ValueError, SyntaxError):
            caption = ""
        rows.append(
            {
                "sample_id": hashlib.blake2b(path.encode(), digest_size=16).hexdigest(),
                "uri": path,
                "caption": caption or category,
                "concept_ids": [CATEGORY_IDS[category]],
            }
        )
    return rows


def write_manifest(
    path: str,
    rows: list[dict],
    stage: str = "lowres",
    size: tuple[int, int] = (32, 32),
    weights: list[float] | None = None,
    image_to_image: bool = False,
) -> str:
    """Write rows as a manifest Parquet. image_to_image: each row's source is the previous row of
    its concept (the first row of a concept stays text-to-image)."""
    out = []
    last_of: dict[str, dict] = {}
    for i, r in enumerate(rows):
        source = last_of.get(r["concept_ids"][0]) if image_to_image else None
        out.append(
            {
                **r,
                "weight": 1.0 if weights is None else weights[i],
                "bucket_h": size[0],
                "bucket_w": size[1],
                "stage": stage,
                "kind": "i2i" if source else "t2i",
                "source_sample_id": source["sample_id"] if source else None,
                "source_uri": source["uri"] if source else None,
                "caption_form": "original",
            }
        )
        last_of[r["concept_ids"][0]] = r
    pq.write_table(pa.Table.from_pylist(out, schema=schema.MANIFEST_ROW), path)
    return path
