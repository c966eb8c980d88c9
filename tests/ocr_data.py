"""Rendered-text images with known ground truth, for OCR tests and bench/bench_ocr.py.

Fonts come from the apt packages the set-up installs (fonts-noto-cjk, fonts-wqy-microhei) plus
DejaVu where present, found through fontconfig (``fc-list``). Backgrounds are real images no one
here drew: scikit-image's bundled photos (read from its data folder, never fetched) and
openclipart PNGs from Debian.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

OPENCLIPART_PNG = "/usr/share/openclipart/png"
SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png")


@dataclass(frozen=True)
class FontSpec:
    path: str
    index: int  # face inside a .ttc collection
    name: str
    cjk: bool  # has Han characters


# (file name, face index of the Simplified Chinese face, has Han): the installed fonts we render with.
_FONT_FILES = (
    ("DejaVuSans.ttf", 0, False),
    ("DejaVuSerif.ttf", 0, False),
    ("DejaVuSansMono.ttf", 0, False),
    ("NotoSansCJK-Regular.ttc", 2, True),
    ("NotoSerifCJK-Regular.ttc", 2, True),
    ("NotoSansCJK-Bold.ttc", 2, True),
    ("wqy-microhei.ttc", 0, True),
)


@cache
def installed_fonts() -> tuple[FontSpec, ...]:
    """The fonts of _FONT_FILES that fontconfig knows, in that order."""
    listing = subprocess.run(
        ["fc-list", "--format", "%{file}\n"], capture_output=True, text=True, check=True
    ).stdout.split()
    by_name = {os.path.basename(p): p for p in sorted(set(listing))}
    fonts = []
    for file_name, index, cjk in _FONT_FILES:
        if file_name in by_name:
            face = ImageFont.truetype(by_name[file_name], 20, index=index)
            fonts.append(FontSpec(by_name[file_name], index, " ".join(face.getname()), cjk))
    return tuple(fonts)


def font(cjk: bool, n: int = 0) -> FontSpec:
    """The n-th installed font that can (cjk=True) or need not render Han characters."""
    candidates = [f for f in installed_fonts() if f.cjk or not cjk]
    if not cjk:  # prefer Latin fonts for Latin text, CJK fonts still render it
        candidates = [f for f in installed_fonts() if not f.cjk] + [f for f in installed_fonts() if f.cjk]
    return candidates[n % len(candidates)]


def skimage_photo(name: str) -> Image.Image:
    """A photo bundled with scikit-image, read from its data folder (no download)."""
    import skimage.data

    return Image.open(os.path.join(skimage.data.data_dir, name)).convert("RGB")


@cache
def openclipart_pngs() -> tuple[str, ...]:
    paths = []
    for root, _, files in os.walk(OPENCLIPART_PNG):
        paths += [os.path.join(root, f) for f in files if f.endswith(".png")]
    # Under 512 KB: skips the few huge ones (openclipart ships PNGs of 100+ megapixels).
    return tuple(sorted(p for p in paths if os.path.getsize(p) < 512 * 1024))


def openclipart_image(n: int, size: tuple[int, int]) -> Image.Image:
    """The n-th openclipart PNG (sorted paths), flattened on white and fitted into ``size``."""
    path = openclipart_pngs()[n % len(openclipart_pngs())]
    with Image.open(path) as im:
        im.draft("RGB", size)
        rgba = im.convert("RGBA")
    rgba.thumbnail(size)
    canvas = Image.new("RGB", size, "white")
    canvas.paste(rgba, ((size[0] - rgba.width) // 2, (size[1] - rgba.height) // 2), rgba)
    return canvas


def fit_background(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Centre-crop and resize a background to ``size``."""
    w, h = image.size
    scale = max(size[0] / w, size[1] / h)
    resized = image.resize((max(size[0], round(w * scale)), max(size[1], round(h * scale))))
    left, top = (resized.width - size[0]) // 2, (resized.height - size[1]) // 2
    return resized.crop((left, top, left + size[0], top + size[1]))


def render_lines(
    lines: list[str],
    spec: FontSpec,
    size_px: int,
    background: Image.Image | None = None,
    margin: int = 24,
    fill: str = "black",
    stroke: str | None = None,
) -> Image.Image:
    """Lines of text, one under the other, on white or on ``background`` (fitted to the text).

    With ``stroke`` the glyphs get an outline of that colour (legible on any photo).
    """
    face = ImageFont.truetype(spec.path, size_px, index=spec.index)
    stroke_width = max(1, size_px // 12) if stroke else 0
    boxes = [face.getbbox(line, stroke_width=stroke_width) for line in lines]
    line_h = max(b[3] - b[1] for b in boxes)
    gap = size_px // 2
    width = max(b[2] - b[0] for b in boxes) + 2 * margin
    height = len(lines) * line_h + (len(lines) - 1) * gap + 2 * margin
    canvas = (
        Image.new("RGB", (width, height), "white")
        if background is None
        else fit_background(background, (width, height))
    )
    draw = ImageDraw.Draw(canvas)
    y = margin
    for line, box in zip(lines, boxes, strict=True):
        draw.text(
            (margin - box[0], y - box[1]),
            line,
            font=face,
            fill=fill,
            stroke_width=stroke_width,
            stroke_fill=stroke,
        )
        y += line_h + gap
    return canvas


def paste_text(
    image: Image.Image,
    text: str,
    spec: FontSpec,
    size_px: int,
    xy: tuple[int, int],
    fill="white",
    stroke="black",
) -> Image.Image:
    """``image`` with one line of outlined text drawn at ``xy`` (top-left of the text)."""
    out = image.copy()
    face = ImageFont.truetype(spec.path, size_px, index=spec.index)
    ImageDraw.Draw(out).text(
        xy, text, font=face, fill=fill, stroke_width=max(1, size_px // 12), stroke_fill=stroke
    )
    return out


def gradient(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A smooth colour gradient: an image without any text."""
    rng = np.random.default_rng(seed)
    w, h = size
    a, b = rng.integers(40, 215, 3), rng.integers(40, 215, 3)
    t = np.linspace(0, 1, w)[None, :, None]
    pixels = (a * (1 - t) + b * t).repeat(h, axis=0)
    return Image.fromarray(pixels.astype(np.uint8), "RGB")
