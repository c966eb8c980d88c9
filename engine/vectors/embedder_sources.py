"""Captioned image collections that the default embedder's heads are trained and measured on.

Every one installs from Debian, so nothing comes from a model hub:

| source | package | caption | licence |
|---|---|---|---|
| ``openclipart`` | openclipart-png, openclipart-svg | SVG title and keywords | public domain |
| ``noto-emoji`` | fonts-noto-color-emoji | the Unicode name ("red apple") | OFL-1.1 |
| ``gnome-icons`` | gnome-icon-theme | the freedesktop icon name ("camera photo") | GPL-3+ |
| ``elementary-icons`` | elementary-xfce-icon-theme | the icon name | GPL-2+ / CC-BY-SA-2.0 |
| ``tuxpaint`` | tuxpaint-stamps-default | the stamp's English description | GPL-2 |

``tuxpaint`` is reserved for independent evaluation (``RESERVED_SOURCES``): head training
refuses to train, tune or choose on it and only reports it. Each image comes as RGB with any
alpha composited over white, as ``zcurate curate`` decodes it.
"""

from __future__ import annotations

import glob
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_SIZE = 109  # the only size of Noto Color Emoji's CBDT bitmaps (136 x 128 px)
EMOJI_RANGES = ((0x2600, 0x27C0), (0x1F300, 0x1F650), (0x1F680, 0x1F700), (0x1F900, 0x1FB00))
ICON_ROOT = "/usr/share/icons"
ICON_THEMES = {"gnome-icons": "gnome", "elementary-icons": "elementary-xfce"}
# Icon contexts whose names say what the picture shows; apps and MIME types are brand and
# file-type names (``firefox``, ``application-x-gzip``), animations are sprite strips.
ICON_CONTEXTS = ("actions", "categories", "devices", "emblems", "emotes", "places", "status", "panel")
ICON_NAME_NOISE = {"gnome", "stock", "gtk", "xfce", "symbolic", "x", "dev", "fs", "mime"}
TUXPAINT_ROOT = "/usr/share/tuxpaint/stamps"

SOURCES = ("openclipart", "noto-emoji", "gnome-icons", "elementary-icons", "tuxpaint")
RESERVED_SOURCES = ("tuxpaint",)  # the project's independent evaluation set: never trained on
PACKAGES = {
    "openclipart": "openclipart-png openclipart-svg",
    "noto-emoji": "fonts-noto-color-emoji",
    "gnome-icons": "gnome-icon-theme",
    "elementary-icons": "elementary-xfce-icon-theme",
    "tuxpaint": "tuxpaint-stamps-default",
}


class SourceMissing(RuntimeError):
    """A training source's Debian package is not installed."""


@dataclass
class CaptionedImage:
    """One pair of a source: ``key`` is unique within it, ``basename`` groups the split."""

    source: str
    key: str
    caption: str
    basename: str
    image: Image.Image | None  # None: rejected, ``caption`` then holds the reason
    image_id: str = ""  # the image's content hash where the source has one (openclipart)


