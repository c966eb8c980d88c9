"""The defects a web crawl has, made from clean images: each function is one injected defect.

Every function is deterministic given its ``rng`` (a numpy Generator) and returns the file's bytes
and extension, so the pool builder writes exactly what it chose. Image edits work on RGB PIL images;
``junk`` makes files that are not pictures of anything (noise, a blank canvas) or not images at all.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

WATERMARK_WORDS = ("SAMPLE", "PREVIEW", "stock", "(c) photos", "DEMO", "watermark", "COPYRIGHT")


def encode(image: Image.Image, fmt: str = "PNG", quality: int = 90) -> tuple[bytes, str]:
    """An image as file bytes and the extension that names its format."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        image.convert("RGB").save(buf, "JPEG", quality=quality)
        return buf.getvalue(), ".jpg"
    image.save(buf, "PNG")
    return buf.getvalue(), ".png"


# --- light edits: the copies of a near-duplicate flood -------------------------------------------


def light_edit(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """One re-upload of an image: resized, slightly cropped, re-encoded, a little brighter or darker."""
    w, h = image.size
    crop = rng.uniform(0.0, 0.06)
    left, top = int(w * crop * rng.uniform()), int(h * crop * rng.uniform())
    edited = image.crop((left, top, left + int(w * (1 - crop)), top + int(h * (1 - crop))))
    scale = rng.uniform(0.6, 1.1)
    edited = edited.resize((max(16, int(edited.width * scale)), max(16, int(edited.height * scale))))
    gain = rng.uniform(0.9, 1.1)
    edited = Image.fromarray(np.clip(np.asarray(edited, dtype=np.float32) * gain, 0, 255).astype(np.uint8))
    if rng.uniform() < 0.5:
        return encode(edited, "JPEG", int(rng.integers(60, 95)))
    return encode(edited)


# --- low quality -----------------------------------------------------------------------------------


def heavy_blur(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    radius = max(image.size) * rng.uniform(0.03, 0.05)
    return encode(image.filter(ImageFilter.GaussianBlur(radius)))


def tiny_upscaled(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """Shrunk to 8-12 px on its longer side, then blown back up to its size."""
    side = int(rng.integers(8, 13))
    scale = side / max(image.size)
    tiny = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    return encode(tiny.resize(image.size, Image.Resampling.NEAREST))


def jpeg_q5(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    return encode(image, "JPEG", 5)


def letterbox(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """The image in a band across a wide black (or dark) canvas: most of the frame is border."""
    w, h = image.size
    canvas = Image.new("RGB", (w * 2, int(h * 1.4)), tuple(int(c) for c in rng.integers(0, 40, 3)))
    canvas.paste(image, (w // 2, int(h * 0.2)))
    return encode(canvas)


LOW_QUALITY = {"blur": heavy_blur, "tiny_upscaled": tiny_upscaled, "jpeg_q5": jpeg_q5, "letterbox": letterbox}


# --- text the caption does not mention --------------------------------------------------------------


def font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one fixed-size default font
        return ImageFont.load_default()


def watermark(image: Image.Image, rng: np.random.Generator) -> tuple[bytes, str]:
    """A large word (or a few) stamped across the image, tiled or once in the middle."""
    out = image.copy()
    draw = ImageDraw.Draw(out)
    word = WATERMARK_WORDS[int(rng.integers(len(WATERMARK_WORDS)))]
    size = max(12, int(min(out.size) * rng.uniform(0.12, 0.2)))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    if rng.uniform() < 0.5:
        draw.text((out.width * 0.08, out.height * 0.4), word, fill=colour, font=font(size))
    else:
        for y in np.linspace(0.05, 0.85, 4):
            draw.text((out.width * rng.uniform(0.0, 0.3), out.height * y), word, fill=colour, font=font(size))
    return encode(out)


# --- junk ---------------------------------------------------------------------------------------------


def noise(rng: np.random.Generator, size: int) -> tuple[bytes, str]:
    return encode(Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))


def blank(rng: np.random.Generator, size: int) -> tuple[bytes, str]:
    return encode(Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(0, 256, 3))))


def corrupt(rng: np.random.Generator, valid: bytes) -> tuple[bytes, str]:
    """A file named like an image that is not one: truncated, random bytes, or empty."""
    kind = int(rng.integers(3))
    if kind == 0:
        return valid[: max(32, len(valid) // 3)], ".png"  # truncated mid-stream
    if kind == 1:
        return rng.integers(0, 256, 2048, dtype=np.uint8).tobytes(), ".jpg"  # not an image
    return b"", ".png"  # zero bytes
