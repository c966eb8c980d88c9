"""Exact-duplicate pairs by perceptual hash: 64-bit pHashes within a few bits, by multi-index hashing.

Split each hash into ``d + 1`` blocks; two hashes within ``d`` bits agree on at least one block, so
only hashes sharing a block value are compared (``engine.vectors.dedup`` adds these pairs to its
semantic ones).
"""

from __future__ import annotations

import itertools

import numpy as np


def phash_pairs(phash: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (i, j, distance), i < j, of 64-bit hashes within ``max_distance`` bits; nulls: use a mask.

    Equal hashes are linked in a chain (each to the previous one with the same value), which
    connects them as well as all pairs would, in linear size.
    """
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    if max_distance < 0 or len(phash) < 2:
        return empty
    phash = np.asarray(phash, np.uint64)
    values, inverse = np.unique(phash, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    same = inverse[order][1:] == inverse[order][:-1]
    ii, jj, dd = [order[:-1][same]], [order[1:][same]], [np.zeros(int(same.sum()), np.int64)]
    # distinct values within max_distance (> 0): multi-index hashing over max_distance + 1 blocks
    if max_distance > 0 and len(values) > 1:
        first_row = order[np.r_[0, np.flatnonzero(~same) + 1]]  # a row carrying each distinct value
        blocks = max_distance + 1
        edges = np.linspace(0, 64, blocks + 1).astype(int)
        keys = []
        for lo, hi in itertools.pairwise(edges):
            block = (values >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
            by_block = np.argsort(block, kind="stable")
            starts = np.flatnonzero(np.r_[True, block[by_block][1:] != block[by_block][:-1], True])
            for s, e in itertools.pairwise(starts):
                if e - s >= 2:
                    keys.append(_close_pairs(values, by_block[s:e], max_distance))
        key = np.unique(np.concatenate(keys)) if keys else np.zeros(0, np.int64)
        a, b = key // len(values), key % len(values)
        ii.append(first_row[a])
        jj.append(first_row[b])
        dd.append(np.bitwise_count(values[a] ^ values[b]).astype(np.int64))
    i, j, d = np.concatenate(ii), np.concatenate(jj), np.concatenate(dd)
    return np.minimum(i, j), np.maximum(i, j), d


def _close_pairs(values: np.ndarray, members: np.ndarray, max_distance: int) -> np.ndarray:
    """Keys a * len(values) + b (a < b) of the member pairs within ``max_distance`` bits."""
    members = np.sort(members)
    step = max(1, (1 << 22) // len(members))  # rows per step: a (step, g) distance matrix of <= 4M
    keys = []
    for start in range(0, len(members), step):
        rows = members[start : start + step]
        dist = np.bitwise_count(values[rows][:, None] ^ values[members][None, :])
        upper = members[None, :] > rows[:, None]
        r, c = np.nonzero((dist <= max_distance) & upper)
        keys.append(rows[r].astype(np.int64) * len(values) + members[c])
    return np.concatenate(keys)


def confirmed(
    sim: np.ndarray, distance: np.ndarray, threshold: float, confirm_threshold: float, confirm_distance: int
) -> np.ndarray:
    """Which semantic pairs are near-duplicates: cosine >= ``threshold``, or cosine >=
    ``confirm_threshold`` with the two pHashes within ``confirm_distance`` bits (a JPEG, watermarked
    or colour-jittered copy moves both a little; a look-alike of another object rarely keeps the
    hash). ``distance``: the pairs' pHash distances, -1 where a hash is missing; ``confirm_distance``
    -1 turns the second rule off."""
    agree = (distance >= 0) & (distance <= confirm_distance) & (sim >= confirm_threshold)
    return (sim >= threshold) | (agree if confirm_distance >= 0 else False)
