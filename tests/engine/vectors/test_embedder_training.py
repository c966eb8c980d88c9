"""Head training: the metrics by hand, and byte-identical heads from the same data and seed."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from engine.vectors.embedder_training import TrainConfig, evaluate, is_heldout, train_embedder


def test_evaluate_on_hand_made_vectors():
    # Three pairs in 2-d: pairs 0 and 1 match exactly, pair 2's caption points at image 1.
    images = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    texts = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    result = evaluate(images, texts)
    # image 2 scores 0.8 with captions 1 and 2 (a tie does not outrank it) -> rank 0: all R@1 = 1
    assert result.i2t_r1 == 1.0
    # caption 2 ([0, 1]) scores image 1 at 1.0 above its own image (0.8) -> 2 of 3 at rank 0
    assert result.t2i_r1 == pytest.approx(2 / 3) and result.t2i_r10 == 1.0
    assert result.matched_mean == pytest.approx((1 + 1 + 0.8) / 3)
    assert 0.5 < result.auc <= 1.0


def test_the_split_is_fixed_by_the_image_hash():
    assert is_heldout("00000000aa") and not is_heldout("00000001aa")


@pytest.mark.slow
def test_the_same_data_and_seed_give_byte_identical_heads(tmp_path):
    config = TrainConfig(epochs=3, batch_size=32, limit=120)
    first = train_embedder(str(tmp_path / "a.safetensors"), config, cache_dir=str(tmp_path / "cache"))
    second = train_embedder(str(tmp_path / "b.safetensors"), config, cache_dir=str(tmp_path / "cache"))
    a, b = ((tmp_path / name).read_bytes() for name in ("a.safetensors", "b.safetensors"))
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    assert first.data_sha256 == second.data_sha256 and first.train_pairs + first.heldout_pairs > 100
    assert json.dumps(first.heldout) == json.dumps(second.heldout)
