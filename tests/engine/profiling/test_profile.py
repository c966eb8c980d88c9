"""Profiling signals of engine/profiling/profile.py, checked against values worked out by hand.

Every expected number below is closed-form arithmetic written in the test (or a plain-Python
reference loop), never a call into the numpy code path under test. Test images have R = G = B,
so Pillow's convert("L") returns the value itself (its luma weights 19595 + 38470 + 7471 sum to
65536, so v * 65536 + 0x8000 >> 16 == v), or they are a single colour.
"""

from __future__ import annotations

import io
import math
import random

import imagehash
import numpy as np
import pytest
from PIL import Image

from engine.profiling.ingest import ImageInfo, IngestConfig, decode_image
from engine.profiling.profile import (
    ANALYSIS_SIDE,
    JPEG_QUALITY,
    analysis_copy,
    border_variance,
    colourfulness,
    count_words,
    detect_language,
    grey_entropy,
    jpeg_bits_per_pixel,
    laplacian_variance,
    phash64,
    profile_caption,
    profile_image,
)

# --- helpers ------------------------------------------------------------------------------------


def grey_rgb(rows: list[list[int]]) -> Image.Image:
    """An RGB image with R = G = B = the given grey levels (rows of ints 0..255)."""
    h, w = len(rows), len(rows[0])
    image = Image.new("RGB", (w, h))
    image.putdata([(v, v, v) for row in rows for v in row])
    return image


def grey_array(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L")).astype(np.float64)


def info_for(image: Image.Image, file_bytes: int = 1000, bpp: int = 24) -> ImageInfo:
    return ImageInfo(image_format="PNG", image_mode=image.mode, bits_per_pixel=bpp, file_bytes=file_bytes)


def pop_variance(values: list[float]) -> float:
    """Population variance in plain Python (sum of squared deviations / n)."""
    n = len(values)
    mean = sum(values) / n
    return sum((v - mean) ** 2 for v in values) / n


def laplacian_reference(rows: list[list[int]]) -> list[float]:
    """4-neighbour Laplacian (0 1 0 / 1 -4 1 / 0 1 0) on interior pixels, as a plain Python loop."""
    h, w = len(rows), len(rows[0])
    return [
        float(rows[i - 1][j] + rows[i + 1][j] + rows[i][j - 1] + rows[i][j + 1] - 4 * rows[i][j])
        for i in range(1, h - 1)
        for j in range(1, w - 1)
    ]


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise_rows(h: int, w: int, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(256) for _ in range(w)] for _ in range(h)]


# --- example 1: 16x16 black with a white 8x8 centre square ----------------------------------------

SQUARE_ROWS = [[255 if 4 <= i <= 11 and 4 <= j <= 11 else 0 for j in range(16)] for i in range(16)]

# Laplacian on the 14x14 = 196 interior pixels (rows/cols 1..14), in units of 255:
#   * square corners (4 px: (4,4), (4,11), (11,4), (11,11)): 2 white neighbours - 4 * white = -2
#   * square edge pixels that are not corners (6 per side x 4 sides = 24 px): 3 - 4 = -1
#   * square interior (rows/cols 5..10, 36 px): 4 - 4 = 0
#   * black pixels touching a square edge (rows 3/12 or cols 3/12 facing cols/rows 4..11:
#     8 per side x 4 = 32 px): one white neighbour = +1
#   * everything else (diagonal outside corners included): 0
# sum = 32 - 24 - 4 * 2 = 0, so mean = 0;
# sum of squares = 32 * 1 + 24 * 1 + 4 * 4 = 72 (x 255^2)
# variance = 72 * 255^2 / 196 = 4_681_800 / 196 = 23886.7346...
SQUARE_BLUR = 72 * 255**2 / 196
# Histogram: 64 of 256 pixels are 255 (p = 0.25), 192 are 0 (p = 0.75).
SQUARE_ENTROPY = -(0.25 * math.log2(0.25) + 0.75 * math.log2(0.75))  # 0.811278...


