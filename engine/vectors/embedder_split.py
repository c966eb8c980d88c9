"""Splits of the embedder's training pairs that do not leak, and the leak filter for held-out sources.

A random split by image puts the same caption, the same file name or the same picture (resized,
recoloured) on both sides: openclipart repeats one caption 148 times. Here pairs are linked when
they share a normalised caption, a file basename or a pHash within ``LEAK_BITS`` bits, and each
linked group goes to one side whole: the group's first pair's key picks its bucket. Pairs of a
held-out source that match a training pair in any of the three ways are left out of its measure.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from engine.vectors.phash_pairs import phash_pairs

LEAK_BITS = 4  # pHashes this close are one picture (resized, re-encoded, recoloured)
SPLIT_BUCKETS = 10  # group bucket 0 -> the in-distribution test split, the rest -> train


def normalised_caption(caption: str) -> str:
    """Lower-case words only: 'A Frog!' and 'a frog' are one caption."""
    return " ".join(re.findall(r"[a-z0-9]+", caption.lower()))


def _chain_equal(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Edges linking each row to the previous row with the same non-empty value."""
    last: dict[str, int] = {}
    ii, jj = [], []
    for row, value in enumerate(values):
        if not value:
            continue
        if value in last:
            ii.append(last[value])
            jj.append(row)
        last[value] = row
    return np.array(ii, np.int64), np.array(jj, np.int64)


def leak_groups(captions: list[str], basenames: list[str], phash: np.ndarray) -> np.ndarray:
    """A group label per pair: connected components of 'same caption, basename or picture'."""
    n = len(captions)
    edges = [_chain_equal([normalised_caption(c) for c in captions]), _chain_equal(basenames)]
    ii, jj, _ = phash_pairs(phash, LEAK_BITS)
    edges.append((ii, jj))
    rows = np.concatenate([e[0] for e in edges])
    cols = np.concatenate([e[1] for e in edges])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def grouped_split(
    keys: list[str], captions: list[str], basenames: list[str], phash: np.ndarray
) -> np.ndarray:
    """'test' or 'train' per pair (~10% test); every leak group lies on one side whole."""
    groups = leak_groups(captions, basenames, phash)
    first = {}
    for row, group in enumerate(groups):
        first.setdefault(int(group), keys[row])
    bucket = {
        g: int(hashlib.sha256(k.encode()).hexdigest()[:8], 16) % SPLIT_BUCKETS for g, k in first.items()
    }
    return np.array(["test" if bucket[int(g)] == 0 else "train" for g in groups])


def leaks_into(
    train: tuple[list[str], list[str], np.ndarray], other: tuple[list[str], list[str], np.ndarray]
) -> np.ndarray:
    """Which pairs of ``other`` share a caption, basename or picture with a ``train`` pair.

    Each argument is (captions, basenames, phash).
    """
    seen_captions = {normalised_caption(c) for c in train[0]}
    seen_names = set(train[1]) - {""}
    leak = np.array(
        [
            normalised_caption(c) in seen_captions or b in seen_names
            for c, b in zip(other[0], other[1], strict=True)
        ],
        dtype=bool,
    )
    both = np.concatenate([np.asarray(train[2], np.uint64), np.asarray(other[2], np.uint64)])
    ii, jj, _ = phash_pairs(both, LEAK_BITS)  # equal hashes come chained: follow the components
    graph = coo_matrix((np.ones(len(ii), np.int8), (ii, jj)), shape=(len(both), len(both)))
    component = connected_components(graph, directed=False)[1]
    n = len(train[2])
    return leak | np.isin(component[n:], component[:n])
