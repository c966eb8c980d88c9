"""Real near-duplicates: openclipart images and edited copies of them (dedup tests, calibration).

The edits are the ones a crawl meets: a resized copy, a JPEG re-encode, a crop, a mirror image,
a recoloured copy and a watermarked one. Everything is deterministic (fixed parameters, files
picked by a seeded generator), so the tests and ``scripts/calibrate_dedup.py`` see the same data.
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from engine.profiling.ingest import to_rgb
from engine.profiling.openclipart_source import OPENCLIPART_ROOT

MAX_SIDE = 384  # originals are downscaled to this: openclipart PNGs run to 16000 px, and the
# embedder sees 224 px anyway; a resize of the *original* is not one of the edits under test
MAX_FILE_BYTES = 4 << 20  # skip the few huge PNGs: slow to decode, nothing special to learn

EDITS = ("resized", "reencoded", "cropped", "flipped", "recoloured", "watermarked")


def openclipart_files(n: int, seed: int, skip: int = 0) -> list[str]:
    """``n`` openclipart PNG paths picked by ``seed`` (after the first ``skip`` picks)."""
    root = os.path.join(OPENCLIPART_ROOT, "png")
    files = sorted(
        os.path.join(d, f) for d, _, names in os.walk(root) for f in names if f.lower().endswith(".png")
    )
    order = np.random.default_rng(seed).permutation(len(files))
    picked, names = [], set()
    for i in order:  # openclipart files one picture under several folders: take one of them
        name = os.path.basename(files[i])
        if os.path.getsize(files[i]) <= MAX_FILE_BYTES and name not in names:
            names.add(name)
            picked.append(files[i])
        if len(picked) == skip + n:
            break
    return picked[skip : skip + n]


def load_original(path: str) -> Image.Image:
    """An openclipart PNG as ingest sees it (alpha flattened over white), at most MAX_SIDE px."""
    with Image.open(path) as im:
        im.load()
        image, _ = to_rgb(im)
    image = image.copy()
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def watermark(image: Image.Image) -> Image.Image:
    """A semi-transparent diagonal text watermark across the middle, as stock sites stamp."""
    w, h = image.size
    layer = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    font = ImageFont.load_default(size=max(10, w // 8))
    draw = ImageDraw.Draw(layer)
    draw.text((w * 0.08, h * 0.4), "© STOCK", font=font, fill=(128, 128, 128, 140))
    layer = layer.rotate(30, resample=Image.Resampling.BICUBIC)
    return Image.alpha_composite(image.convert("RGBA"), layer).convert("RGB")


def recolour(image: Image.Image) -> Image.Image:
    """Hue rotated by a third of the circle (red -> green -> blue), saturation and value kept."""
    hsv = np.asarray(image.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(np.int32) + 85) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


def edit(image: Image.Image, name: str) -> tuple[bytes, str]:
    """One edited copy of ``image``: (file bytes, extension)."""
    w, h = image.size
    if name == "resized":
        return png(image.resize((max(1, w // 2), max(1, h // 2)), Image.Resampling.LANCZOS)), ".png"
    if name == "reencoded":
        return jpeg(image, quality=30), ".jpg"
    if name == "cropped":  # 10% off each side: 64% of the area left
        return png(image.crop((w // 10, h // 10, w - w // 10, h - h // 10))), ".png"
    if name == "flipped":
        return png(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)), ".png"
    if name == "recoloured":
        return png(recolour(image)), ".png"
    if name == "watermarked":
        return png(watermark(image)), ".png"
    raise ValueError(name)


def decode(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")
