"""engine/sampling.py: filters, tilts, concept balancing, keyed draws, epochs, buckets, forms."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pytest

from engine.curation.balancing import (
    concept_marginal,
    entropy,
    gini,
    hierarchical_keep_prob,
    marginal_summary,
    metaclip_keep_prob,
    uniform_concept_weights,
)
from engine.curation.concept_sets import ConceptSets
from engine.curation.sampling import (
    choose_form,
    keyed_uniform,
    nearest_bucket,
    range_mask,
    rank_tilt,
    weighted_draws,
)

BIG = 2**40 + 7  # a mined concept id (engine.graph: >= 2**40)


def rows_of(sets: ConceptSets) -> list[list[int]]:
    """The concept ids of each sample, as Python lists (the test's view of the CSR)."""
    return [
        sets.concept_ids[sets.index[a:b]].tolist()
        for a, b in zip(sets.offsets[:-1], sets.offsets[1:], strict=True)
    ]


def zipf_sets(n_samples: int, n_concepts: int, seed: int, max_tags: int = 3) -> ConceptSets:
    """A skewed synthetic tagging: concept c drawn with probability ~ 1 / (c + 1), 0..max_tags tags."""
    rng = np.random.default_rng(seed)
    p = 1.0 / np.arange(1, n_concepts + 1)
    p /= p.sum()
    n_tags = rng.integers(0, max_tags + 1, n_samples)
    lists = [(rng.choice(n_concepts, size=k, p=p) * 10 + 3).tolist() for k in n_tags]
    return ConceptSets.from_lists(pa.array(lists, type=pa.list_(pa.int64())))


# ConceptSets ------------------------------------------------------------------------------------


def test_from_lists_sorts_dedupes_and_skips_missing():
    column = pa.array([[BIG, 5, 5], None, [], [9, None, 5], [BIG]], type=pa.list_(pa.int64()))
    sets = ConceptSets.from_lists(column)
    assert sets.concept_ids.tolist() == [5, 9, BIG]
    assert sets.n_samples == 5 and sets.n_concepts == 3
    assert rows_of(sets) == [[5, BIG], [], [], [5, 9], [BIG]]
    assert sets.offsets.dtype == np.int64 and sets.index.dtype == np.int32
    assert sets.pair_sample().tolist() == [0, 0, 3, 3, 4]
    assert sets.counts().tolist() == [2.0, 1.0, 2.0]
    assert sets.counts(np.array([1.0, 10, 10, 0.5, 100])).tolist() == [1.5, 0.5, 101.0]


def test_from_lists_chunked_and_sliced_match_plain():
    lists = [[3, 1], None, [2], [1, 2, 3], [], [7]]
    plain = ConceptSets.from_lists(pa.array(lists, type=pa.list_(pa.int64())))
    chunked = ConceptSets.from_lists(
        pa.chunked_array(
            [pa.array(lists[:2], pa.list_(pa.int64())), pa.array(lists[2:], pa.list_(pa.int64()))]
        )
    )
    assert rows_of(chunked) == rows_of(plain) == [[1, 3], [], [2], [1, 2, 3], [], [7]]
    sliced = ConceptSets.from_lists(pa.array(lists, type=pa.large_list(pa.int64())).slice(2, 3))
    assert rows_of(sliced) == [[2], [1, 2, 3], []]
    assert sliced.concept_ids.tolist() == [1, 2, 3]


def test_from_lists_empty_inputs():
    for column in (pa.array([], type=pa.list_(pa.int64())), pa.array([None, []], type=pa.list_(pa.int64()))):
        sets = ConceptSets.from_lists(column)
        assert sets.n_concepts == 0 and len(sets.index) == 0
        assert sets.counts().shape == (0,)
        assert rows_of(sets) == [[]] * len(column)
    with pytest.raises(TypeError):
        ConceptSets.from_lists(pa.array([1, 2]))


def test_subset_keeps_rows_and_concept_space():
    sets = ConceptSets.from_lists(pa.array([[1, 2], [], [3], [2]], type=pa.list_(pa.int64())))
    sub = sets.subset(np.array([True, True, False, True]))
    assert rows_of(sub) == [[1, 2], [], [2]]
    assert sub.concept_ids.tolist() == [1, 2, 3]
    assert sub.counts().tolist() == [1.0, 2.0, 0.0]
    assert sets.subset(np.zeros(4, bool)).n_samples == 0


# Filters and tilts ------------------------------------------------------------------------------


def test_range_mask_bounds_and_missing():
    v = np.array([0.1, 0.5, np.nan, 0.9, 0.2])
    assert range_mask(v, 0.2, 0.9).tolist() == [False, True, True, True, True]
    assert range_mask(v, 0.2, 0.9, missing="drop").tolist() == [False, True, False, True, True]
    assert range_mask(v, minimum=0.5, missing="drop").tolist() == [False, True, False, True, False]
    assert range_mask(v, maximum=0.2).tolist() == [True, False, True, False, True]
    assert range_mask(np.full(3, np.nan), 0, 1, missing="drop").tolist() == [False] * 3
    assert range_mask(np.zeros(0), 0, 1).shape == (0,)
    with pytest.raises(ValueError):
        range_mask(v, 0, 1, missing="fill")


def test_rank_tilt_mid_ranks_by_hand():
    v = np.array([3.0, 1.0, 2.0, np.nan, 2.0])
    # sorted non-NaN: 1, 2, 2, 3 -> 0-based mid-ranks 0, 1.5, 1.5, 3 -> r = 0, 0.5, 0.5, 1
    r = np.array([1.0, 0.0, 0.5, 0.5, 0.5])
    expected = np.exp(2.0 * (r - 0.5))
    expected[3] = 1.0
    np.testing.assert_allclose(rank_tilt(v, 2.0), expected, rtol=1e-12)


def test_rank_tilt_properties():
    rng = np.random.default_rng(0)
    v = rng.normal(size=1000)
    t = rank_tilt(v, 3.0)
    assert np.all(np.diff(t[np.argsort(v)]) > 0)  # monotone in the score
    assert t.min() == pytest.approx(np.exp(-1.5)) and t.max() == pytest.approx(np.exp(1.5))
    np.testing.assert_array_equal(rank_tilt(v * 1000 + 5, 3.0), t)  # scale-free
    outlier = v.copy()
    outlier[np.argmax(v)] = 1e12
    np.testing.assert_array_equal(rank_tilt(outlier, 3.0), t)  # an outlier only keeps its rank
    np.testing.assert_allclose(rank_tilt(v, -3.0), 1 / t)
    assert np.all(rank_tilt(v, 0.0) == 1.0)
    assert rank_tilt(np.array([np.nan, 4.0, np.nan]), 5.0).tolist() == [1.0, 1.0, 1.0]
    assert rank_tilt(np.full(4, np.nan), 5.0).tolist() == [1.0] * 4
    assert rank_tilt(np.full(4, 7.0), 5.0).tolist() == [1.0] * 4  # all tied: r = 0.5
    assert rank_tilt(np.zeros(0), 1.0).shape == (0,)


# Concept balancing ------------------------------------------------------------------------------


def test_metaclip_keep_prob_by_hand():
    # concept 10 carried by 4 samples, 20 by 1; t = 2 -> q_10 = 1/2, q_20 = 1
    column = pa.array([[10], [10], [10], [10, 20], [], None], type=pa.list_(pa.int64()))
    sets = ConceptSets.from_lists(column)
    p = metaclip_keep_prob(sets, threshold=2, untagged=0.25)
    assert p.tolist() == [0.5, 0.5, 0.5, 1.0, 0.25, 0.25]
    assert metaclip_keep_prob(sets, threshold=100).tolist() == [1.0] * 6
    with pytest.raises(ValueError):
        metaclip_keep_prob(sets, threshold=0)


def test_metaclip_keeps_about_t_per_concept():
    rng = np.random.default_rng(1)
    concept = rng.zipf(1.5, 200_000) % 50
    sets = ConceptSets.from_lists(pa.array(concept[:, None].tolist(), type=pa.list_(pa.int64())))
    t = 500
    p = metaclip_keep_prob(sets, t)
    kept = sets.counts(p)  # expected kept samples per concept, one tag each
    np.testing.assert_allclose(kept, np.minimum(sets.counts(), t))
    after, before = concept_marginal(sets, p), concept_marginal(sets, np.ones(sets.n_samples))
    assert entropy(after) > entropy(before)


def random_tree(n_nodes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(concept, proper ancestor) pairs of a random tree over 0..n_nodes-1 rooted at 0."""
    rng = np.random.default_rng(seed)
    parent = [-1] + [int(rng.integers(0, i)) for i in range(1, n_nodes)]
    pairs = []
    for c in range(n_nodes):
        a = parent[c]
        while a >= 0:
            pairs.append((c, a))
            a = parent[a]
    pairs = np.array(pairs)
    return pairs[:, 0], pairs[:, 1]


def test_hierarchical_alpha_one_is_metaclip():
    sets = zipf_sets(5000, 40, seed=2)
    # ancestors in the dense space of sets, plus 10 untagged inner nodes above it
    child, parent = random_tree(sets.n_concepts + 10, seed=3)
    relabel = np.r_[np.arange(sets.n_concepts, sets.n_concepts + 10), np.arange(sets.n_concepts)]
    ancestors = (relabel[child], relabel[parent])  # roots are the untagged nodes
    for t in (5, 50, 400, 7.3):
        np.testing.assert_array_equal(
            hierarchical_keep_prob(sets, ancestors, t, alpha=1.0, untagged=0.3),
            metaclip_keep_prob(sets, t, untagged=0.3),
        )
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64))
    np.testing.assert_array_equal(
        hierarchical_keep_prob(sets, empty, 50, alpha=0.5), metaclip_keep_prob(sets, 50)
    )


def test_hierarchical_alpha_below_one_caps_a_broad_subtree():
    # 30 "animal" species (ids 100..129) with 40 samples each under an untagged "animal" node;
    # 3 "tool" concepts (ids 200..202) with 40 samples each under an untagged "tool" node
    species, tools = list(range(100, 130)), [200, 201, 202]
    lists = [[c] for c in species + tools for _ in range(40)]
    sets = ConceptSets.from_lists(pa.array(lists, type=pa.list_(pa.int64())))
    animal, tool = sets.n_concepts, sets.n_concepts + 1  # indices beyond the tagged space
    dense = {int(c): i for i, c in enumerate(sets.concept_ids)}
    child = np.array([dense[c] for c in species + tools])
    parent = np.array([animal] * len(species) + [tool] * len(tools))
    share = {}
    for alpha in (1.0, 0.5):
        p = hierarchical_keep_prob(sets, (child, parent), threshold=20, alpha=alpha)
        m = concept_marginal(sets, p)
        share[alpha] = m[child[: len(species)]].sum()
        assert np.all(p >= 0) and np.all(p <= 1)
    assert share[1.0] == pytest.approx(30 / 33)
    # alpha = 0.5: kept mass 20 * k**0.5 per subtree -> animal share sqrt(30) / (sqrt(30) + sqrt(3))
    assert share[0.5] == pytest.approx(30**0.5 / (30**0.5 + 3**0.5))
    assert share[0.5] < share[1.0] - 0.1
    # alpha = 0.5: animal budget 20 * 30**0.5 against mass 20 * 30, tool 20 * 3**0.5 against 60
    p = hierarchical_keep_prob(sets, (child, parent), threshold=20, alpha=0.5)
    assert p[0] == pytest.approx(0.5 * 30**0.5 / 30)
    assert p[-1] == pytest.approx(0.5 * 3**0.5 / 3)


def test_uniform_weights_flatten_a_skewed_marginal():
    sets = zipf_sets(20_000, 60, seed=4)
    base = np.ones(sets.n_samples)
    w = uniform_concept_weights(sets, base, max_ratio=1e6)
    before, after = concept_marginal(sets, base), concept_marginal(sets, w)
    k = sets.n_concepts
    assert entropy(before) < 0.9 * np.log(k)
    assert entropy(after) > entropy(before)
    assert entropy(after) > 0.99 * np.log(k)
    assert np.all(np.isfinite(w)) and np.all(w >= 0)
    assert w[w > 0].mean() == pytest.approx(1.0)
    assert np.all(w[sets.lengths() == 0] == 0)  # untagged = 0 by default
    np.testing.assert_array_equal(w, uniform_concept_weights(sets, base, max_ratio=1e6))  # deterministic
    more = uniform_concept_weights(sets, base, iterations=60, max_ratio=1e6)
    assert entropy(concept_marginal(sets, more)) >= entropy(after) - 1e-9


def test_uniform_weights_ratio_cap_and_temperature():
    sets = zipf_sets(20_000, 60, seed=5)
    base = np.ones(sets.n_samples)
    capped = uniform_concept_weights(sets, base, max_ratio=5.0)
    positive = capped[capped > 0]
    assert positive.max() / positive.min() <= 5.0 * (1 + 1e-9)
    free = uniform_concept_weights(sets, base, max_ratio=1e6)
    assert entropy(concept_marginal(sets, capped)) < entropy(concept_marginal(sets, free))
    # temperature 1 targets the natural marginal: the weights stay close to the base
    natural = uniform_concept_weights(sets, base, temperature=1.0, max_ratio=1e6)
    np.testing.assert_allclose(concept_marginal(sets, natural), concept_marginal(sets, base), atol=2e-3)


def test_uniform_weights_base_and_untagged():
    column = pa.array([[1], [1], [1], [1], [2], [], None, [2]], type=pa.list_(pa.int64()))
    sets = ConceptSets.from_lists(column)
    base = np.array([1.0, 1, 1, 1, 1, 2, 1, 0])
    w = uniform_concept_weights(sets, base, untagged=0.5)
    assert w[7] == 0  # base 0 stays 0
    assert concept_marginal(sets, w) == pytest.approx([0.5, 0.5], abs=1e-3)
    tagged_mean = w[:5].mean()
    assert w[5] == pytest.approx(2 * 0.5 * tagged_mean) and w[6] == pytest.approx(0.5 * tagged_mean)
    assert w[w > 0].mean() == pytest.approx(1.0)
    # nothing to fit: no concepts at all, or no positive base
    bare = ConceptSets.from_lists(pa.array([None, []], type=pa.list_(pa.int64())))
    assert uniform_concept_weights(bare, np.array([1.0, 3.0]), untagged=1.0).tolist() == [0.5, 1.5]
    assert uniform_concept_weights(sets, np.zeros(8)).tolist() == [0.0] * 8
    with pytest.raises(ValueError):
        uniform_concept_weights(sets, np.full(8, np.nan))


def test_concept_marginal_and_summary():
    sets = ConceptSets.from_lists(pa.array([[1, 2], [2], [3], []], type=pa.list_(pa.int64())))
    m = concept_marginal(sets, np.array([1.0, 1, 2, 5]))
    np.testing.assert_allclose(m, [1 / 5, 2 / 5, 2 / 5])
    assert concept_marginal(sets, np.zeros(4)).tolist() == [0.0, 0.0, 0.0]
    summary = marginal_summary(sets.concept_ids, m, top=2, names={1: "cat", 2: "dog"})
    assert summary["concepts"] == 3
    assert summary["entropy"] == round(entropy(m), 6)
    assert summary["normalized_entropy"] == round(entropy(m) / np.log(3), 6)
    assert summary["top"] == [
        {"concept_id": 2, "name": "dog", "share": 0.4},
        {"concept_id": 3, "name": None, "share": 0.4},
    ]
    assert json.loads(json.dumps(summary)) == summary
    uniform = marginal_summary(np.arange(4), np.full(4, 0.25))
    assert uniform["normalized_entropy"] == 1.0 and uniform["gini"] == 0.0 and "name" not in uniform["top"][0]
    one = marginal_summary(np.array([7, 8]), np.array([0.0, 1.0]))
    assert one["concepts"] == 1 and one["normalized_entropy"] == 1.0 and one["entropy"] == 0.0
    assert marginal_summary(np.zeros(0), np.zeros(0))["top"] == []


def test_entropy_and_gini_by_hand():
    assert entropy(np.array([0.5, 0.5, 0.0])) == pytest.approx(np.log(2))
    assert entropy(np.array([2.0, 2.0])) == pytest.approx(np.log(2))  # normalised first
    assert entropy(np.zeros(3)) == 0.0
    # sorted [1, 3]: ((2*1 - 3) * 1 + (2*2 - 3) * 3) / (2 * 4) = 0.25
    assert gini(np.array([3.0, 1.0])) == pytest.approx(0.25)
    assert gini(np.ones(5)) == 0.0 and gini(np.zeros(0)) == 0.0
    assert gini(np.r_[np.zeros(99), 1.0]) == pytest.approx(0.99)


# Keyed draws ------------------------------------------------------------------------------------


def hex_ids(n: int, seed: int = 0) -> list[str]:
    return [hashlib.blake2b(f"{seed}:{i}".encode(), digest_size=16).hexdigest() for i in range(n)]


def test_keyed_uniform_depends_on_id_seed_salt_only():
    ids = hex_ids(2000)
    u = keyed_uniform(pa.array(ids), seed=1, salt="keep")
    assert u.dtype == np.float64 and np.all((u >= 0) & (u < 1))
    perm = np.random.default_rng(0).permutation(len(ids))
    np.testing.assert_array_equal(keyed_uniform(pa.array([ids[i] for i in perm]), 1, "keep"), u[perm])
    np.testing.assert_array_equal(keyed_uniform(pa.array(ids[:10]), 1, "keep"), u[:10])  # pool grows
    assert not np.allclose(keyed_uniform(pa.array(ids), 2, "keep"), u)
    assert not np.allclose(keyed_uniform(pa.array(ids), 1, "form"), u)
    assert np.corrcoef(keyed_uniform(pa.array(ids), 2, "keep"), u)[0, 1] == pytest.approx(0, abs=0.1)
    hist = np.bincount((u * 10).astype(int), minlength=10)
    assert hist.min() > 150 and hist.max() < 250  # 200 expected per decile


def test_keyed_uniform_fast_and_slow_paths_agree():
    ids = hex_ids(50)
    fast = keyed_uniform(pa.array(ids), 3, "s")
    # one odd id sends its chunk down the per-id loop; the hex ids must draw the same numbers
    mixed = keyed_uniform(pa.array([*ids, "not-a-hex-id"]), 3, "s")
    np.testing.assert_array_equal(mixed[:-1], fast)
    chunked = pa.chunked_array([pa.array(ids[:20]), pa.array(ids[20:])])
    np.testing.assert_array_equal(keyed_uniform(chunked, 3, "s"), fast)
    np.testing.assert_array_equal(keyed_uniform(pa.array(ids, type=pa.large_string()), 3, "s"), fast)
    np.testing.assert_array_equal(keyed_uniform(pa.array(ids).slice(5, 10), 3, "s"), fast[5:15])
    # a 32-character id with a non-hex digit (or a space) is hashed, in a chunk of hex ids too
    odd = ["g" * 32, " " * 32]
    with_odd = keyed_uniform(pa.array([*ids, *odd]), 3, "s")
    np.testing.assert_array_equal(with_odd[:-2], fast)
    other = keyed_uniform(pa.array(["a", *odd, ids[0].upper(), "a"]), 3, "s")
    assert other[0] == other[4] and len(set(other[:3].tolist())) == 3
    assert other[3] == fast[0]  # hex digits in either case parse to the same number
    ints = keyed_uniform(pa.array([5, 6, 5]), 3, "s")
    assert ints[0] == ints[2] != ints[1]
    assert keyed_uniform(pa.array([], type=pa.string()), 3, "s").shape == (0,)
    with pytest.raises(ValueError):
        keyed_uniform(pa.array([ids[0], None]), 3, "s")


# Epochs -----------------------------------------------------------------------------------------


def test_weighted_draws_follow_weights():
    weights = np.array([1.0, 2.0, 3.0, 4.0, 0.0])
    rows, epochs = weighted_draws(weights, n_draws=4000, epoch_size=1, repeat_cap=None, seed=0)
    assert len(rows) == 4000 and rows.dtype == np.int64 and epochs.dtype == np.int32
    assert epochs.tolist() == list(range(4000))  # one draw per epoch
    freq = np.bincount(rows, minlength=5) / len(rows)
    np.testing.assert_allclose(freq, weights / weights.sum(), atol=0.03)  # ~4 standard errors
    again = weighted_draws(weights, n_draws=4000, epoch_size=1, repeat_cap=None, seed=0)
    np.testing.assert_array_equal(again[0], rows)
    assert not np.array_equal(weighted_draws(weights, 4000, 1, None, seed=1)[0], rows)


def test_weighted_draws_epochs_and_cap():
    weights = np.r_[np.linspace(0.1, 1.0, 50), 0.0, 0.0]
    rows, epochs = weighted_draws(weights, n_draws=10_000, epoch_size=30, repeat_cap=3, seed=7)
    assert len(rows) == 150  # 50 positive rows x cap 3: fewer than asked
    assert np.bincount(rows, minlength=52).tolist() == [3] * 50 + [0, 0]
    assert np.all(np.diff(epochs) >= 0)
    for e in np.unique(epochs):  # without replacement inside an epoch
        assert len(np.unique(rows[epochs == e])) == (epochs == e).sum() <= 30
    # the heavy rows are exhausted first: the first epoch's rows are heavier than average
    assert weights[rows[epochs == 0]].mean() > weights[:50].mean()
    partial = weighted_draws(weights, n_draws=45, epoch_size=30, repeat_cap=None, seed=7)
    assert np.bincount(partial[1]).tolist() == [30, 15]
    assert weighted_draws(np.zeros(3), 5, 2, None, 0)[0].shape == (0,)
    assert weighted_draws(np.zeros(0), 5, 2, None, 0)[0].shape == (0,)
    with pytest.raises(ValueError):
        weighted_draws(np.array([1.0, -1.0]), 5, 2, None, 0)


# Buckets and forms ------------------------------------------------------------------------------


def test_nearest_bucket_aspect_then_tier():
    buckets = np.array([[1024, 1024], [768, 1344], [1344, 768], [512, 512], [384, 672]])
    width = np.array([1000, 1920, 1080, 600, 100, 0, 640, np.nan])
    height = np.array([1000, 1080, 1920, 600, 100, 50, 360, 10])
    # no cap: the largest tier of the nearest aspect
    assert nearest_bucket(width, height, buckets).tolist() == [0, 1, 2, 0, 0, -1, 1, -1]
    # cap 1.0 (no upscaling): 1000x1000 does not fill 1024x1024 -> 512x512; 1920x1080 fills
    # 768x1344; 100x100 fits no square -> the smallest square; 640x360 (230400 px) fits no 7:4
    # bucket (384x672 = 258048 px) -> the smallest 7:4
    assert nearest_bucket(width, height, buckets, max_upscale=1.0).tolist() == [3, 1, 2, 3, 3, -1, 4, -1]
    # cap 1.1: 1000x1000 may grow to 1.21e6 px >= 1024x1024
    assert nearest_bucket(np.array([1000]), np.array([1000]), buckets, max_upscale=1.1).tolist() == [0]


def test_nearest_bucket_ties():
    # a square image is equally far (in log aspect) from 4:3 and 3:4
    same_area = np.array([[768, 1024], [1024, 768]])
    assert nearest_bucket(np.array([500]), np.array([500]), same_area).tolist() == [0]
    bigger_second = np.array([[768, 1024], [1536, 1152]])
    assert nearest_bucket(np.array([500]), np.array([500]), bigger_second).tolist() == [1]
    duplicates = np.array([[512, 512], [512, 512], [256, 256]])
    assert nearest_bucket(np.array([800]), np.array([800]), duplicates).tolist() == [0]
    assert nearest_bucket(np.zeros(0), np.zeros(0), duplicates).shape == (0,)
    with pytest.raises(ValueError):
        nearest_bucket(np.array([1]), np.array([1]), np.zeros((0, 2)))


def test_choose_form():
    u = np.random.default_rng(0).random(30_000)
    p = np.array([0.2, 0.0, 0.5, 0.3])
    forms = choose_form(u, p)
    assert forms.dtype == np.int64
    np.testing.assert_allclose(np.bincount(forms, minlength=4) / len(u), p, atol=0.01)
    assert choose_form(np.array([0.0, 0.2, 0.7, 0.999999999]), p).tolist() == [0, 2, 3, 3]
    assert choose_form(np.array([0.0, 0.99]), np.array([0.0, 1.0, 0.0])).tolist() == [1, 1]
    with pytest.raises(ValueError):
        choose_form(u, np.array([0.5, 0.6]))
