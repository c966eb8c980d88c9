"""The second NSFW opinion: NudeNet's detector from the installed nudenet wheel, offline, on real
images (engine.profiling.nudity)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from PIL import Image

from engine.devices import cuda_device_count
from engine.profiling.nudity import (
    EXPOSED_CLASSES,
    NUDENET_BATCH,
    NudityModelError,
    bundled_nudenet_model,
    exposed_score,
    load_nudity_model,
    nudity_batch,
)
from tests.data import image_batch
from tests.openclipart import heldout_pairs


@pytest.fixture(scope="module")
def model():
    return load_nudity_model(threads=1)


@pytest.fixture(scope="module")
def images():
    return [p[3] for p in heldout_pairs(24)[: NUDENET_BATCH + 2]]  # more than one onnxruntime call


def test_it_loads_and_scores_with_the_network_cut_off(images, monkeypatch):
    def no_network(*args, **kwargs):
        raise OSError("network access in a test that must run offline")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    model = load_nudity_model(threads=1)
    assert model.path == bundled_nudenet_model() and model.path.endswith("nudenet/320n.onnx")
    scores = model.score_images(images[:2])
    assert scores.dtype == np.float32 and ((scores >= 0) & (scores <= 1)).all()


def test_scores_are_in_range_deterministic_and_low_on_clip_art(model, images):
    scores = model.score_images(images)
    assert scores.shape == (len(images),) and ((scores >= 0) & (scores <= 1)).all()
    assert scores.tobytes() == model.score_images(images).tobytes()
    assert (scores < 0.5).all()  # openclipart is public clip art


def test_detections_match_the_packages_own_detector(model, images):
    from nudenet import NudeDetector

    reference = NudeDetector()  # the package's class on its bundled file (CPU onnxruntime)
    for image in images[:3]:
        bgr = np.ascontiguousarray(np.asarray(image)[:, :, ::-1])  # what it gets from cv2.imread
        ours, theirs = model.detect([model.preprocess(image)])[0], reference.detect(bgr)
        assert [d["class"] for d in ours] == [d["class"] for d in theirs]
        assert [d["score"] for d in ours] == pytest.approx([d["score"] for d in theirs], abs=1e-5)


def test_batching_does_not_change_a_score(model, images):
    batch = model.score_images(images)
    single = np.array([model.score_images([im])[0] for im in images[:3]])
    np.testing.assert_allclose(single, batch[:3], atol=1e-5)


def test_only_explicit_classes_count():
    detections = [
        {"class": "FACE_FEMALE", "score": 0.9, "box": [0, 0, 1, 1]},
        {"class": "FEMALE_BREAST_COVERED", "score": 0.8, "box": [0, 0, 1, 1]},
        {"class": "MALE_BREAST_EXPOSED", "score": 0.7, "box": [0, 0, 1, 1]},
    ]
    assert exposed_score(detections) == 0.0 and exposed_score([]) == 0.0
    detections.append({"class": "BUTTOCKS_EXPOSED", "score": 0.4, "box": [0, 0, 1, 1]})
    detections.append({"class": "FEMALE_GENITALIA_EXPOSED", "score": 0.6, "box": [0, 0, 1, 1]})
    assert exposed_score(detections) == 0.6
    assert "MALE_BREAST_EXPOSED" not in EXPOSED_CLASSES and len(EXPOSED_CLASSES) == 5


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
    pairs = [("s1", "i1", "a", images[0]), ("s2", "i2", "b", images[1]), ("s3", "i1", "c", images[0])]
    batch = image_batch([*pairs, ("s4", "i4", "d", odd), ("s5", "i5", "e", Image.new("RGB", (1, 1)))])
    table = nudity_batch(model, batch)
    assert table["sample_id"].to_pylist() == ["s1", "s2", "s3", "s4", "s5"] and len(seen) == 4
    scores = table["nsfw_nudenet"].to_pylist()
    assert scores[0] == scores[2] and scores[3] is None and scores[4] == 0.0
    assert nudity_batch(model, image_batch([])).num_rows == 0


def test_a_missing_or_changed_model_is_a_one_line_error(tmp_path, monkeypatch):
    with pytest.raises(NudityModelError, match="does not exist") as error:
        load_nudity_model(str(tmp_path / "none.onnx"))
    assert "\n" not in str(error.value)
    monkeypatch.setattr("engine.profiling.nudity.NUDENET_SHA256", "0" * 64)
    with pytest.raises(NudityModelError, match=r"is not nudenet 3\.4\.2's"):
        load_nudity_model()


# --- device ------------------------------------------------------------------------------------


def onnx_cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0


def test_cuda_without_the_cuda_provider_warns_and_runs_on_the_cpu(model, images, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.warns(UserWarning, match="no CUDA provider"):
        fallen_back = load_nudity_model(threads=1, device="cuda:0")
    assert fallen_back.device == "cpu" and fallen_back.batch_size == NUDENET_BATCH
    assert fallen_back.score_images(images[:3]).tobytes() == model.score_images(images[:3]).tobytes()


@pytest.mark.gpu
@pytest.mark.skipif(not onnx_cuda_available(), reason="needs onnxruntime's CUDA provider and a GPU")
def test_scores_on_cuda_match_the_cpu(model, images):
    on_gpu = load_nudity_model(device="cuda:0")
    assert on_gpu.device == "cuda:0" and on_gpu.session.get_providers()[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(on_gpu.score_images(images), model.score_images(images), atol=1e-3)
