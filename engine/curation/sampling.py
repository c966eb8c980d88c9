"""The Active Curation Engine's per-sample arithmetic: filters, tilts, keyed draws, epochs, buckets.

Pure numpy/pyarrow over compact arrays (no I/O); ``engine.curation.manifest`` reads the tables,
calls these, and writes the manifest.

1. **Filters** (``range_mask``): keep ``minimum <= v <= maximum``; a missing score (NaN) is kept or
   dropped as the recipe says.
2. **Tilts** (``rank_tilt``): ``w *= exp(s * (r - 0.5))`` with ``r`` the mid-rank percentile of the
   score in [0, 1]; a soft preference that ignores the score's scale and outliers.
3. **Draws**: ``keyed_uniform`` gives each sample a uniform that depends on (sample_id, seed, salt)
   only, so Bernoulli keeps (``u < p``) and caption forms (``choose_form``) are stable when the pool
   grows; ``weighted_order`` is the Efraimidis-Spirakis weighted order without replacement that both
   ``weighted_draws`` (a manifest's epoch list) and the trainer's sampler use.
4. **Buckets** (``nearest_bucket``): nearest aspect ratio in log space, then the resolution tier.

Concept balancing is in ``engine.curation.balancing``.
"""

from __future__ import annotations

import binascii
import hashlib
import string

import numpy as np
import pyarrow as pa

_SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64 constants (Steele et al. 2014)

_SPLITMIX_M1 = np.uint64(0xBF58476D1CE4E5B9)

_SPLITMIX_M2 = np.uint64(0x94D049BB133111EB)

_HEX_ID_CHARS = 32  # engine.profiling.ingest ids: blake2b-128 hex digests


def range_mask(values: np.ndarray, minimum=None, maximum=None, missing: str = "keep") -> np.ndarray:
    """bool keep-mask: ``minimum <= v <= maximum`` (either bound optional, both inclusive);
    NaN = missing -> kept when ``missing == 'keep'``, dropped when ``'drop'``.

    Raises:
        ValueError: for another ``missing`` value.
    """
    if missing not in ("keep", "drop"):
        raise ValueError(f"missing must be 'keep' or 'drop', got {missing!r}")
    values = np.asarray(values, dtype=np.float64)
    keep = np.ones(values.shape, dtype=bool)
    if minimum is not None:
        keep &= values >= minimum
    if maximum is not None:
        keep &= values <= maximum
    nan = np.isnan(values)
    keep[nan] = missing == "keep"
    return keep