def test_square_blur_matches_hand_count():
    assert math.isclose(SQUARE_BLUR, 23886.734693877551)
    # the plain-Python reference loop agrees with the hand count...
    lap = laplacian_reference(SQUARE_ROWS)
    assert len(lap) == 196
    assert sum(lap) == 0
    assert sorted(set(lap)) == [-510.0, -255.0, 0.0, 255.0]
    assert (lap.count(-510.0), lap.count(-255.0), lap.count(255.0)) == (4, 24, 32)
    assert pop_variance(lap) == pytest.approx(SQUARE_BLUR)
    # ...and so does the engine
    grey = grey_array(grey_rgb(SQUARE_ROWS))
    assert laplacian_variance(grey) == pytest.approx(SQUARE_BLUR)


def test_square_border_and_entropy():
    image = grey_rgb(SQUARE_ROWS)
    grey = grey_array(image)
    # band = max(1, 16 // 16) = 1: rows 0 and 15, cols 0 and 15, all black
    assert border_variance(grey) == 0.0
    assert grey_entropy(np.asarray(image.convert("L"))) == pytest.approx(SQUARE_ENTROPY)
    assert math.isclose(SQUARE_ENTROPY, 0.8112781244591328)


def test_square_profile_image():
    image = grey_rgb(SQUARE_ROWS)
    signals = profile_image(image, info_for(image, file_bytes=100))
    assert signals["width"] == 16 and signals["height"] == 16 and signals["aspect"] == 1.0
    assert signals["border_variance"] == 0.0
    assert signals["blur"] == pytest.approx(SQUARE_BLUR)
    assert signals["entropy"] == pytest.approx(SQUARE_ENTROPY)
    assert signals["colourfulness"] == pytest.approx(0.0, abs=1e-12)  # R = G = B: rg = yb = 0
    # 16 * 16 px * 24 bits / 8 / 100 bytes = 7.68
    assert signals["compression_ratio"] == pytest.approx(7.68)


# --- example 2: 4x4 horizontal gradient 0, 85, 170, 255 -----------------------------------------

GRADIENT_ROWS = [[0, 85, 170, 255] for _ in range(4)]

# band = max(1, 4 // 16) = 1 covers 12 of 16 pixels: rows 0 and 3 (0, 85, 170, 255 each) plus
# cols 0 and 3 of rows 1 and 2 (0, 255 each). So 0 x4, 85 x2, 170 x2, 255 x4.
# mean = (2*85 + 2*170 + 4*255) / 12 = 1530 / 12 = 127.5
# deviations: +-127.5 (8 px) -> 8 * 16256.25 = 130050; +-42.5 (4 px) -> 4 * 1806.25 = 7225
# variance = (130050 + 7225) / 12 = 137275 / 12 = 11439.5833...
GRADIENT_BORDER_VARIANCE = 137275 / 12


def test_gradient_border_entropy_blur():
    image = grey_rgb(GRADIENT_ROWS)
    grey = grey_array(image)
    assert grey[0].tolist() == [0.0, 85.0, 170.0, 255.0]  # grey == the value exactly
    border = [0, 85, 170, 255] * 2 + [0, 255] * 2
    assert pop_variance(border) == pytest.approx(GRADIENT_BORDER_VARIANCE)
    assert border_variance(grey) == pytest.approx(GRADIENT_BORDER_VARIANCE)
    assert math.isclose(GRADIENT_BORDER_VARIANCE, 11439.583333333334)
    # four grey levels, 4 px each: p = 1/4 each -> H = 4 * (1/4 * 2) = 2 bits exactly
    assert grey_entropy(np.asarray(image.convert("L"))) == pytest.approx(2.0)
    # a linear ramp has zero Laplacian: interior (1,1): 85 + 85 + 0 + 170 - 4*85 = 0, etc.
    assert laplacian_variance(grey) == 0.0
    signals = profile_image(image, info_for(image))
    assert signals["border_variance"] == pytest.approx(GRADIENT_BORDER_VARIANCE)
    assert signals["entropy"] == pytest.approx(2.0)
    assert signals["blur"] == 0.0


