"""The Active Curation Engine's weight functions: filters, tilts, concept balancing, draws, buckets.

Pure numpy/pyarrow over compact arrays (no I/O); ``engine/manifest.py`` reads the tables, calls
these, and writes the manifest. Everything is vectorised so that 10M samples and ~30M
(sample, concept) pairs take seconds on two cores. A sample's weight is built in steps:

1. **Filters** (``range_mask``): keep ``minimum <= v <= maximum``; a missing score (NaN) is kept or
   dropped as the recipe says.
2. **Tilts** (``rank_tilt``): ``w *= exp(s * (r - 0.5))`` with ``r`` the mid-rank percentile of the
   score in [0, 1]; a soft preference that ignores the score's scale and outliers.
3. **Concept balancing**, one of:

   * MetaCLIP (``metaclip_keep_prob``, Xu et al. 2023): a concept with ``n_c > t`` samples keeps
     each with probability ``t / n_c``; ``p_i = max_{c in i} min(1, t / n_c)``.
   * Hierarchical MetaCLIP (``hierarchical_keep_prob``): the same, then each subtree ``a`` of the
     concept graph gets a budget ``T_a = t * k_a ** alpha`` (``k_a`` tagged concepts under it); a
     subtree whose expected kept mass ``E_a`` exceeds it is scaled by ``T_a / E_a``.
   * Uniform marginal for SFT (``uniform_concept_weights``): concept-first sampling
     (``w_i = base_i * sum_{c in i} pi_c / n_c``) refined by EM steps minimising ``KL(pi || m)``,
     so that the weighted concept marginal ``m_c`` approaches ``pi_c ~ n_c ** temperature``
     (0: uniform), with the balancing factor varying at most ``max_ratio``-fold.

4. **Draws**: ``keyed_uniform`` gives each sample a uniform that depends on (sample_id, seed, salt)
   only, so Bernoulli keeps (``u < p``) and caption forms (``choose_form``) are stable when the pool
   grows; ``weighted_draws`` expands weights into an epoch list without replacement per epoch.
5. **Buckets** (``nearest_bucket``): nearest aspect ratio in log space, then the resolution tier.

The concept marginal of a weighting (``concept_marginal``) counts a sample once per concept it
carries: ``m_c = sum_{i carries c} w_i / sum_{(i, c')} w_i``; ``marginal_summary`` reports its
entropy and Gini coefficient before and after balancing.
"""

from __future__ import annotations

import binascii
import hashlib
import string
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

IPF_TOLERANCE = 1e-3  # uniform_concept_weights stops early once every m_c is within 0.1% of pi_c:
# below the noise of any concept count we could measure, and it saves most steps on easy sets

_SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)  # splitmix64 constants (Steele et al. 2014)
_SPLITMIX_M1 = np.uint64(0xBF58476D1CE4E5B9)
_SPLITMIX_M2 = np.uint64(0x94D049BB133111EB)
_HEX_ID_CHARS = 32  # engine.ingest ids: blake2b-128 hex digests


