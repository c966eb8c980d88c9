"""Real near-duplicates: openclipart images and edited copies of them (dedup tests, calibration).

The edits are the ones a crawl meets: a resized copy, a JPEG re-encode, a crop, a mirror image,
a recoloured copy and a watermarked one; ``CRAWL_EDITS`` (``scripts/calibrate_dedup.py``) adds
crops of 10-30%, a frame, a letterbox, a caption bar and colour jitter. Everything is
deterministic (fixed parameters and seeds, files picked by a seeded generator), so the tests and
``scripts/calibrate_dedup.py`` see the same data.
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


# --- the issue-21 edit set: what a crawl does to an image (calibration and evaluation) ----------

CRAWL_EDITS = (
    "resized",  # 1/2 each side, Lanczos
    "reencoded",  # JPEG quality 30
    "crop10",  # 10% of each dimension cut off, at a seeded offset
    "crop20",
    "crop30",
    "border",  # a solid frame of 8% of the shorter side, in a seeded colour
    "letterbox",  # black bars to a 16:9 canvas (pillarbox for wide images: bars to 9:16)
    "watermarked",  # the diagonal "© STOCK" of ``watermark``
    "caption",  # a text bar along the bottom, as meme and stock sites add
    "flipped",  # mirrored left-right
    "jitter",  # brightness, contrast and saturation each scaled by a seeded 0.8-1.2
)


def crop_off(image: Image.Image, fraction: float, rng: np.random.Generator) -> Image.Image:
    """Cut ``fraction`` of the width and of the height off, split between the sides at random."""
    w, h = image.size
    cw, ch = max(1, round(w * (1 - fraction))), max(1, round(h * (1 - fraction)))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return image.crop((x, y, x + cw, y + ch))


def letterbox(image: Image.Image) -> Image.Image:
    """The image centred on a black 16:9 canvas (9:16 when it is wider than tall)."""
    w, h = image.size
    if w >= h:
        cw, ch = w, max(h, round(w * 16 / 9))
    else:
        cw, ch = max(w, round(h * 16 / 9)), h
    canvas = Image.new("RGB", (cw, ch), (0, 0, 0))
    canvas.paste(image, ((cw - w) // 2, (ch - h) // 2))
    return canvas


def caption_bar(image: Image.Image, text: str = "when the build is green") -> Image.Image:
    """A white text bar over the bottom sixth of the image."""
    out = image.copy()
    w, h = out.size
    draw = ImageDraw.Draw(out)
    bar = max(10, h // 6)
    draw.rectangle((0, h - bar, w, h), fill=(255, 255, 255))
    font = ImageFont.load_default(size=max(8, bar // 2))
    draw.text((w * 0.05, h - bar * 0.8), text, font=font, fill=(0, 0, 0))
    return out


def crawl_edit(image: Image.Image, name: str, seed: int) -> Image.Image:
    """One of ``CRAWL_EDITS`` applied to ``image``, decoded again (seeded: same copy every run)."""
    from PIL import ImageEnhance, ImageOps

    rng = np.random.default_rng(seed)
    w, h = image.size
    if name.startswith("crop"):
        return crop_off(image, int(name[4:]) / 100, rng)
    if name == "border":
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        return ImageOps.expand(image, border=max(1, round(min(w, h) * 0.08)), fill=colour)
    if name == "letterbox":
        return letterbox(image)
    if name == "caption":
        return caption_bar(image)
    if name == "jitter":
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(float(rng.uniform(0.8, 1.2)))
        return image
    return decode(edit(image, name)[0])