def test_border_band_is_min_side_over_16():
    # 40x32: band = max(1, 32 // 16) = 2. Outer 2 px ring is 10, the rest 200.
    h, w = 32, 40
    rows = [[10 if i < 2 or i >= h - 2 or j < 2 or j >= w - 2 else 200 for j in range(w)] for i in range(h)]
    assert border_variance(grey_array(grey_rgb(rows))) == 0.0
    # Now make the second ring (depth 1) 20: the band holds the outer ring (1 px deep) at 10
    # and the next at 20. Outer ring: 2*40 + 2*30 = 140 px; next ring: 2*38 + 2*28 = 132 px.
    rows = [
        [
            10
            if min(i, j, h - 1 - i, w - 1 - j) == 0
            else 20
            if min(i, j, h - 1 - i, w - 1 - j) == 1
            else 200
            for j in range(w)
        ]
        for i in range(h)
    ]
    n10, n20 = 140, 132
    mean = (10 * n10 + 20 * n20) / (n10 + n20)
    expected = (n10 * (10 - mean) ** 2 + n20 * (20 - mean) ** 2) / (n10 + n20)
    assert border_variance(grey_array(grey_rgb(rows))) == pytest.approx(expected)


def test_blur_is_zero_below_three_pixels():
    image = grey_rgb(noise_rows(2, 9))
    assert laplacian_variance(grey_array(image)) == 0.0
    assert profile_image(image, info_for(image))["blur"] == 0.0


def test_blur_on_noise_matches_reference_loop():
    rows = noise_rows(11, 13, seed=3)
    expected = pop_variance(laplacian_reference(rows))
    assert laplacian_variance(grey_array(grey_rgb(rows))) == pytest.approx(expected)


def test_entropy_of_flat_image_is_zero():
    image = Image.new("RGB", (7, 5), (42, 42, 42))
    assert grey_entropy(np.asarray(image.convert("L"))) == 0.0


# --- example 3: colourfulness -------------------------------------------------------------------


def test_pure_red_colourfulness():
    image = Image.new("RGB", (10, 10), (255, 0, 0))
    # rg = 255 - 0 = 255, yb = (255 + 0) / 2 - 0 = 127.5 everywhere: both stds are 0
    # M3 = 0 + 0.3 * sqrt(255^2 + 127.5^2) = 0.3 * 127.5 * sqrt(5) = 85.5296...
    expected = 0.3 * math.sqrt(255**2 + 127.5**2)
    assert expected == pytest.approx(85.52960018614271)
    assert colourfulness(np.asarray(image, dtype=np.float64)) == pytest.approx(expected)
    signals = profile_image(image, info_for(image))
    assert signals["colourfulness"] == pytest.approx(expected)
    # single colour: one grey level (L = (255 * 19595 + 0x8000) >> 16 = 76), flat everywhere
    assert np.asarray(image.convert("L"))[0, 0] == 76
    assert signals["entropy"] == 0.0
    assert signals["border_variance"] == 0.0
    assert signals["blur"] == 0.0


def test_two_colour_colourfulness():
    # left half pure red (255, 0, 0), right half pure blue (0, 0, 255), 4x4:
    #   red:  rg = 255, yb = 127.5      blue: rg = 0, yb = -255
    #   mean(rg) = 127.5, std(rg) = 127.5 (two equal halves: std = half the difference)
    #   mean(yb) = (127.5 - 255) / 2 = -63.75, std(yb) = (127.5 + 255) / 2 = 191.25
    # M3 = sqrt(127.5^2 + 191.25^2) + 0.3 * sqrt(127.5^2 + 63.75^2)
    image = Image.new("RGB", (4, 4))
    image.putdata([(255, 0, 0) if x < 2 else (0, 0, 255) for _ in range(4) for x in range(4)])
    expected = math.sqrt(127.5**2 + 191.25**2) + 0.3 * math.sqrt(127.5**2 + 63.75**2)
    assert colourfulness(np.asarray(image, dtype=np.float64)) == pytest.approx(expected)


def test_grey_image_has_zero_colourfulness():
    image = grey_rgb(noise_rows(6, 6, seed=1))
    assert colourfulness(np.asarray(image, dtype=np.float64)) == pytest.approx(0.0, abs=1e-12)


# --- example 4: compression ratio from the decoded file -----------------------------------------


