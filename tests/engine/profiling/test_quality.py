"""BRISQUE and PIQE (engine.profiling.quality) on real images: direction, determinism, the
reference implementations' values, degenerate images and the batch rows."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from PIL import Image, ImageFilter

from engine.profiling import quality
from engine.profiling.quality import (
    QualityModelError,
    brisque_features,
    brisque_score,
    half_size,
    load_brisque_model,
    piqe_score,
    quality_batch,
    quality_scores,
)
from tests.data import image_batch, noise_image


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data", reason="scikit-image is in pyproject's [dev]")
    return Image.open(os.path.join(skimage_data.data_dir, "astronaut.png")).convert("RGB")


def grey(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L"), dtype=np.float64)


def test_blur_makes_both_scores_worse(photo):
    sharp = quality_scores(photo)
    blurred = quality_scores(photo.filter(ImageFilter.GaussianBlur(2)))
    assert 0 < sharp["brisque"] < blurred["brisque"]  # lower is better
    assert 0 < sharp["piqe"] < blurred["piqe"] <= 100


def test_scores_are_deterministic(photo):
    first, second = quality_scores(photo), quality_scores(photo.copy())
    assert first == second


def test_piqe_is_matlabs_as_pypiqe_computes_it(photo):
    """pypiqe 1.2 (a line-by-line port of MATLAB's piqe) gives 33.75925769102282 for these grey
    levels (512 x 512: no padding, maximum 255: its rescaling is a no-op)."""
    assert piqe_score(grey(photo)) == pytest.approx(33.75925769102282, abs=1e-9)


def test_brisque_svr_is_libsvms(photo):
    """libsvm 3.37's svm_predict_probability on the same 36 features (through the brisque package's
    own scaling) gives 2.7069378539597153: the numpy SVR evaluates the shipped model the same way."""
    features = brisque_features(grey(photo))
    assert features.shape == (36,)
    assert load_brisque_model().predict(features) == pytest.approx(2.7069378539597153, abs=1e-7)
    assert brisque_score(grey(photo)) == pytest.approx(2.7069378539597153, abs=1e-7)


def test_half_size_is_matlabs_imresize():
    """imresize(ramp, 0.5): inside, the mean of each pixel pair; at the ends the mirrored ramp."""
    ramp = np.tile(np.arange(20.0), (6, 1))
    half = half_size(ramp)
    assert half.shape == (3, 10)
    np.testing.assert_allclose(half[0, 2:8], [4.5, 6.5, 8.5, 10.5, 12.5, 14.5])
    np.testing.assert_allclose(half[0, :2], [0.44921875, 2.48828125])
    assert half_size(np.ones((5, 7))).shape == (3, 4)


def test_degenerate_images_get_nulls_not_errors():
    assert quality_scores(Image.new("RGB", (20, 400))) == {"brisque": None, "piqe": None}
    flat = quality_scores(Image.new("RGB", (100, 80), "white"))
    assert flat == {"brisque": None, "piqe": 100.0}  # PIQE: no salient block; BRISQUE: no spread
    thin = quality_scores(Image.new("RGB", (4000, 200)))  # 512 x 26 after the analysis downscale
    assert thin == {"brisque": None, "piqe": None}
    noisy = quality_scores(noise_image(7, (64, 48)))
    assert all(isinstance(v, float) for v in noisy.values())


def test_batch_rows_follow_batch_order_and_score_each_image_once(photo, monkeypatch):
    seen = []
    real = quality.quality_scores

    def scores(image):
        seen.append(image.size)
        if image.size == (40, 40):
            raise ValueError("cannot score")  # one image that breaks: nulls, the batch goes on
        return real(image)

    monkeypatch.setattr(quality, "quality_scores", scores)
    small = photo.resize((128, 128))
    batch = image_batch(
        [
            ("s1", "i1", "a", small),
            ("s2", "i2", "b", noise_image(3, (64, 64))),
            ("s3", "i1", "c", small),
            ("s4", "i4", "d", Image.new("RGB", (40, 40))),
        ]
    )
    table = quality_batch(batch)
    assert table["sample_id"].to_pylist() == ["s1", "s2", "s3", "s4"] and len(seen) == 3
    rows = table.to_pylist()
    assert rows[0]["brisque"] == rows[2]["brisque"] and rows[0]["piqe"] == rows[2]["piqe"]
    assert rows[3]["brisque"] is None and rows[3]["piqe"] is None
    assert quality_batch(image_batch([])).num_rows == 0


def test_the_model_ships_in_the_brisque_wheel():
    spec = importlib.util.find_spec("brisque")
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "models")
    model = load_brisque_model()
    assert os.path.isfile(os.path.join(folder, "svm.txt")) and model.vectors.shape == (770, 36)
    assert model.gamma == 0.05 and model.rho == -155.845  # the authors' allmodel


def test_a_missing_model_is_a_one_line_error(monkeypatch):
    load_brisque_model.cache_clear()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    try:
        with pytest.raises(QualityModelError, match="brisque is not installed") as error:
            load_brisque_model()
        assert "\n" not in str(error.value)
    finally:
        monkeypatch.undo()
        load_brisque_model.cache_clear()
