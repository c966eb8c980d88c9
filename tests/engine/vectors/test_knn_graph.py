"""Dedup's stored k-NN lists (engine.vectors.knn_graph): a grown or shrunk workspace searches only
the images whose lists can have changed, and gets the lists a full search gets."""

from __future__ import annotations

import os

import numpy as np

from engine.vectors.dedup import load_image_vectors
from engine.vectors.index import build_index, load_index
from engine.vectors.knn_graph import knn_rel, neighbour_lists
from engine.workspace import Workspace
from tests.engine.vectors.test_index import unit, write_embeddings

K = 8


def lists_by_id(vindex, found, sims) -> dict[str, list[tuple[str, float]]]:
    """Each image's neighbours as (sample_id, cosine), self left out, in order of similarity."""
    out = {}
    for row, sample_id in enumerate(vindex.ids):
        pairs = [(str(vindex.ids[j]), round(float(s), 3)) for j, s in zip(found[row], sims[row], strict=True)]
        out[str(sample_id)] = sorted(p for p in pairs if p[0] != sample_id)
    return out


def current_lists(ws: Workspace, fresh: bool):
    vindex = load_index(ws, "image")
    vectors, _ = load_image_vectors(ws, vindex)
    if fresh and ws.exists(knn_rel(ws)):
        os.remove(ws.path(knn_rel(ws)))
    found, sims, searched = neighbour_lists(ws, vindex.index, vindex.ids, vectors.astype(np.float32), K)
    return lists_by_id(vindex, found, sims), searched


def test_a_grown_index_searches_the_new_images_and_those_they_reach(scratch_dir):
    rng = np.random.default_rng(3)
    clusters = unit(rng.standard_normal((40, 32)))
    vectors = unit(np.repeat(clusters, 10, axis=0) + 0.15 * rng.standard_normal((400, 32)))
    ws = Workspace(scratch_dir)
    write_embeddings(ws, "a-0", vectors[:360], "a")
    build_index(ws, "image")
    _, searched = current_lists(ws, fresh=False)
    assert searched == 360  # nothing stored yet
    write_embeddings(ws, "b-0", vectors[360:], "b")  # 40 new images, in clusters of their own
    build_index(ws, "image")
    grown, searched = current_lists(ws, fresh=False)
    assert 40 <= searched < 400  # the new ones and the old ones they enter the lists of
    full, searched_all = current_lists(ws, fresh=True)
    assert searched_all == 400 and grown == full
    _, searched = current_lists(ws, fresh=False)
    assert searched == 0  # nothing changed: every list is stored


def test_a_removed_shard_redoes_the_lists_it_was_in(scratch_dir):
    rng = np.random.default_rng(4)
    vectors = unit(rng.standard_normal((300, 32)))
    ws = Workspace(scratch_dir)
    write_embeddings(ws, "a-0", vectors[:200], "a")
    write_embeddings(ws, "b-0", vectors[200:], "b")
    build_index(ws, "image")
    current_lists(ws, fresh=False)
    os.remove(ws.shard_path("embeddings", "b-0"))
    build_index(ws, "image")  # rebuilt without b-0
    shrunk, searched = current_lists(ws, fresh=False)
    assert 0 < searched < 200
    full, _ = current_lists(ws, fresh=True)
    assert shrunk == full and not any(n.startswith("b") for ns in full.values() for n, _ in ns)