def _noise_array(shape: tuple[int, ...], dtype=np.uint8, high: int = 256) -> np.ndarray:
    return np.random.default_rng(7).integers(0, high, size=shape).astype(dtype)


@pytest.mark.parametrize(
    ("make", "mode", "bpp"),
    [
        (lambda: Image.fromarray(_noise_array((48, 64, 3)), "RGB"), "RGB", 24),
        (lambda: Image.fromarray(_noise_array((48, 64, 4)), "RGBA"), "RGBA", 32),
        (lambda: Image.fromarray(_noise_array((48, 64)), "L"), "L", 8),
        (lambda: Image.fromarray(_noise_array((48, 64), np.uint16, 65536)), "I;16", 16),
        (lambda: Image.fromarray(_noise_array((48, 64), np.uint8, 2).astype(bool)), "1", 1),
        # Pillow writes a palette of <= 16 colours at bit depth 4, so IHDR says 4 bits x 1 channel
        (lambda: Image.fromarray(_noise_array((48, 64, 3)), "RGB").quantize(16), "P", 4),
        (lambda: Image.fromarray(_noise_array((48, 64, 3)), "RGB").quantize(256), "P", 8),
    ],
    ids=["rgb24", "rgba32", "l8", "i16", "bilevel1", "palette4", "palette8"],
)
def test_png_compression_ratio(make, mode, bpp):
    original = make()
    assert original.mode == mode
    data = png_bytes(original)
    image, info, _ = decode_image(data, "x.png", IngestConfig())
    assert image.mode == "RGB" and image.size == (64, 48)
    assert (info.image_format, info.image_mode, info.file_bytes) == ("PNG", mode, len(data))
    assert info.bits_per_pixel == bpp
    # independently from the PNG header: IHDR bit depth (byte 24) x channels of colour type (byte 25)
    assert data[24] * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[data[25]] == bpp
    signals = profile_image(image, info)
    assert (signals["width"], signals["height"]) == (64, 48)
    assert signals["bits_per_pixel"] == bpp and signals["file_bytes"] == len(data)
    assert signals["compression_ratio"] == pytest.approx(64 * 48 * bpp / 8 / len(data))


def test_jpeg_compression_ratio_uses_mode_bits():
    original = Image.fromarray(_noise_array((48, 64)), "L")
    buffer = io.BytesIO()
    original.save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    image, info, _ = decode_image(data, "x.jpg", IngestConfig())
    assert (info.image_format, info.image_mode, info.bits_per_pixel) == ("JPEG", "L", 8)
    signals = profile_image(image, info)
    assert signals["compression_ratio"] == pytest.approx(64 * 48 * 8 / 8 / len(data))


# --- jpeg_bpp -----------------------------------------------------------------------------------


def _jpeg_len(image: Image.Image) -> int:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=75)
    return len(buffer.getvalue())


def test_jpeg_bpp_matches_independent_encode():
    assert JPEG_QUALITY == 75
    for image in (Image.new("RGB", (64, 48), (120, 60, 30)), grey_rgb(noise_rows(48, 64, seed=5))):
        expected = _jpeg_len(image) * 8 / (64 * 48)
        assert jpeg_bits_per_pixel(image) == pytest.approx(expected)
        assert profile_image(image, info_for(image))["jpeg_bpp"] == pytest.approx(expected)


def test_jpeg_bpp_flat_far_below_noise():
    flat = Image.new("RGB", (128, 128), (90, 140, 200))
    noise = Image.fromarray(_noise_array((128, 128, 3)), "RGB")
    flat_bpp, noise_bpp = jpeg_bits_per_pixel(flat), jpeg_bits_per_pixel(noise)
    assert flat_bpp < 0.5  # a flat image is little more than the JPEG headers
    assert noise_bpp > 4.0
    assert noise_bpp > 10 * flat_bpp


# --- phash --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phash_equals_imagehash_hex(seed):
    image = grey_rgb(noise_rows(40, 50, seed=seed))
    expected = int(str(imagehash.phash(image.convert("L"))), 16)
    assert phash64(image.convert("L")) == expected
    assert profile_image(image, info_for(image))["phash"] == expected
    assert 0 <= expected < 2**64


