"""The Data Profiling Engine's cheap signals (paper section 2.1), per image and per caption.

Image signals are computed on an *analysis copy*: the decoded RGB image, downscaled so that its
longer side is at most ``ANALYSIS_SIDE`` (never upscaled). That keeps the cost per image flat
whatever the resolution; images at or below that size are measured on their own pixels.
Grey levels are Pillow's ``convert("L")`` (ITU-R 601 luma, 0..255).

Formulas (every one is checked by hand in tests/engine/test_profile.py):

* ``compression_ratio = width * height * bits_per_pixel / 8 / file_bytes``: ideal raw bytes over
  actual bytes; high for heavily compressed (possibly artefact-ridden) files.
* ``border_variance``: population variance of the grey levels in the outer band of
  ``max(1, min(w, h) // 16)`` pixels on all four sides; near 0 for padded or letterboxed images.
* ``jpeg_bpp``: bits per pixel of the analysis copy re-encoded as JPEG at quality ``JPEG_QUALITY``
  (4:2:0, no optimisation); a proxy for visual information content. The ~600 header bytes are
  included, so it is only meaningful above ~64x64 px (a 1x1 image gives ~5000).
* ``blur``: population variance of the 4-neighbour Laplacian (0 1 0 / 1 -4 1 / 0 1 0) of the grey
  levels, on interior pixels; low for blurry images.
* ``colourfulness``: Hasler & Suesstrunk (2003): rg = R - G, yb = (R + G) / 2 - B,
  sqrt(std(rg)^2 + std(yb)^2) + 0.3 * sqrt(mean(rg)^2 + mean(yb)^2).
* ``entropy``: Shannon entropy (bits) of the 256-bin grey histogram.
* ``phash``: imagehash's DCT pHash (32x32 grey, top-left 8x8 against its median), as 64 bits.
"""

from __future__ import annotations

import io
import os
import re
from functools import cache

import imagehash
import numpy as np
import pyarrow as pa
from PIL import Image

from engine import schema
from engine.profiling.image_batch import batch_images, batch_rows, image_info, image_rows
from engine.profiling.ingest import ImageInfo

ANALYSIS_SIDE = 512  # px: blur/colour/entropy are stable under this downscale, and decoding, not
# analysis, then dominates the cost per image
JPEG_QUALITY = 75  # Pillow's default quality, so the number is easy to reproduce elsewhere

# Han ideographs (+ extension A, compatibility), kana, Hangul syllables and jamo.
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u1100-\u11ff\uac00-\ud7af]")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\u1100-\u11ff\uac00-\ud7af]")
_LETTER = re.compile(r"[^\W\d_]")


def analysis_copy(image: Image.Image) -> Image.Image:
    """The image downscaled so its longer side is at most ANALYSIS_SIDE (box filter: fast, no ringing)."""
    width, height = image.size
    longest = max(width, height)
    if longest <= ANALYSIS_SIDE:
        return image
    scale = ANALYSIS_SIDE / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BOX)


