"""The manifest loader: weighted epochs, repeat caps, buckets, image-to-image rows, bad rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine import schema
from engine.curation.manifest import ManifestError
from engine.curation.sampling import weighted_draws
from engine.s3dit.data import ManifestLoader, ManifestSampler, read_manifest, resize_crop
from tests.engine.s3dit.manifests import write_manifest


def test_epochs_are_without_replacement_and_follow_the_weights():
    weights = np.array([8.0, 4.0, 2.0, 1.0, 1.0, 0.0] * 10)
    first = np.zeros(len(weights))
    for seed in range(200):
        sampler = ManifestSampler(
            weights, [(32, 32, False)] * len(weights), batch_size=6, seed=seed, epoch_size=12
        )
        drawn = np.concatenate([sampler.next_batch(), sampler.next_batch()])
        assert len(set(drawn.tolist())) == 12  # no row twice within an epoch
        assert weights[drawn].min() > 0  # weight 0 is never drawn
        first[drawn] += 1
    per_weight = {w: first[weights == w].mean() for w in (8.0, 4.0, 2.0, 1.0)}
    assert per_weight[8.0] > per_weight[4.0] > per_weight[2.0] > per_weight[1.0]


def test_repeat_cap_stops_a_row_after_its_draws():
    sampler = ManifestSampler(
        np.array([100.0, 1.0, 1.0, 1.0]), [(8, 8, False)] * 4, 1, epoch_size=1, repeat_cap=2
    )
    drawn = [int(sampler.next_batch()[0]) for _ in range(8)]
    assert drawn.count(0) == 2  # drawn first twice (weight 100), then capped
    assert all(drawn.count(i) <= 2 for i in range(4))


def test_the_sampler_draws_what_a_materialised_manifest_lists():
    """One weighted draw for the engine and the trainer: with one bucket and batches of one, the
    sampler's draws are engine.curation.sampling.weighted_draws's, epoch by epoch, cap included."""
    weights = np.random.default_rng(5).gamma(0.5, size=40)
    weights[::7] = 0.0
    sampler = ManifestSampler(weights, [(8, 8, False)] * 40, 1, seed=11, epoch_size=9, repeat_cap=2)
    rows, _ = weighted_draws(weights, 60, epoch_size=9, repeat_cap=2, seed=11)
    assert [int(sampler.next_batch()[0]) for _ in range(60)] == rows.tolist()


def test_batches_are_bucket_pure_and_the_state_resumes_exactly():
    keys = [(32, 32, False), (32, 48, False), (32, 32, True)] * 7
    sampler = ManifestSampler(np.ones(21), keys, batch_size=4, seed=3)
    batches = [sampler.next_batch() for _ in range(5)]
    for b in batches:
        assert len({keys[i] for i in b}) == 1
    state = sampler.state_dict()
    rest = [sampler.next_batch() for _ in range(9)]  # crosses into the next epoch
    again = ManifestSampler(np.ones(21), keys, batch_size=4, seed=3)
    again.load_state_dict(state)
    assert all(
        np.array_equal(a, b) for a, b in zip(rest, [again.next_batch() for _ in range(9)], strict=True)
    )


def test_new_weights_apply_from_the_next_epoch():
    sampler = ManifestSampler(np.ones(4), [(8, 8, False)] * 4, batch_size=4, seed=0)
    first = sampler.next_batch()
    sampler.set_weights(np.array([1.0, 0.0, 0.0, 0.0]))
    assert len(first) == 4
    assert sampler.next_batch().tolist() == [0]


def test_loader_reads_openclipart_resized_to_the_bucket(tmp_path, clipart_rows):
    path = write_manifest(str(tmp_path / "m.parquet"), clipart_rows[:10], size=(32, 48))
    loader = ManifestLoader(read_manifest(path), batch_size=4, seed=0)
    batch = loader.next_batch()
    assert batch.images.shape == (4, 3, 32, 48)
    assert batch.images.min() >= -1 and batch.images.max() <= 1 and batch.images.std() > 0.05
    assert batch.refs is None
    assert all(c and isinstance(c, str) for c in batch.captions)
    assert all(len(c) == 1 and isinstance(c[0], int) for c in batch.concept_ids)


def test_image_to_image_rows_bring_their_reference(tmp_path, clipart_rows):
    path = write_manifest(
        str(tmp_path / "omni.parquet"), clipart_rows[:24], stage="omni", image_to_image=True
    )
    loader = ManifestLoader(read_manifest(path), batch_size=4, seed=0)
    kinds = set()
    for _ in range(6):
        batch = loader.next_batch()
        kinds.add(batch.refs is not None)
        if batch.refs is not None:
            assert batch.refs.shape == batch.images.shape
            assert not np.allclose(batch.refs.numpy(), batch.images.numpy())
    assert kinds == {True, False}  # both text-to-image and image-to-image batches, never mixed


def test_a_missing_image_is_skipped_and_reported(tmp_path, clipart_rows):
    rows = [dict(r) for r in clipart_rows[:4]]
    rows[1]["uri"] = str(tmp_path / "gone.png")
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    rows[2]["uri"] = str(tmp_path / "broken.png")
    path = write_manifest(str(tmp_path / "m.parquet"), rows)
    batch = ManifestLoader(read_manifest(path), batch_size=4).next_batch()
    assert batch.images.shape[0] == 2
    assert sorted(batch.skipped) == sorted([rows[1]["sample_id"], rows[2]["sample_id"]])


def test_bad_manifests_are_clear_errors(tmp_path, clipart_rows):
    with pytest.raises(ManifestError, match="cannot read"):
        read_manifest(str(tmp_path / "none.parquet"))
    pq.write_table(pa.table({"sample_id": ["a"], "uri": ["x"]}), tmp_path / "thin.parquet")
    with pytest.raises(ManifestError, match="lacks column"):
        read_manifest(str(tmp_path / "thin.parquet"))
    path = write_manifest(str(tmp_path / "zero.parquet"), clipart_rows[:3], weights=[0.0, 0.0, 0.0])
    with pytest.raises(ManifestError, match="positive weight"):
        read_manifest(path)


def test_concept_ids_are_int64_and_names_are_an_error(tmp_path, clipart_rows):
    path = write_manifest(str(tmp_path / "m.parquet"), clipart_rows[:3])
    table = pq.read_table(path)
    narrow = table.set_column(
        table.column_names.index("concept_ids"),
        "concept_ids",
        table["concept_ids"].cast(pa.list_(pa.int32())),
    )
    pq.write_table(narrow, tmp_path / "int32.parquet")
    assert read_manifest(str(tmp_path / "int32.parquet"))["concept_ids"].type == pa.list_(pa.int64())
    pq.write_table(table.drop_columns(["concept_ids", "kind", "caption_form"]), tmp_path / "bare.parquet")
    bare = read_manifest(str(tmp_path / "bare.parquet"))
    assert bare.schema.field("concept_ids").type == schema.MANIFEST_ROW.field("concept_ids").type
    assert bare["concept_ids"].null_count == 3 and bare["kind"].null_count == 3
    names = pa.array([["animals"], ["food"], []], pa.list_(pa.string()))
    pq.write_table(
        table.set_column(table.column_names.index("concept_ids"), "concept_ids", names),
        tmp_path / "names.parquet",
    )
    with pytest.raises(ManifestError, match="concept_ids must be lists of int64"):
        read_manifest(str(tmp_path / "names.parquet"))


def test_resize_crop_covers_the_bucket():
    from PIL import Image

    image = Image.new("RGB", (300, 100), "red")
    out = resize_crop(image, 32, 48)
    assert out.size == (48, 32)


def test_a_manifest_whose_images_all_fail_is_an_error_not_a_hang(tmp_path, clipart_rows):
    rows = [{**r, "uri": str(tmp_path / f"gone{i}.png")} for i, r in enumerate(clipart_rows[:3])]
    loader = ManifestLoader(read_manifest(write_manifest(str(tmp_path / "m.parquet"), rows)), batch_size=2)
    with pytest.raises(ManifestError, match="no image could be read"):
        loader.next_batch()