def rank_tilt(values: np.ndarray, strength: float) -> np.ndarray:
    """float64 factors ``exp(strength * (r - 0.5))``.

    ``r`` is the mid-rank percentile of the value among the m non-NaN values:
    ``r = (mean 0-based rank of the value's ties) / (m - 1)`` in [0, 1] (a single value gets
    r = 0.5); NaN -> 1.0. strength 0 -> all ones; bounded in ``[exp(-|s|/2), exp(|s|/2)]``;
    robust to the score's scale and outliers (only the order matters).
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.ones(values.shape, dtype=np.float64)
    known = np.flatnonzero(~np.isnan(values))
    m = len(known)
    if strength == 0 or m == 0:
        return out
    if m == 1:
        return out  # r = 0.5 -> exp(0)
    order = known[np.argsort(values[known])]
    ranked = values[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])  # first position of each tie group
    ends = np.r_[starts[1:], m]  # one past the last
    group = np.cumsum(np.r_[True, ranked[1:] != ranked[:-1]]) - 1
    mid_rank = (starts + ends - 1) / 2.0
    out[order] = np.exp(strength * (mid_rank[group] / (m - 1) - 0.5))
    return out


def check_weights(weights: np.ndarray, n: int, name: str) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n,):
        raise ValueError(f"{name} has shape {weights.shape}, expected ({n},)")
    if not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise ValueError(f"{name} must be finite and >= 0")
    return weights


def keyed_uniform(sample_ids: pa.Array | pa.ChunkedArray, seed: int, salt: str) -> np.ndarray:
    """float64 in [0, 1), one per sample, a function of (sample_id, seed, salt) only.

    Independent of row order and of the other rows, so a sample's draw is stable when the pool
    grows. ``h`` = the id's first 16 hex digits as uint64 when the id is 32 hex digits
    (engine.profiling.ingest's blake2b ids; either case), else the first 8 bytes (big-endian) of
    ``blake2b(id)``; integer ids are used as they are. Then ``u = splitmix64(h XOR k) >> 11 / 2**53`` with
    ``k = blake2b-64(f"{seed}\\x00{salt}")``. Arrays of hex ids are parsed from the Arrow data
    buffer without a Python loop (10M ids in well under 2 s); any other string id sends its chunk
    down a per-id ``hashlib`` loop (slow path, ~1 us per id).

    Raises:
        ValueError: for null ids.
    """
    chunks = sample_ids.chunks if isinstance(sample_ids, pa.ChunkedArray) else [sample_ids]
    key = np.uint64(
        int.from_bytes(hashlib.blake2b(f"{seed}\x00{salt}".encode(), digest_size=8).digest(), "big")
    )
    parts = [_splitmix64(_id_hash(chunk) ^ key) for chunk in chunks]
    h = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def id_keys(sample_ids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """uint64 per id, the ``h`` of :func:`keyed_uniform`: for the engine's 32-hex-digit ids, their
    first 16 hex digits, so sorting by key sorts by sample_id (ties need a 2^-64 coincidence)."""
    chunks = sample_ids.chunks if isinstance(sample_ids, pa.ChunkedArray) else [sample_ids]
    parts = [_id_hash(chunk) for chunk in chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def _id_hash(chunk: pa.Array) -> np.ndarray:
    """uint64 per id (see keyed_uniform)."""
    if chunk.null_count:
        raise ValueError("sample ids must not be null")
    if pa.types.is_integer(chunk.type):
        return chunk.to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    if not (pa.types.is_string(chunk.type) or pa.types.is_large_string(chunk.type)):
        raise TypeError(f"sample ids must be strings or integers, got {chunk.type}")
    n = len(chunk)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    _, offsets_buffer, data_buffer = chunk.buffers()
    offset_type = np.int64 if pa.types.is_large_string(chunk.type) else np.int32
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[chunk.offset : chunk.offset + n + 1]
    if np.all(np.diff(offsets) == _HEX_ID_CHARS):  # fixed width: one block of n * 32 hex digits
        start = int(offsets[0])
        try:  # C speed (~15 ns per id); rejects any non-hex byte, so a mixed chunk falls through
            digest = binascii.a2b_hex(memoryview(data_buffer)[start : start + n * _HEX_ID_CHARS])
        except binascii.Error:
            digest = None
        if digest is not None:
            head = np.frombuffer(digest, dtype=np.uint8).reshape(n, _HEX_ID_CHARS // 2)[:, :8]
            return np.ascontiguousarray(head).view(">u8").ravel().astype(np.uint64)
    return np.array([_one_id_hash(s) for s in chunk.to_pylist()], dtype=np.uint64)


def _one_id_hash(sample_id: str) -> int:
    """The slow path of _id_hash for one id (same rule as the vectorised one)."""
    if len(sample_id) == _HEX_ID_CHARS and all(c in string.hexdigits for c in sample_id):
        return int(sample_id[:16], 16)
    return int.from_bytes(hashlib.blake2b(sample_id.encode(), digest_size=8).digest(), "big")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's output function on uint64 arrays (wrapping arithmetic)."""
    z = x + _SPLITMIX_GAMMA
    z = (z ^ (z >> np.uint64(30))) * _SPLITMIX_M1
    z = (z ^ (z >> np.uint64(27))) * _SPLITMIX_M2
    return z ^ (z >> np.uint64(31))


def weighted_order(weights: np.ndarray, rows: np.ndarray, k: int, seed: int, epoch: int) -> np.ndarray:
    """The first ``k`` of ``rows`` in a weighted order without replacement (Efraimidis-Spirakis).

    Row i's key is ``log(1 - u_i) / w_i`` with ``u = np.random.default_rng([seed, epoch]).random(n)``,
    one uniform per row of ``weights`` (n rows) whichever rows are candidates, so a row's key does
    not depend on the others; the rows with the largest keys come first (ties: the smaller row).
    Taking rows in this order is drawing them one by one with probability proportional to ``w``
    among those left. A partial sort finds the top k, so the cost is O(rows).

    Args:
        weights: float64 (n,), > 0 on ``rows``.
        rows: int64 candidate rows, ascending.
        k: how many to return (at most ``len(rows)``).
    """
    k = min(int(k), len(rows))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    u = np.random.default_rng([seed, epoch]).random(len(weights))[rows]
    keys = np.log1p(-u) / weights[rows]  # log(1 - u): u = 0 is possible, 1 - u > 0
    top = np.argpartition(-keys, k - 1)[:k] if k < len(keys) else np.arange(len(keys))
    top = np.sort(top)  # ascending row, so that the stable sort below breaks key ties by row
    top = top[np.argsort(-keys[top], kind="stable")]  # descending key
    return np.asarray(rows, dtype=np.int64)[top]


def weighted_draws(
    weights: np.ndarray, n_draws: int, epoch_size: int, repeat_cap: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """An epoch-expanded list of up to ``n_draws`` draws: (row int64, epoch int32) in draw order.

    Epoch e = 0, 1, ... draws ``min(epoch_size, rows still eligible, draws left)`` rows weighted
    WITHOUT replacement (:func:`weighted_order` with epoch e). A row is eligible while ``w > 0``
    and it was drawn fewer than ``repeat_cap`` times (None: no cap). Stops at ``n_draws`` or when
    no row is eligible (then fewer draws; the caller reports it). Each epoch costs O(rows).
    """
    weights = check_weights(weights, len(np.asarray(weights)), "weights")
    if epoch_size < 1:
        raise ValueError(f"epoch_size must be >= 1, got {epoch_size}")
    if repeat_cap is not None and repeat_cap < 1:
        raise ValueError(f"repeat_cap must be >= 1 or None, got {repeat_cap}")
    drawn = np.zeros(len(weights), dtype=np.int64)
    rows, epochs = [], []
    left, epoch = int(n_draws), 0
    while left > 0:
        eligible = weights > 0
        if repeat_cap is not None:
            eligible &= drawn < repeat_cap
        candidates = np.flatnonzero(eligible)
        k = min(epoch_size, len(candidates), left)
        if k == 0:
            break
        chosen = weighted_order(weights, candidates, k, seed, epoch)
        drawn[chosen] += 1
        rows.append(chosen)
        epochs.append(np.full(k, epoch, dtype=np.int32))
        left -= k
        epoch += 1
    if not rows:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32)
    return np.concatenate(rows).astype(np.int64), np.concatenate(epochs)


def nearest_bucket(
    width: np.ndarray, height: np.ndarray, buckets: np.ndarray, max_upscale: float | None = None
) -> np.ndarray:
    """int64 bucket index per sample; buckets: (k, 2) int array of (h, w).

    Aspect = ``log(w) - log(h)`` (of the reduced ratio, so 512x768 and 1024x1536 share one). The
    nearest bucket aspect to the image's wins; ties between two aspects go to the aspect with
    the larger largest bucket, then the lower index. Among that aspect's buckets (resolution
    tiers): with ``max_upscale`` None the largest; else the largest whose linear upscale
    ``sqrt(bucket area / image area) <= max_upscale``, or the smallest when none is. Equal
    buckets resolve to the lower index. -1 for width or height <= 0 (or NaN).
    """
    buckets = np.asarray(buckets, dtype=np.int64).reshape(-1, 2)
    if len(buckets) == 0 or (buckets <= 0).any():
        raise ValueError("buckets must be a non-empty (k, 2) array of positive (h, w)")
    width = np.asarray(width, dtype=np.float64)
    height = np.asarray(height, dtype=np.float64)
    out = np.full(width.shape, -1, dtype=np.int64)
    valid = (width > 0) & (height > 0)  # False for NaN too
    bh, bw = buckets[:, 0], buckets[:, 1]
    g = np.gcd(bh, bw)
    ratios, group = np.unique(np.stack([bw // g, bh // g], axis=1), axis=0, return_inverse=True)
    group = group.ravel()
    aspect = np.log(ratios[:, 0].astype(np.float64)) - np.log(ratios[:, 1].astype(np.float64))
    area = (bh * bw).astype(np.float64)
    n_groups = len(ratios)
    biggest = np.zeros(n_groups)
    np.maximum.at(biggest, group, area)
    first = np.full(n_groups, len(buckets))
    np.minimum.at(first, group, np.arange(len(buckets)))
    preference = np.empty(n_groups, dtype=np.int64)  # 0 = preferred on a tie
    preference[np.lexsort((first, -biggest))] = np.arange(n_groups)

    by_aspect = np.argsort(aspect)  # groups in ascending aspect
    sorted_aspect = aspect[by_aspect]
    a = np.log(width[valid]) - np.log(height[valid])
    pos = np.searchsorted(sorted_aspect, a)
    left = by_aspect[np.clip(pos - 1, 0, n_groups - 1)]
    right = by_aspect[np.clip(pos, 0, n_groups - 1)]
    d_left, d_right = np.abs(a - aspect[left]), np.abs(a - aspect[right])
    take_right = (d_right < d_left) | ((d_right == d_left) & (preference[right] < preference[left]))
    chosen = np.where(take_right, right, left)

    image_area = width[valid] * height[valid]
    result = np.empty(len(chosen), dtype=np.int64)
    for k in range(n_groups):  # a handful of aspect groups, never a loop over samples
        members = np.flatnonzero(group == k)
        members = members[np.lexsort((members, area[members]))]  # ascending area, then index
        tiers = members[np.r_[True, area[members][1:] != area[members][:-1]]]  # lowest index per area
        here = chosen == k
        if max_upscale is None:
            result[here] = tiers[-1]
            continue
        fits = np.searchsorted(area[tiers], max_upscale**2 * image_area[here], side="right") - 1
        result[here] = tiers[np.maximum(fits, 0)]  # none fits -> the smallest
    out[valid] = result
    return out


def choose_form(u: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """int64 index of a form per sample: the first j with ``u < cumsum(p)[j]`` (u in [0, 1),
    p summing to 1; a form with p = 0 is never chosen).

    Raises:
        ValueError: for negative p or a sum that is not 1 (within 1e-6).
    """
    p = np.asarray(probabilities, dtype=np.float64)
    if len(p) == 0 or (p < 0).any() or abs(p.sum() - 1) > 1e-6:
        raise ValueError(f"probabilities must be >= 0 and sum to 1, got {p.tolist()}")
    cumulative = np.cumsum(p) / p.sum()
    index = np.searchsorted(cumulative, np.asarray(u, dtype=np.float64), side="right")
    last = np.flatnonzero(p > 0)[-1]  # rounding at the top end must not pick a trailing zero form
    return np.minimum(index, last).astype(np.int64)
