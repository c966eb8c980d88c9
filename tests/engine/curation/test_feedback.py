"""Trainer feedback -> concept multipliers, per-sample factors, and user boosts."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pyarrow as pa
import pytest

from engine import schema
from engine.curation.feedback import (
    FeedbackConfig,
    concept_multipliers,
    read_boosts,
    sample_multipliers,
    stage_feedback,
    write_boost,
)
from engine.s3dit.concept_loss import concept_losses, read_feedback, send_feedback
from engine.workspace import Workspace


def reports(*steps: dict[int | None, tuple[int, float]], concept_type: pa.DataType = pa.int64()) -> pa.Table:
    """Report tables as the trainer writes them: one per step, {concept_id: (draws, mean loss)}
    (None: the draws without a concept). ``concept_type`` string: as an older trainer wrote them."""
    rows = [
        {
            "stage": "sft",
            "step": 100 * (i + 1),
            "manifest": "m",
            "concept_id": concept,
            "samples": n,
            "loss_mean": loss,
            "loss_std": 0.0,
        }
        for i, losses in enumerate(steps)
        for concept, (n, loss) in losses.items()
    ]
    index = schema.CONCEPT_LOSS.get_field_index("concept_id")
    return pa.Table.from_pylist(
        rows, schema=schema.CONCEPT_LOSS.set(index, pa.field("concept_id", concept_type))
    )


# One concept persistently hard (2.0), one easy (0.2), six in between.
EIGHT = {10: (8, 2.0), 11: (8, 0.2), **{c: (8, 1.0) for c in range(12, 18)}}


def multiplier_of(ids: np.ndarray, mults: np.ndarray, concept: int) -> float:
    return float(mults[np.searchsorted(ids, concept)])


def test_a_hard_concept_grows_to_the_cap_and_an_easy_one_shrinks_to_the_floor():
    config = FeedbackConfig()
    hard, easy = [], []
    for n in range(1, 16):
        ids, mults, summary = concept_multipliers(reports(*[EIGHT] * n), config)
        assert ids.tolist() == list(range(10, 18)) and summary["reports"] == n
        hard.append(multiplier_of(ids, mults, 10))
        easy.append(multiplier_of(ids, mults, 11))
    assert all(b >= a for a, b in itertools.pairwise(hard)) and hard[1] > hard[0] > 1
    assert all(b <= a for a, b in itertools.pairwise(easy)) and easy[1] < easy[0] < 1
    assert max(hard) <= config.cap and hard[-1] == pytest.approx(config.cap)
    assert min(easy) >= 1 / config.cap and easy[-1] == pytest.approx(1 / config.cap)
    assert summary["top"][0] == (10, pytest.approx(config.cap)) and summary["bottom"][0][0] == 11
    assert len(summary["top"]) == len(summary["bottom"]) == 5 and summary["steps"][0] == 100


def test_first_report_follows_the_formula():
    ids, mults, _ = concept_multipliers(reports({1: (4, 1.0), 2: (4, 3.0)}))
    # Lbar = 2, std = 1: excess -1 and +1; log a = -/+ eta; then mean-normalise and smooth.
    a = np.exp([-0.5, 0.5])
    expected = 0.9 * a / a.mean() + 0.1
    np.testing.assert_allclose(mults, expected, rtol=1e-6)
    assert ids.tolist() == [1, 2]


def test_smoothing_keeps_a_uniform_share():
    many = [EIGHT] * 40
    _, unsmoothed, _ = concept_multipliers(reports(*many), FeedbackConfig(smoothing=0.0, cap=1e6))
    _, mults, _ = concept_multipliers(reports(*many), FeedbackConfig(smoothing=0.2, cap=1e6))
    assert unsmoothed.min() < 0.01  # without smoothing (and no cap) the hard concept takes everything
    assert mults.min() > 0.2  # with it, every concept keeps the uniform share 0.2 at least
    _, mults, _ = concept_multipliers(reports(*many), FeedbackConfig(smoothing=1.0))
    np.testing.assert_allclose(mults, 1.0)


def test_no_signal_cases():
    ids, mults, _ = concept_multipliers(reports({7: (50, 3.0)}))
    assert ids.tolist() == [7] and mults.tolist() == [1.0]  # one concept: nothing to compare with
    ids, mults, _ = concept_multipliers(reports({1: (6, 1.0), 2: (6, 1.0)}))
    np.testing.assert_allclose(mults, 1.0)  # equal losses
    ids, mults, summary = concept_multipliers(schema.CONCEPT_LOSS.empty_table())
    assert len(ids) == len(mults) == 0 and summary["reports"] == 0 and summary["top"] == []


def test_min_samples_and_draws_without_a_concept():
    table = reports({1: (4, 1.0), 2: (4, 2.0), 3: (3, 50.0), None: (9, 9.0)}, {None: (9, 0.0)})
    ids, mults, summary = concept_multipliers(table)
    assert ids.tolist() == [1, 2] and mults[1] > mults[0]  # concept 3 had 3 draws: not counted
    assert summary["skipped_ids"] == 2  # the null concept, once per report
    ids, _, _ = concept_multipliers(table, FeedbackConfig(min_samples=3))
    assert ids.tolist() == [1, 2, 3]


def test_reports_an_older_trainer_wrote_with_string_ids(tmp_path):
    ws = Workspace(str(tmp_path / "ws")).create()
    old = {"1": (4, 1.0), "2": (4, 2.0), "": (9, 9.0), "x7": (9, 9.0), "-4": (9, 0.0)}  # step 100
    new = {1: (4, 1.0), 2: (4, 3.0), None: (9, 9.0)}  # step 200
    ws.write_parquet(ws.feedback_rel("sft", 100), reports(old, concept_type=pa.string()))
    ws.write_parquet(ws.feedback_rel("sft", 200), reports({}, new))
    state = stage_feedback(ws, "sft")
    # digits became int64 ids; "", "x7" and "-4" became null: skipped and counted, as before
    _, expected, _ = concept_multipliers(reports({1: (4, 1.0), 2: (4, 2.0)}, new))
    assert state.concept_ids.tolist() == [1, 2] and state.summary["skipped_ids"] == 4
    np.testing.assert_array_equal(state.multipliers, expected)


def test_reports_sent_by_the_trainer(tmp_path):
    ws = Workspace(str(tmp_path / "ws")).create()
    assert stage_feedback(ws, "sft").fingerprint == ""
    rng = np.random.default_rng(0)
    concepts = [[10], [10, 20], [20], [30], []] * 8  # 40 draws
    hard = np.array([(30 in c) for c in concepts])

    def send(step: int) -> None:
        losses = (1.0 + 2.0 * hard + 0.1 * rng.standard_normal(len(concepts))).tolist()
        send_feedback(ws, concept_losses("sft", step, "manifests/sft/x.parquet", concepts, losses))

    send(100)
    send(200)
    first = stage_feedback(ws, "sft")
    again = stage_feedback(ws, "sft")
    assert first.fingerprint == again.fingerprint and len(first.fingerprint) == 64
    np.testing.assert_array_equal(first.multipliers, again.multipliers)
    ids, mults, summary = concept_multipliers(read_feedback(ws, "sft"))
    np.testing.assert_array_equal(first.concept_ids, ids)
    np.testing.assert_array_equal(first.multipliers, mults)
    assert ids.tolist() == [10, 20, 30] and summary["steps"] == [100, 200]
    assert summary["skipped_ids"] == 2  # the draws without a concept, once per report
    assert multiplier_of(ids, mults, 30) == mults.max() > 1
    send(300)
    third = stage_feedback(ws, "sft")
    assert third.fingerprint != first.fingerprint and third.summary["reports"] == 3
    assert stage_feedback(ws, "lowres").summary["reports"] == 0
    with pytest.raises(ValueError, match="bad stage name"):
        stage_feedback(ws, "../sft")


def test_sample_multipliers_by_hand():
    offsets = np.array([0, 2, 2, 3, 5])
    flat = np.array([10, 99, 11, 10, 11])  # 99 was never reported
    factors = sample_multipliers(offsets, flat, np.array([10, 11]), np.array([2.0, 0.5]))
    np.testing.assert_allclose(factors, [1.5, 1.0, 0.5, 1.25])
    empty = np.array([], np.int64)
    np.testing.assert_allclose(sample_multipliers(offsets, flat, empty, np.array([])), 1.0)
    assert sample_multipliers(np.array([0]), empty, empty, np.array([])).shape == (0,)
    with pytest.raises(ValueError, match="offsets"):
        sample_multipliers(np.array([0, 2]), flat, empty, np.array([]))
    with pytest.raises(ValueError, match="sorted"):
        sample_multipliers(offsets, flat, np.array([11, 10]), np.array([1.0, 1.0]))


def test_boosts_round_trip_and_validation(tmp_path):
    ws = Workspace(str(tmp_path / "ws")).create()
    table, fingerprint = read_boosts(ws, "sft")
    assert table.num_rows == 0 and fingerprint == ""
    first = write_boost(ws, "sft", ["b", "a", "a"], 3.0, "gap: lorikeet")
    _, fp1 = read_boosts(ws, "sft")
    assert write_boost(ws, "sft", ["a", "b"], 3.0, "gap: lorikeet") == first  # the same boost: one file
    assert read_boosts(ws, "sft")[1] == fp1
    write_boost(ws, "sft", ["b", "c"], 2.0, "gap: parrot")
    table, fp2 = read_boosts(ws, "sft")
    assert fp2 != fp1
    assert table.to_pydict() == {"sample_id": ["a", "b", "c"], "factor": [3.0, 6.0, 2.0]}
    write_boost(ws, "sft", ["c"], 100.0, "more")
    assert read_boosts(ws, "sft")[0]["factor"].to_pylist() == [3.0, 6.0, 100.0]  # 200 capped
    assert read_boosts(ws, "omni")[0].num_rows == 0
    for bad in (0.0, -1.0, math.nan, math.inf, 100.5):
        with pytest.raises(ValueError, match="factor"):
            write_boost(ws, "sft", ["a"], bad, "x")
    with pytest.raises(ValueError, match="no sample ids"):
        write_boost(ws, "sft", [], 2.0, "x")
