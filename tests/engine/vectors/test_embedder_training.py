"""Head training: the metrics by hand, and byte-identical heads from the same data and seed."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from engine.vectors.embedder_sources import icon_caption, source_images, stem_of
from engine.vectors.embedder_split import grouped_split, leak_groups, leaks_into
from engine.vectors.embedder_training import TrainConfig, evaluate, train_embedder


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


def test_pairs_sharing_a_caption_a_file_name_or_a_picture_fall_in_one_group():
    captions = ["A Frog!", "a frog", "red apple", "tree", "lamp", "boat"]
    basenames = ["frog", "frog2", "apple", "apple", "lamp", "boat"]
    far = [0, 0x00000000FFFFFFFF, 0xFFFFFFFF00000000, 0x0F0F0F0F0F0F0F0F]  # >= 32 bits apart
    phash = np.array([*far, 0xFF00FF00FF00FF00, 0xFF00FF00FF00FF03], dtype=np.uint64)
    groups = leak_groups(captions, basenames, phash)
    # 0-1 by caption, 2-3 by file name, 4-5 by pictures 2 bits apart
    assert groups[0] == groups[1] and groups[2] == groups[3] and groups[4] == groups[5]
    assert len({groups[0], groups[2], groups[4]}) == 3


def test_a_grouped_split_never_cuts_a_group():
    rng = np.random.default_rng(0)
    n = 600
    captions = [f"caption {i // 3}" for i in range(n)]  # groups of three by caption
    basenames = [f"file{i}" for i in range(n)]
    phash = rng.integers(0, 2**63, n, dtype=np.uint64) | np.uint64(2**63)
    split = grouped_split([f"k{i}" for i in range(n)], captions, basenames, phash)
    for start in range(0, n, 3):
        assert len(set(split[start : start + 3])) == 1
    share = {part: float((split == part).mean()) for part in ("train", "test")}
    assert 0.05 < share["test"] < 0.2 and share["train"] > 0.8


def test_a_held_out_pair_sharing_anything_with_training_is_left_out():
    train = (["a frog"], ["frog"], np.array([0x0F0F0F0F0F0F0F0F], dtype=np.uint64))
    other = (
        ["A frog.", "a toad", "a newt", "a lizard", "a gecko"],
        ["x", "frog", "newt", "lizard", "gecko"],
        np.array([1, 2, 0x0F0F0F0F0F0F0F0E, 0xF0F0F0F0F0F0F0F0, 0xF0F0F0F0F0F0F0F0], dtype=np.uint64),
    )
    # caption, file name, picture (1 bit away) leak; the last two are new (equal to each other only)
    assert leaks_into(train, other).tolist() == [True, True, True, False, False]


def test_icon_names_become_captions_and_file_stems_drop_copy_numbers():
    assert icon_caption("gnome-dev-printer-new") == "printer new"
    assert icon_caption("weather-storm-symbolic") == "weather storm"
    assert stem_of("/a/b/frog-1.png") == "frog" and stem_of("Frog.PNG") == "frog"


def test_the_reserved_source_is_never_trained_on(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        train_embedder(str(tmp_path / "x.safetensors"), TrainConfig(sources=("openclipart", "tuxpaint")))
    with pytest.raises(ValueError, match="unknown training source"):
        next(iter(source_images("nope")))


def test_emoji_are_drawn_and_named():
    pairs = list(source_images("noto-emoji", limit=5))
    assert len(pairs) == 5 and all(p.image.size == (136, 128) for p in pairs)
    assert pairs[1].caption == "cloud" and pairs[1].key == "U+2601"


@pytest.mark.slow
def test_the_same_data_and_seed_give_byte_identical_heads(tmp_path):
    config = TrainConfig(epochs=3, batch_size=32, limit=120)
    first = train_embedder(str(tmp_path / "a.safetensors"), config, cache_dir=str(tmp_path / "cache"))
    second = train_embedder(str(tmp_path / "b.safetensors"), config, cache_dir=str(tmp_path / "cache"))
    a, b = ((tmp_path / name).read_bytes() for name in ("a.safetensors", "b.safetensors"))
    assert hashlib.sha256(a).hexdigest() == hashlib.sha256(b).hexdigest()
    assert first.data_sha256 == second.data_sha256 and first.pairs["train"] > 200
    assert json.dumps(first.results) == json.dumps(second.results)
    assert first.results["elementary-icons"]["pairs"] == first.pairs["elementary-icons"] > 0
