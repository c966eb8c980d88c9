"""Concept balancing: per-sample factors that flatten the concept marginal (paper section 2.3-2.4).

One of:

* MetaCLIP (``metaclip_keep_prob``, Xu et al. 2023): a concept with ``n_c > t`` samples keeps
  each with probability ``t / n_c``; ``p_i = max_{c in i} min(1, t / n_c)``.
* Hierarchical MetaCLIP (``hierarchical_keep_prob``): the same, then each subtree ``a`` of the
  concept graph gets a budget ``T_a = t * k_a ** alpha`` (``k_a`` tagged concepts under it); a
  subtree whose expected kept mass ``E_a`` exceeds it is scaled by ``T_a / E_a``.
* Uniform marginal for SFT (``uniform_concept_weights``): concept-first sampling
  (``w_i = base_i * sum_{c in i} pi_c / n_c``) refined by EM steps minimising ``KL(pi || m)``,
  so that the weighted concept marginal ``m_c`` approaches ``pi_c ~ n_c ** temperature``
  (0: uniform), with the balancing factor varying at most ``max_ratio``-fold.

The concept marginal of a weighting (``concept_marginal``) counts a sample once per concept it
carries: ``m_c = sum_{i carries c} w_i / sum_{(i, c')} w_i``; ``marginal_summary`` reports its
entropy and Gini coefficient before and after balancing.
"""

from __future__ import annotations

import numpy as np

from engine.curation.concept_sets import ConceptSets
from engine.curation.sampling import check_weights

IPF_TOLERANCE = 1e-3  # uniform_concept_weights stops early once every m_c is within 0.1% of pi_c:
# below the noise of any concept count we could measure, and it saves most steps on easy sets


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
    base = check_weights(base, sets.n_samples, "base")
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


def concept_marginal(sets: ConceptSets, weights: np.ndarray) -> np.ndarray:
    """float64 (n_concepts,): share of concept c, ``sum_{i carries c} w_i / sum_{(i, c')} w_i``.

    Sums to 1; all zeros when no pair has a positive weight.
    """
    mass = sets.counts(check_weights(weights, sets.n_samples, "weights"))
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