def border_variance(grey: np.ndarray) -> float:
    """Variance of the outer band of max(1, min(h, w) // 16) pixels."""
    h, w = grey.shape
    band = max(1, min(h, w) // 16)
    mask = np.zeros((h, w), dtype=bool)
    mask[:band, :] = mask[-band:, :] = True
    mask[:, :band] = mask[:, -band:] = True
    return float(grey[mask].var())


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian over interior pixels (0 for images under 3 px)."""
    if grey.shape[0] < 3 or grey.shape[1] < 3:
        return 0.0
    lap = grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:] - 4.0 * grey[1:-1, 1:-1]
    return float(lap.var())


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk's colourfulness M3 of an (h, w, 3) float array."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = r - g
    yb = 0.5 * (r + g) - b
    sigma = np.sqrt(rg.std() ** 2 + yb.std() ** 2)
    mu = np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    return float(sigma + 0.3 * mu)


def grey_entropy(grey_u8: np.ndarray) -> float:
    """Shannon entropy in bits of the 256-bin histogram."""
    counts = np.bincount(grey_u8.ravel(), minlength=256).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def jpeg_bits_per_pixel(image: Image.Image) -> float:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.tell() * 8 / (image.width * image.height)


def phash64(grey_image: Image.Image) -> int:
    """imagehash.phash as an unsigned 64-bit integer (row-major bits, first bit most significant)."""
    bits = imagehash.phash(grey_image).hash.ravel()
    return int("".join("1" if b else "0" for b in bits), 2)


def profile_image(image: Image.Image, info: ImageInfo) -> dict:
    """Image-level signals of a decoded RGB image (schema.SIGNALS columns)."""
    width, height = image.size
    small = analysis_copy(image)
    grey_image = small.convert("L")
    grey_u8 = np.asarray(grey_image)
    grey = grey_u8.astype(np.float64)
    return {
        "width": width,
        "height": height,
        "aspect": width / height,
        "image_format": info.image_format,
        "image_mode": info.image_mode,
        "bits_per_pixel": info.bits_per_pixel,
        "file_bytes": info.file_bytes,
        "phash": phash64(grey_image),
        "compression_ratio": width * height * info.bits_per_pixel / 8 / info.file_bytes,
        "border_variance": border_variance(grey),
        "jpeg_bpp": jpeg_bits_per_pixel(small),
        "blur": laplacian_variance(grey),
        "colourfulness": colourfulness(np.asarray(small, dtype=np.float64)),
        "entropy": grey_entropy(grey_u8),
    }


@cache
def _language_identifier():
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_modelpath(os.path.join(MODEL_DIR, MODEL_FILE), norm_probs=True)


def detect_language(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) from py3langid; 'und' when the text has no letters.

    langid is unreliable on a few CJK characters (it may say 'sr' for one Han character), so
    when every letter is CJK and langid does not name a CJK language, the script decides:
    kana -> ja, Hangul -> ko, otherwise zh (probability reported as 1.0 for the script rule).
    """
    letters = _LETTER.findall(text)
    if not letters:
        return "und", 0.0
    lang, prob = _language_identifier().classify(text)
    all_cjk = all(_CJK.match(c) for c in letters)
    if all_cjk and lang not in ("zh", "ja", "ko"):
        if _KANA.search(text):
            return "ja", 1.0
        return ("ko", 1.0) if _HANGUL.search(text) else ("zh", 1.0)
    return lang, float(prob)


def count_words(text: str) -> int:
    """Whitespace-separated tokens, where each CJK character counts as one word (no spaces in CJK)."""
    cjk = len(_CJK.findall(text))
    rest = _CJK.sub(" ", text).split()
    return cjk + len(rest)


def profile_caption(caption: str) -> dict:
    """Caption-level signals (schema.SIGNALS columns)."""
    lang, prob = detect_language(caption)
    return {
        "caption_chars": len(caption),
        "caption_words": count_words(caption),
        "caption_lang": lang,
        "caption_lang_prob": prob,
        "caption_has_cjk": bool(_CJK.search(caption)),
    }


def profile_batch(batch: pa.Table) -> pa.Table:
    """The ``signals`` rows of a batch (``schema.IMAGE_BATCH`` in, ``schema.SIGNALS`` out), one per
    row in order; the image signals are computed once per distinct image."""
    images, image_of_row = batch_images(batch)
    first, _ = image_rows(batch)
    per_image = [
        profile_image(image, image_info(batch, int(row))) for image, row in zip(images, first, strict=True)
    ]
    rows = [
        {"sample_id": sample_id, "image_id": image_id, **per_image[image], **profile_caption(caption)}
        for sample_id, image_id, caption, image in batch_rows(batch, image_of_row)
    ]
    return pa.Table.from_pylist(rows, schema=schema.SIGNALS)