@dataclass(frozen=True, eq=False)  # eq=False: the generated __eq__ would compare arrays ambiguously
class ConceptSets:
    """Which concepts each sample carries, as CSR: samples x concepts.

    Row ``i`` carries ``concept_ids[index[offsets[i]:offsets[i + 1]]]``, ascending and unique.
    """

    offsets: np.ndarray  # int64 (n_samples + 1,)
    index: np.ndarray  # int32 (n_pairs,) dense concept index into concept_ids
    concept_ids: np.ndarray  # int64 (n_concepts,), sorted ascending, unique

    @classmethod
    def from_lists(cls, column: pa.Array | pa.ChunkedArray) -> ConceptSets:
        """From an Arrow list<int64> column (null or [] = no concept); duplicate ids inside one
        list are removed (a sample carries a concept once), as are null ids.

        The dense index is a hash dictionary (Arrow ``dictionary_encode``, linear) re-ranked so
        that ``concept_ids`` is ascending, i.e. the same result as ``np.unique(values,
        return_inverse=True)`` without its 30M-element argsort.
        """
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        if not (pa.types.is_list(array.type) or pa.types.is_large_list(array.type)):
            raise TypeError(f"concept lists must be list<int64>, got {array.type}")
        n_samples = len(array)
        lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False)
        pair_row = np.repeat(np.arange(n_samples, dtype=np.int64), lengths.astype(np.int64))
        values = array.flatten()  # skips the children of null lists and honours slicing
        return cls.from_pairs(pair_row, values, n_samples)

    @classmethod
    def from_pairs(cls, pair_row: np.ndarray, values: pa.Array | np.ndarray, n_samples: int) -> ConceptSets:
        """From (sample row, concept id) pairs in any order (e.g. a tags table aligned to a pool);
        duplicate pairs and null ids are removed."""
        pair_row = np.asarray(pair_row, dtype=np.int64)
        values = values if isinstance(values, pa.Array) else pa.array(values, pa.int64())
        if values.null_count:
            valid = values.is_valid().to_numpy(zero_copy_only=False)
            values, pair_row = values.filter(pa.array(valid)), pair_row[valid]
        encoded = pc.dictionary_encode(values.cast(pa.int64()))
        dictionary = encoded.dictionary.to_numpy(zero_copy_only=False).astype(np.int64)
        order = np.argsort(dictionary)
        rank = np.empty(len(dictionary), dtype=np.int64)
        rank[order] = np.arange(len(dictionary))
        index = rank[encoded.indices.to_numpy(zero_copy_only=False)]
        n_concepts = len(dictionary)
        # One sortable key per pair puts each row's concepts in ascending order and exposes
        # duplicates; lists written sorted (the usual case) skip the sort.
        key = pair_row * max(n_concepts, 1) + index
        if len(key) > 1 and not np.all(key[1:] > key[:-1]):
            key = np.sort(key)  # not np.unique: numpy 2.3's takes ~100 s on 30M int64 (hash path)
            key = key[np.r_[True, key[1:] != key[:-1]]]
            pair_row = key // n_concepts
            index = key - pair_row * n_concepts
        offsets = np.zeros(n_samples + 1, dtype=np.int64)
        np.cumsum(np.bincount(pair_row, minlength=n_samples), out=offsets[1:])
        return cls(offsets=offsets, index=index.astype(np.int32), concept_ids=dictionary[order])

    @property
    def n_samples(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_concepts(self) -> int:
        return len(self.concept_ids)

    def lengths(self) -> np.ndarray:
        """int64 (n_samples,): number of concepts of each sample."""
        return np.diff(self.offsets)

    def pair_sample(self) -> np.ndarray:
        """int64 (n_pairs,): the sample row of each pair."""
        return np.repeat(np.arange(self.n_samples, dtype=np.int64), self.lengths())

    def counts(self, weights: np.ndarray | None = None) -> np.ndarray:
        """float64 (n_concepts,): sum of sample weights (or 1s) over the samples carrying each concept."""
        pair_weights = None if weights is None else np.repeat(np.asarray(weights, np.float64), self.lengths())
        return np.bincount(self.index, weights=pair_weights, minlength=self.n_concepts).astype(np.float64)

    def subset(self, mask: np.ndarray) -> ConceptSets:
        """The samples where ``mask`` (bool, n_samples) is true, in order; concept_ids unchanged."""
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n_samples,):
            raise ValueError(f"mask has shape {mask.shape}, expected ({self.n_samples},)")
        lengths = self.lengths()
        offsets = np.zeros(int(mask.sum()) + 1, dtype=np.int64)
        np.cumsum(lengths[mask], out=offsets[1:])
        return ConceptSets(offsets, self.index[np.repeat(mask, lengths)], self.concept_ids)

    def row_reduce(self, ufunc: np.ufunc, pair_values: np.ndarray, empty: float) -> np.ndarray:
        """float64 (n_samples,): ``ufunc.reduce`` of ``pair_values`` over each sample's pairs;
        ``empty`` for samples without a concept."""
        out = np.full(self.n_samples, empty, dtype=np.float64)
        rows = self.lengths() > 0
        if rows.any():  # reduceat misreads empty segments, so only non-empty rows' starts are passed
            out[rows] = ufunc.reduceat(pair_values, self.offsets[:-1][rows])
        return out


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


def metaclip_keep_prob(sets: ConceptSets, threshold: float, untagged: float = 1.0) -> np.ndarray:
    """MetaCLIP balancing (Xu et al. 2023): per-sample keep probabilities, float64 (n_samples,).

    A concept with ``n_c > t`` samples keeps each with probability ``t / n_c``:
    ``q_c = min(1, t / n_c)``; ``p_i = max_{c in i} q_c`` (one draw per sample: MetaCLIP's one draw
    per matched entry would give ``1 - prod (1 - q_c)``, which over-keeps multi-tag samples);
    samples without concepts get ``untagged``.
    """
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    q = _leaf_rule(sets.counts(), threshold)
    return sets.row_reduce(np.maximum, q[sets.index], untagged)


