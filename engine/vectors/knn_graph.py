"""The k-NN lists of dedup, kept between runs so a growing workspace searches only what changed.

Dedup's semantic edges come from each image's ``k + 1`` nearest images in an exact (flat) index
(``engine.vectors.dedup``). Those lists are stored beside the index, ``WS/index/<model>/knn.parquet``
(sample_id, neighbour sample_ids, cosines), and the next dedup redoes the search only for:

* images that are new since the lists were stored;
* images one of whose neighbours was removed (``zcurate remove``) or whose list was short (the
  workspace then held fewer than ``k + 1`` images);
* images that a new image could enter the list of: the new images go into a small exact index,
  each old image looks up its best new match there (one pass, new images x old images), and the
  image is redone when that cosine reaches the last one of its list.

Every other list is what a full search would return, so the graph, and the communities built on it,
are a from-scratch run's (tested against one). An approximate (IVF) index is searched whole each
time: its lists depend on the cells, which a rebuild moves.
"""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.workspace import Workspace

KNN_FILE = "knn.parquet"
SEARCH_STEP = 1 << 14  # queries per FAISS call: bounds the (batch, k) result arrays


def knn_rel(ws: Workspace, model: str | None = None) -> str:
    return f"{ws.index_rel(model)}/{KNN_FILE}"


def read_lists(ws: Workspace, model: str | None) -> dict[str, tuple[list[str], list[float]]]:
    """sample_id -> (neighbour sample_ids, cosines) as stored; empty when there is nothing stored."""
    if not ws.exists(knn_rel(ws, model)):
        return {}
    table = pq.read_table(ws.path(knn_rel(ws, model)), filesystem=ws.fs)
    return {
        sample_id: (neighbours, sims)
        for sample_id, neighbours, sims in zip(
            table["sample_id"].to_pylist(),
            table["neighbours"].to_pylist(),
            table["sims"].to_pylist(),
            strict=True,
        )
    }


def write_lists(ws: Workspace, ids: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, model: str | None):
    """Store every row's list by sample_id (padding, FAISS id -1, left out)."""
    names = [[str(ids[j]) for j in row if j >= 0] for row in neighbours]
    cosines = [
        [float(s) for s, j in zip(srow, row, strict=True) if j >= 0]
        for srow, row in zip(sims, neighbours, strict=True)
    ]
    table = pa.table(
        {
            "sample_id": pa.array([str(s) for s in ids], pa.string()),
            "neighbours": pa.array(names, pa.list_(pa.string())),
            "sims": pa.array(cosines, pa.list_(pa.float32())),
        }
    )
    ws.write_parquet(knn_rel(ws, model), table)


def neighbour_lists(
    ws: Workspace, index: faiss.Index, ids: np.ndarray, vectors: np.ndarray, k: int, model: str | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """(FAISS ids, cosines), each (n, min(k + 1, n)), of every row's nearest rows in ``index`` (self
    included, as a search returns it), and how many rows were searched (module docstring)."""
    n = len(ids)
    kk = min(k + 1, n)
    out_ids = np.full((n, kk), -1, np.int64)
    out_sims = np.full((n, kk), -np.inf, np.float32)
    redo = np.ones(n, bool)
    stored = read_lists(ws, model)
    row_of = {str(sample_id): row for row, sample_id in enumerate(ids)}
    for row, sample_id in enumerate(ids):
        entry = stored.get(str(sample_id))
        if entry is None or len(entry[0]) != kk or any(nb not in row_of for nb in entry[0]):
            continue  # new, its list was short, or a neighbour is gone: search it again
        out_ids[row] = [row_of[nb] for nb in entry[0]]
        out_sims[row] = entry[1]
        redo[row] = False
    kept = np.flatnonzero(~redo)
    new = np.array([row for row, sample_id in enumerate(ids) if str(sample_id) not in stored], np.int64)
    if len(kept) and len(new):  # could a new image enter a kept list? then that list is redone
        probe = faiss.IndexFlatIP(vectors.shape[1])
        probe.add(np.ascontiguousarray(vectors[new], dtype=np.float32))
        for start in range(0, len(kept), SEARCH_STEP):
            rows = kept[start : start + SEARCH_STEP]
            best, _ = probe.search(np.ascontiguousarray(vectors[rows], dtype=np.float32), 1)
            redo[rows[best[:, 0] >= out_sims[rows, -1]]] = True  # ties too: a fresh search decides
    todo = np.flatnonzero(redo)
    for start in range(0, len(todo), SEARCH_STEP):
        rows = todo[start : start + SEARCH_STEP]
        sims, found = index.search(np.ascontiguousarray(vectors[rows], dtype=np.float32), kk)
        out_ids[rows], out_sims[rows] = found, sims
    if n:
        write_lists(ws, ids, out_ids, out_sims, model)
    return out_ids, out_sims, len(todo)