def test_phash_of_structured_image():
    image = grey_rgb(SQUARE_ROWS).resize((300, 200))
    expected = int(str(imagehash.phash(image.convert("L"))), 16)
    assert profile_image(image, info_for(image))["phash"] == expected


# --- analysis copy ------------------------------------------------------------------------------


def test_analysis_copy_downsizes_large_image():
    assert ANALYSIS_SIDE == 512
    big = Image.new("RGB", (2000, 1000), (10, 20, 30))
    small = analysis_copy(big)
    # scale = 512 / 2000 = 0.256: 2000 -> 512, 1000 -> 256
    assert small.size == (512, 256)
    tall = analysis_copy(Image.new("RGB", (600, 1200)))
    assert tall.size == (256, 512)


def test_analysis_copy_keeps_small_image():
    image = Image.new("RGB", (300, 200), (1, 2, 3))
    assert analysis_copy(image) is image
    edge = Image.new("RGB", (512, 100))
    assert analysis_copy(edge).size == (512, 100)


def test_profile_image_reports_original_size():
    # a single colour, so the box downscale to 512x256 keeps every pixel value exactly
    big = Image.new("RGB", (2000, 1000), (200, 100, 50))
    signals = profile_image(big, ImageInfo("PNG", "RGB", 24, 50_000))
    assert (signals["width"], signals["height"]) == (2000, 1000)
    assert signals["aspect"] == 2.0
    # compression ratio uses the ORIGINAL size: 2000 * 1000 * 24 / 8 / 50000 = 120
    assert signals["compression_ratio"] == pytest.approx(120.0)
    # jpeg_bpp is per pixel of the 512x256 analysis copy
    expected_bpp = _jpeg_len(Image.new("RGB", (512, 256), (200, 100, 50))) * 8 / (512 * 256)
    assert signals["jpeg_bpp"] == pytest.approx(expected_bpp)
    # single colour: rg = 100, yb = 150 - 50 = 100 -> 0.3 * sqrt(2) * 100
    assert signals["colourfulness"] == pytest.approx(0.3 * math.sqrt(100**2 + 100**2))


# --- captions -----------------------------------------------------------------------------------


def test_detect_language_english():
    lang, prob = detect_language("a red bicycle leaning against a brick wall")
    assert lang == "en"
    assert 0.5 < prob <= 1.0


def test_detect_language_chinese_sentence():
    caption = "一只猫坐在窗台上晒太阳"
    assert detect_language(caption)[0] == "zh"
    signals = profile_caption(caption)
    assert signals["caption_lang"] == "zh"
    assert signals["caption_has_cjk"] is True
    assert signals["caption_chars"] == 11
    assert signals["caption_words"] == 11  # each CJK character is a word


def test_detect_language_single_han_character_uses_script():
    assert detect_language("猫") == ("zh", 1.0)


def test_detect_language_kana_and_hangul_script_fallback():
    # single characters that langid may not name: the script decides
    assert detect_language("の")[0] == "ja"
    assert detect_language("한")[0] == "ko"


def test_detect_language_no_letters():
    assert detect_language("12345 !!") == ("und", 0.0)
    signals = profile_caption("12345 !!")
    assert signals["caption_lang"] == "und"
    assert signals["caption_lang_prob"] == 0.0
    assert signals["caption_has_cjk"] is False
    assert signals["caption_words"] == 2


def test_count_words():
    assert count_words("a cat 一只猫") == 5  # 2 latin words + 3 CJK characters
    assert count_words("a red bicycle leaning against a brick wall") == 8
    assert count_words("猫とneko") == 3  # 2 CJK characters + 1 latin token
    assert count_words("   ") == 0


def test_profile_caption_english():
    caption = "a red bicycle leaning against a brick wall"
    signals = profile_caption(caption)
    assert set(signals) == {
        "caption_chars",
        "caption_words",
        "caption_lang",
        "caption_lang_prob",
        "caption_has_cjk",
    }
    assert signals["caption_chars"] == 42
    assert signals["caption_words"] == 8
    assert signals["caption_lang"] == "en"
    assert 0.5 < signals["caption_lang_prob"] <= 1.0
    assert signals["caption_has_cjk"] is False