def hierarchical_keep_prob(
    sets: ConceptSets,
    ancestors: tuple[np.ndarray, np.ndarray],
    threshold: float,
    alpha: float,
    untagged: float = 1.0,
) -> np.ndarray:
    """MetaCLIP generalised to the concept hierarchy with per-subtree budgets; float64 (n_samples,).

    ``ancestors = (concept_index, ancestor_index)``: every pair (c, a) with a a proper ancestor of
    c, as dense indices into a concept space whose first ``sets.n_concepts`` entries are
    ``sets.concept_ids`` (an ancestor carried by no sample may have a larger index). Duplicate
    and self pairs are ignored. With t the threshold and n_c direct counts:

    * ``q_c = min(1, t / n_c)`` (the leaf rule, as ``metaclip_keep_prob``);
    * ``E_a = sum_{tagged c in subtree(a)} n_c * q_c = sum min(n_c, t)``: expected kept tag mass of
      the subtree of a (a included). It counts a sample once per tag, an approximation when a
      sample carries several concepts of one subtree;
    * ``k_a``: number of tagged concepts in the subtree of a (a included if tagged);
    * ``T_a = t * k_a ** alpha``: the subtree's budget. alpha = 1 adds no constraint
      (``E_a <= t * k_a`` always: exactly MetaCLIP); alpha < 1 caps broad subtrees (``animal``
      with many tagged children) harder;
    * ``f_a = min(1, T_a / E_a)``; ``g_c = q_c * min_{proper ancestors a of c} f_a`` (1 when none);
    * ``p_i = max_{c in i} g_c``; samples without concepts get ``untagged``.
    """
    if threshold <= 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    child = np.asarray(ancestors[0], dtype=np.int64)
    parent = np.asarray(ancestors[1], dtype=np.int64)
    if child.shape != parent.shape:
        raise ValueError("ancestors: concept_index and ancestor_index differ in length")
    if len(child) and min(child.min(), parent.min()) < 0:
        raise ValueError("ancestors: negative concept index")
    size = max(
        sets.n_concepts,
        int(child.max()) + 1 if len(child) else 0,
        int(parent.max()) + 1 if len(parent) else 0,
    )
    if len(child):  # drop self and duplicate pairs so that a subtree counts each concept once
        key = np.sort((child * size + parent)[child != parent])
        key = key[np.r_[True, key[1:] != key[:-1]]]
        child, parent = key // size, key % size
    counts = np.zeros(size)
    counts[: sets.n_concepts] = sets.counts()
    tagged = (counts > 0).astype(np.float64)
    q = _leaf_rule(counts, threshold)
    kept = np.minimum(counts, threshold)  # n_c * q_c, exact for integer counts and threshold
    mass = kept + np.bincount(parent, weights=kept[child], minlength=size)  # E_a
    breadth = tagged + np.bincount(parent, weights=tagged[child], minlength=size)  # k_a
    budget = threshold * breadth**alpha  # T_a
    f = np.ones(size)
    over = mass > budget * (1 + 1e-12)  # alpha = 1 with a fractional t: rounding must not bite
    f[over] = budget[over] / mass[over]
    g = q.copy()
    if len(child):
        cap = np.ones(size)
        np.minimum.at(cap, child, f[parent])  # concept-level, so ufunc.at's speed is no concern
        g *= cap
    return sets.row_reduce(np.maximum, g[sets.index], untagged)


def _leaf_rule(counts: np.ndarray, threshold: float) -> np.ndarray:
    """q_c = min(1, t / n_c); 1 for concepts without samples (they never matter)."""
    q = np.ones(len(counts))
    over = counts > threshold
    q[over] = threshold / counts[over]
    return q