def over_white(image: Image.Image) -> Image.Image:
    """RGB with transparency composited over white (as ingest decodes PNGs)."""
    image.load()
    if image.mode in ("RGBA", "LA", "P", "PA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        return canvas.convert("RGB")
    return image.convert("RGB")


def stem_of(path: str) -> str:
    """A file's name without extension, folder or trailing copy numbers ('frog-1' -> 'frog')."""
    stem = os.path.splitext(os.path.basename(path))[0].lower()
    return re.sub(r"[-_ ]?\d+$", "", stem) or stem


def openclipart_images(limit: int | None = None) -> Iterator[CaptionedImage]:
    """Usable openclipart pairs, decoded exactly as ``zcurate curate`` decodes them."""
    from engine.profiling.ingest import IngestConfig, ingest_record
    from engine.profiling.source import load_source

    source = load_source("openclipart")
    rows = source.list_records()
    if limit is not None:
        rows = rows.slice(0, limit)
    config = IngestConfig()
    for record in source.read_records(rows):
        result = ingest_record(record, source.key, config)
        row = result.row
        if result.ok:
            name = stem_of(record.name)
            yield CaptionedImage(
                "openclipart", row["sample_id"], row["caption"], name, result.image, row["image_id"]
            )
        else:
            yield CaptionedImage("openclipart", str(record.ref), row["reject_reason"], "", None)


def emoji_images(limit: int | None = None) -> Iterator[CaptionedImage]:
    """Single-code-point emoji of Noto Color Emoji drawn on white, captioned with their Unicode name."""
    font = ImageFont.truetype(EMOJI_FONT, EMOJI_SIZE)
    missing = _draw_emoji(font, "\U000e007f")  # a code point the font has no glyph for
    count = 0
    for lo, hi in EMOJI_RANGES:
        for code in range(lo, hi):
            name = unicodedata.name(chr(code), "")
            if not name or (limit is not None and count >= limit):
                continue
            image = _draw_emoji(font, chr(code))
            if image.tobytes() == missing.tobytes() or image.getextrema() == ((255, 255),) * 3:
                continue  # no colour glyph for this character
            count += 1
            yield CaptionedImage("noto-emoji", f"U+{code:04X}", name.lower(), f"u+{code:04x}", image)


def _draw_emoji(font, text: str) -> Image.Image:
    image = Image.new("RGB", (136, 128), "white")
    ImageDraw.Draw(image).text((0, 0), text, font=font, embedded_color=True)
    return image


def icon_caption(name: str) -> str:
    """'camera-photo' -> 'camera photo'; toolkit prefixes and 'symbolic' dropped."""
    words = [w for w in re.split(r"[-_.]+", name.lower()) if w and w not in ICON_NAME_NOISE]
    return " ".join(words)


def icon_images(source: str, limit: int | None = None) -> Iterator[CaptionedImage]:
    """The icons of a theme (real files, not aliases), each name once at its largest PNG size."""
    theme_dir = os.path.join(ICON_ROOT, ICON_THEMES[source])
    best: dict[str, tuple[int, str]] = {}
    for path in sorted(glob.glob(os.path.join(theme_dir, "**", "*.png"), recursive=True)):
        parts = os.path.relpath(path, theme_dir).split(os.sep)
        if os.path.islink(path) or not set(parts[:-1]) & set(ICON_CONTEXTS):
            continue
        size = max((int(m) for p in parts[:-1] for m in re.findall(r"^(\d+)", p)), default=0)
        name = os.path.splitext(parts[-1])[0]
        if size <= 256 and size > best.get(name, (-1, ""))[0]:
            best[name] = (size, path)
    for count, name in enumerate(sorted(best)):
        if limit is not None and count >= limit:
            break
        caption = icon_caption(name)
        if not caption:
            continue
        with Image.open(best[name][1]) as image:
            yield CaptionedImage(source, name, caption, name.lower(), over_white(image))


def tuxpaint_images(limit: int | None = None) -> Iterator[CaptionedImage]:
    """Tux Paint stamps with the first (English) line of their description: evaluation only."""
    paths = sorted(glob.glob(os.path.join(TUXPAINT_ROOT, "**", "*.png"), recursive=True))
    count = 0
    for path in paths:
        text_path = os.path.splitext(path)[0] + ".txt"
        if not os.path.exists(text_path) or (limit is not None and count >= limit):
            continue
        with open(text_path, encoding="utf-8", errors="replace") as handle:
            caption = handle.readline().strip()
        if not caption:
            continue
        count += 1
        with Image.open(path) as image:
            key = os.path.relpath(path, TUXPAINT_ROOT)
            yield CaptionedImage("tuxpaint", key, caption, stem_of(path), over_white(image))


def source_images(source: str, limit: int | None = None) -> Iterator[CaptionedImage]:
    """The pairs of one named source, in a fixed order; a clear error when its package is missing."""
    if source not in SOURCES:
        raise ValueError(f"unknown training source {source!r}; choose from {', '.join(SOURCES)}")
    probe = {
        "openclipart": "/usr/share/openclipart/png",
        "noto-emoji": EMOJI_FONT,
        "tuxpaint": TUXPAINT_ROOT,
    }.get(source, os.path.join(ICON_ROOT, ICON_THEMES.get(source, "")))
    if not os.path.exists(probe):
        raise SourceMissing(
            f"source {source!r} needs the Debian package(s) {PACKAGES[source]}: apt-get install them"
        )
    if source == "openclipart":
        return openclipart_images(limit)
    if source == "noto-emoji":
        return emoji_images(limit)
    if source == "tuxpaint":
        return tuxpaint_images(limit)
    return icon_images(source, limit)
