"""Searching a workspace from the CLI: a query vector -> the nearest samples with their captions.

The index is loaded on every call (``engine.vectors.index.load_index``), which suits a command;
the service keeps loaded indexes instead (``api.searcher``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from engine.vectors.index import load_index
from engine.workspace import Workspace


def search_samples(
    ws: Workspace, query: np.ndarray, modality: str = "image", k: int = 10, model: str | None = None
) -> pa.Table:
    """The ``k`` samples whose ``modality`` vector is nearest one query vector, best first.

    Columns: rank, sample_id, score (cosine), caption, uri. A text query against the image index
    is text->image search; an image query against it image->image; against the text index,
    image->text.
    """
    vindex = load_index(ws, modality, model=model)
    hits = vindex.search_ids(np.asarray(query, np.float32).reshape(1, -1), k)[0]
    ids = [sample_id for sample_id, _ in hits]
    samples = ws.read_table("samples", ["sample_id", "caption", "uri"])
    samples = samples.filter(pc.is_in(samples["sample_id"], pa.array(ids, pa.string())))
    by_id = {row["sample_id"]: row for row in samples.to_pylist()}
    rows = [
        {
            "rank": rank,
            "sample_id": sample_id,
            "score": score,
            "caption": by_id.get(sample_id, {}).get("caption"),
            "uri": by_id.get(sample_id, {}).get("uri"),
        }
        for rank, (sample_id, score) in enumerate(hits, start=1)
    ]
    result_schema = pa.schema(
        [
            ("rank", pa.int32()),
            ("sample_id", pa.string()),
            ("score", pa.float32()),
            ("caption", pa.string()),
            ("uri", pa.string()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=result_schema)