def uniform_concept_weights(
    sets: ConceptSets,
    base: np.ndarray,
    temperature: float = 0.0,
    iterations: int = 30,
    max_ratio: float = 100.0,
    untagged: float = 0.0,
) -> np.ndarray:
    """SFT rule: per-sample weights (float64 >= 0) whose concept marginal approaches a target.

    Marginal ``m_c = sum_{i carries c} w_i / sum_{c'} sum_{i carries c'} w_i``; target
    ``pi_c ~ n_c ** temperature`` over the concepts carried by a sample with ``base > 0``
    (temperature 0: uniform over them; 1: the natural marginal). ``w_i = base_i * f_i`` where:

    * start, concept-first sampling (pick a concept from pi, then one of its n_c samples
      uniformly): ``f_i = sum_{c in i} pi_c / n_c``;
    * then EM steps that minimise ``KL(pi || m)`` (the weights are the mixing proportions of a
      mixture whose components are the samples' concept sets; each step cannot increase the
      divergence): ``f_i *= (1 / |i|) * sum_{c in i} pi_c / m_c``;
    * after every step ``f`` is scaled to max 1 and raised to at least ``1 / max_ratio``, so the
      balancing factor varies at most ``max_ratio``-fold and no sample dominates (with a constant
      base, ``max(w) / min(w) <= max_ratio``; a base's own spread multiplies in);
    * up to ``iterations`` steps, fewer once every ``|m_c / pi_c - 1| < IPF_TOLERANCE``.

    Concept-first sampling alone flattens real tag sets far more than per-concept factors
    combined by a mean (a sample carrying a frequent and a rare concept is drawn through the
    rare one); the EM steps then correct for what co-occurring concepts add. On the demo's
    openclipart tags (4.4 concepts per sample) the normalised entropy goes 0.84 -> 0.92 at the
    start and 0.94 after 10 steps under max_ratio 50.

    Samples without concepts get ``base_i * untagged * (mean w of the fitted samples)``. The result
    is normalised to mean 1 over the positive weights (all zeros if none is positive).
    """
    base = _check_weights(base, sets.n_samples, "base")
    if max_ratio < 1:
        raise ValueError(f"max_ratio must be >= 1, got {max_ratio}")
    lengths = sets.lengths()
    fitted = (lengths > 0) & (base > 0)
    sub = sets if fitted.all() else sets.subset(fitted)
    b = base[fitted]
    n = sub.counts()
    live = n > 0
    weights = np.zeros(sets.n_samples)
    if live.any():
        target = np.zeros(sets.n_concepts)
        log_target = temperature * np.log(n[live])
        target[live] = np.exp(log_target - log_target.max())
        target /= target.sum()
        pair_rows = sub.pair_sample()
        pair_concepts = sub.index.astype(np.intp)  # take/bincount would cast int32 on every call
        inverse_length = 1.0 / sub.lengths()
        pair_buffer = np.empty(len(pair_concepts))

        def per_sample_sum(per_concept: np.ndarray) -> np.ndarray:
            np.take(per_concept, pair_concepts, out=pair_buffer)
            return np.bincount(pair_rows, weights=pair_buffer, minlength=len(b))

        def capped(f: np.ndarray) -> np.ndarray:
            f /= f.max()
            return np.maximum(f, 1.0 / max_ratio, out=f)

        with np.errstate(divide="ignore", invalid="ignore"):
            f = capped(per_sample_sum(np.where(live, target / n, 0.0)))
            for _ in range(iterations):
                np.take(b * f, pair_rows, out=pair_buffer)
                m = np.bincount(pair_concepts, weights=pair_buffer, minlength=sets.n_concepts)
                m /= m.sum()
                ratio = np.where(live, target / m, 0.0)
                if np.all(np.abs(ratio[live] - 1.0) < IPF_TOLERANCE):
                    break  # w fits the target
                f = capped(f * per_sample_sum(ratio) * inverse_length)
        weights[fitted] = b * f
    bare = lengths == 0
    tagged_mean = weights[fitted].mean() if fitted.any() else 1.0
    weights[bare] = base[bare] * untagged * tagged_mean
    positive = weights > 0
    if positive.any():
        weights /= weights[positive].mean()
    return weights


def _check_weights(weights: np.ndarray, n: int, name: str) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (n,):
        raise ValueError(f"{name} has shape {weights.shape}, expected ({n},)")
    if not np.all(np.isfinite(weights)) or (weights < 0).any():
        raise ValueError(f"{name} must be finite and >= 0")
    return weights


def concept_marginal(sets: ConceptSets, weights: np.ndarray) -> np.ndarray:
    """float64 (n_concepts,): share of concept c, ``sum_{i carries c} w_i / sum_{(i, c')} w_i``.

    Sums to 1; all zeros when no pair has a positive weight.
    """
    mass = sets.counts(_check_weights(weights, sets.n_samples, "weights"))
    total = mass.sum()
    return mass / total if total > 0 else np.zeros(sets.n_concepts)


def entropy(p: np.ndarray) -> float:
    """Shannon entropy in nats, ``-sum p_c log p_c`` over ``p_c > 0`` after normalising p to sum 1
    (0.0 for an empty or all-zero p)."""
    p = np.asarray(p, dtype=np.float64)
    p = p[p > 0]
    if len(p) == 0:
        return 0.0
    p = p / p.sum()
    return float(-(p * np.log(p)).sum())


def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative values: ``sum_i (2i - k - 1) x_(i) / (k * sum x)`` with
    ``x_(1) <= ... <= x_(k)``; 0 = all equal, -> 1 = one value holds everything (0.0 when empty or
    all zero)."""
    x = np.sort(np.asarray(x, dtype=np.float64))
    k, total = len(x), x.sum() if len(x) else 0.0
    if k == 0 or total <= 0:
        return 0.0
    i = np.arange(1, k + 1)
    return float(((2 * i - k - 1) * x).sum() / (k * total))


def marginal_summary(
    concept_ids: np.ndarray, shares: np.ndarray, top: int = 10, names: dict[int, str] | None = None
) -> dict:
    """A JSON-stable summary of a concept marginal (floats rounded to 6 decimals).

    ``{"concepts": number with share > 0, "entropy": entropy(shares) in nats,
    "normalized_entropy": entropy / log(concepts) (1.0 = uniform; 1.0 for <= 1 concept),
    "gini": gini(shares > 0), "top": [{"concept_id", "name" (if names), "share"}, ...]}``, the top
    ``top`` concepts with share > 0 by share, ties by ascending id.
    """
    concept_ids = np.asarray(concept_ids, dtype=np.int64)
    shares = np.asarray(shares, dtype=np.float64)
    present = shares > 0
    k = int(present.sum())
    h = entropy(shares)
    order = np.lexsort((concept_ids[present], -shares[present]))[:top]
    rows = []
    for cid, share in zip(concept_ids[present][order], shares[present][order], strict=True):
        row = {"concept_id": int(cid)}
        if names is not None:
            row["name"] = names.get(int(cid))
        row["share"] = round(float(share), 6)
        rows.append(row)
    return {
        "concepts": k,
        "entropy": round(h, 6),
        "normalized_entropy": round(h / np.log(k), 6) if k > 1 else 1.0,
        "gini": round(gini(shares[present]), 6),
        "top": rows,
    }


def keyed_uniform(sample_ids: pa.Array | pa.ChunkedArray, seed: int, salt: str) -> np.ndarray:
    """float64 in [0, 1), one per sample, a function of (sample_id, seed, salt) only.

    Independent of row order and of the other rows, so a sample's draw is stable when the pool
    grows. ``h`` = the id's first 16 hex digits as uint64 when the id is 32 hex digits (engine.ingest's
    blake2b ids; either case), else the first 8 bytes (big-endian) of ``blake2b(id)``;
    integer ids are used as they are. Then ``u = splitmix64(h XOR k) >> 11 / 2**53`` with
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


def weighted_draws(
    weights: np.ndarray, n_draws: int, epoch_size: int, repeat_cap: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """An epoch-expanded list of up to ``n_draws`` draws: (row int64, epoch int32) in draw order.

    Epoch e = 0, 1, ... draws ``min(epoch_size, rows still eligible, draws left)`` rows weighted
    WITHOUT replacement by Efraimidis-Spirakis: key ``log(u_i) / w_i`` with u from
    ``np.random.default_rng([seed, e])`` (one per row), the rows with the largest keys, in
    descending key order. A row is eligible while ``w > 0`` and it was drawn fewer than
    ``repeat_cap`` times (None: no cap). Stops at ``n_draws`` or when no row is eligible (then
    fewer draws; the caller reports it). Each epoch costs O(rows).
    """
    weights = _check_weights(weights, len(np.asarray(weights)), "weights")
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
        u = np.random.default_rng([seed, epoch]).random(len(weights))[candidates]
        keys = np.log1p(-u) / weights[candidates]  # log(1 - u): u = 0 is possible, 1 - u > 0
        top = np.argpartition(-keys, k - 1)[:k] if k < len(keys) else np.arange(len(keys))
        top = np.sort(top)  # ascending row, so that the stable sort below breaks key ties by row
        top = top[np.argsort(-keys[top], kind="stable")]  # descending key
        chosen = candidates[top]
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
