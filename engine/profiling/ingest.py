"""Ingest: judge one raw record into a ``samples`` row and, when usable, a decoded RGB image.

Nothing here raises for bad input. An unusable pair becomes ``status = "rejected"`` with a
reason from ``schema.REJECT_REASONS``; a usable pair with something odd about it keeps
``status = "ok"`` and gets codes from ``schema.WARNINGS``.

Ids: ``image_id = blake2b-128(image bytes)``; ``sample_id = blake2b-128(image bytes digest,
caption)`` for a usable pair. A rejected record has no trustworthy content, so its
``sample_id`` hashes (source key, ref) instead; that keeps ``sample_id`` unique over the whole
``samples`` table, rejects and duplicates included.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
import unicodedata
import warnings
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from engine import schema
from engine.profiling.records import RawRecord, SourceError, open_filesystem
from engine.profiling.table_source import read_embedded

# We enforce IngestConfig.max_pixels ourselves before decoding, so Pillow's own global limit
# (89 MP warning, 179 MP error) is lifted; otherwise it would fire before our configurable check.
Image.MAX_IMAGE_PIXELS = None
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail to load, so we can reject it

# Pillow format name -> the file extensions that are honest for it.
FORMAT_EXTENSIONS = {
    "JPEG": {".jpg", ".jpeg", ".jfif", ".jpe"},
    "PNG": {".png"},
    "WEBP": {".webp"},
    "GIF": {".gif"},
    "BMP": {".bmp", ".dib"},
    "TIFF": {".tif", ".tiff"},
    "PPM": {".ppm", ".pgm", ".pbm", ".pnm"},
    "MPO": {".jpg", ".jpeg", ".mpo"},  # multi-picture JPEGs from cameras
}

# Bits per pixel of Pillow modes, for the compression ratio's "ideal raw size".
MODE_BITS = {
    "1": 1,
    "L": 8,
    "P": 8,
    "LA": 16,
    "PA": 16,
    "RGB": 24,
    "YCbCr": 24,
    "LAB": 24,
    "HSV": 24,
    "RGBA": 32,
    "RGBa": 32,
    "CMYK": 32,
    "I;16": 16,
    "I;16B": 16,
    "I;16L": 16,
    "I": 32,
    "F": 32,
}
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # PNG colour type -> samples per pixel

# C0/C1 control characters other than tab and newline: invisible, and they break tokenisers.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


@dataclass
class IngestConfig:
    """Limits applied to every record. Each default says why it has its value."""

    max_pixels: int = 100_000_000  # 100 MP: larger than any training bucket needs by 50x; above
    # it a single decode takes >300 MB of RAM per worker (the classic decompression bomb).
    max_file_bytes: int = 256 * 2**20  # 256 MiB: no real photo is near; refuse before reading
    max_caption_chars: int = 4000  # detailed multi-level captions run to ~1-2k characters;
    # beyond 4k it is almost always scraped page text, kept but truncated with a warning


@dataclass
class ImageInfo:
    """What the profiler needs to know about the file, besides the decoded pixels."""

    image_format: str  # Pillow's format name
    image_mode: str  # the original mode, before conversion to RGB
    bits_per_pixel: int  # of the original encoding
    file_bytes: int


@dataclass
class IngestResult:
    """One judged record: its samples row, and for usable pairs the decoded image."""

    row: dict  # a samples row (schema.SAMPLES columns except shard_id/row_index/source*)
    image: Image.Image | None = None  # RGB, EXIF-oriented; None when rejected
    info: ImageInfo | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.row["status"] == schema.STATUS_OK


class Reject(Exception):
    """Internal: a record is unusable for ``reason``."""

    def __init__(self, reason: str, detail: str | None = None):
        super().__init__(reason)
        self.reason, self.detail = reason, detail


# --- ids ----------------------------------------------------------------------------------------


def make_image_id(image_bytes: bytes) -> str:
    return hashlib.blake2b(image_bytes, digest_size=16).hexdigest()


def make_sample_id(image_id: str, caption: str) -> str:
    return hashlib.blake2b(f"{image_id}\x00{caption}".encode(), digest_size=16).hexdigest()


def make_rejected_id(source_key: str, ref: str) -> str:
    return hashlib.blake2b(f"rejected\x00{source_key}\x00{ref}".encode(), digest_size=16).hexdigest()


# --- captions -----------------------------------------------------------------------------------


def clean_caption(raw: bytes | None, max_chars: int) -> tuple[str, list[str]]:
    """Decode and tidy a caption: NFC, no control characters, trimmed, at most ``max_chars``.

    Raises ``Reject`` for a missing or empty caption. Returns (caption, warning codes).
    """
    if raw is None:
        raise Reject("missing_caption")
    found: list[str] = []
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", "replace")
        found.append("caption_not_utf8")
    text = unicodedata.normalize("NFC", text.lstrip("\ufeff"))
    cleaned = _CONTROL.sub("", text)
    if cleaned != text:
        found.append("caption_control_chars_removed")
    text = cleaned.strip()
    if not text:
        raise Reject("empty_caption")
    if len(text) > max_chars:
        text = text[:max_chars].rstrip()
        found.append("caption_truncated")
    return text, found


# --- images -------------------------------------------------------------------------------------


def bits_per_pixel(image: Image.Image, data: bytes) -> int:
    """Bits per pixel of the encoded original: PNG's own header when it is a PNG, else its mode."""
    if image.format == "PNG" and len(data) >= 26 and data[12:16] == b"IHDR":
        depth, colour_type = data[24], data[25]
        return depth * PNG_CHANNELS.get(colour_type, 3)
    return MODE_BITS.get(image.mode, 24)


def to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """Convert any Pillow mode to 8-bit RGB; transparent pixels are composited over white."""
    mode = image.mode
    if mode == "RGB":
        return image, []
    found = ["converted_mode"]
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit data (the common case for I modes) is scaled to 0..255; 8-bit data in an I image
        # is kept as is, so a re-saved 8-bit greyscale image does not turn black.
        scale = 255.0 / 65535.0 if values.max(initial=0) > 255 else 1.0
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB"), found
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("PA", "LA", "RGBa", "La"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        alpha = image.getchannel("A")
        if alpha.getextrema()[0] < 255:
            found.append("alpha_flattened")
        white = Image.new("RGB", image.size, (255, 255, 255))
        white.paste(image, mask=alpha)
        return white, found
    return image.convert("RGB"), found


def decode_image(data: bytes, name: str, cfg: IngestConfig) -> tuple[Image.Image, ImageInfo, list[str]]:
    """Decode bytes into an RGB, EXIF-oriented image, or raise ``Reject``."""
    if not data:
        raise Reject("empty_file", "0 bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's EXIF and palette warnings: handled below
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:  # Pillow's message names a memory address: not reproducible
        raise Reject("not_an_image", f"unknown format, first bytes {data[:8].hex()}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise Reject("corrupt_image", f"header: {e}") from None
    width, height = image.size
    if width * height > cfg.max_pixels:
        raise Reject("decompression_bomb", f"{width}x{height} = {width * height} px > limit {cfg.max_pixels}")
    if width < 1 or height < 1:
        raise Reject("corrupt_image", f"size {width}x{height}")
    found: list[str] = []
    image_format = image.format or "unknown"
    extension = ("." + name.rsplit(".", 1)[-1].lower()) if "." in name else ""
    if extension and extension not in FORMAT_EXTENSIONS.get(image_format, {extension}):
        found.append("extension_mismatch")
    if getattr(image, "n_frames", 1) > 1:
        found.append("animated_first_frame")  # Image.open leaves the first frame selected
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except OSError as e:
        reason = "truncated_image" if "truncated" in str(e).lower() else "corrupt_image"
        raise Reject(reason, str(e)) from None
    except (SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise Reject("corrupt_image", f"{type(e).__name__}: {e}") from None
    info = ImageInfo(image_format, image.mode, bits_per_pixel(image, data), len(data))
    try:
        orientation = image.getexif().get(0x0112, 1)  # EXIF Orientation tag
    except Exception:  # a broken EXIF block must not lose an otherwise fine image
        orientation = 1
    if orientation not in (1, None):
        try:
            image = ImageOps.exif_transpose(image)
            found.append("exif_rotated")
        except Exception:  # unknown orientation value: keep the stored pixels
            pass
    rgb, converted = to_rgb(image)
    return rgb, info, found + converted


# --- one record ---------------------------------------------------------------------------------


def read_sample_image(uri: str) -> Image.Image:
    """Read and decode a curated sample's image again (path, pyarrow URI, ``archive.tar#member`` or
    ``table.parquet#COLUMN:ROW``)
    as ingest did: for training batches and dashboard thumbnails.

    Raises:
        Reject: the file is missing or does not decode (its reason, as in ingest).
    """
    if "#" in uri and uri.rsplit("#", 1)[0].endswith(".parquet"):  # an image stored in a table
        try:
            data = read_embedded(uri)
        except SourceError as e:
            raise Reject("missing_file", str(e)) from None
    elif "#" in uri and uri.split("#", 1)[0].endswith(".tar"):
        path, member = uri.split("#", 1)
        try:
            with tarfile.open(path) as tar:
                data = tar.extractfile(member).read()
        except (OSError, KeyError, AttributeError, tarfile.TarError) as e:
            raise Reject("missing_file", f"{uri}: {e}") from None
    else:
        try:
            fs, path = open_filesystem(uri)
            with fs.open_input_stream(path) as f:
                data = f.read()
        except (OSError, ValueError, pa.ArrowException) as e:
            raise Reject("missing_file", f"{uri}: {e}") from None
    image, _, _ = decode_image(data, os.path.basename(uri), IngestConfig())
    return image


def ingest_record(raw: RawRecord, source_key: str, cfg: IngestConfig) -> IngestResult:
    """Judge one record. Never raises for bad input."""
    row = {
        "ref": raw.ref,
        "uri": raw.uri,
        "caption": None,
        "image_id": None,
        "status": schema.STATUS_OK,
        "reject_reason": None,
        "reject_detail": None,
        "warnings": [],
        "meta": raw.meta,  # the source's own fields for the record (JSON), kept as they came
    }
    found: list[str] = []
    try:
        if raw.image_bytes is not None:
            row["image_id"] = make_image_id(raw.image_bytes)
        try:
            caption, caption_warnings = clean_caption(raw.caption_bytes, cfg.max_caption_chars)
            row["caption"] = caption
            found += caption_warnings
        except Reject as caption_problem:
            caption = None
            if raw.caption_bytes is not None:  # an empty caption is still shown in the row
                row["caption"] = raw.caption_bytes.decode("utf-8", "replace").strip()
            if raw.error is None:
                raise caption_problem from None
        if raw.error is not None:
            raise Reject(raw.error, raw.detail)
        image, info, image_warnings = decode_image(raw.image_bytes, raw.name, cfg)
        found += image_warnings
    except Reject as r:
        row.update(
            status=schema.STATUS_REJECTED,
            reject_reason=r.reason,
            reject_detail=r.detail,
            warnings=found,
            sample_id=make_rejected_id(source_key, raw.ref),
        )
        return IngestResult(row=row, warnings=found)
    except Exception as e:  # a bug or a library crash on one file must not stop the shard
        row.update(
            status=schema.STATUS_REJECTED,
            reject_reason="internal_error",
            reject_detail=f"{type(e).__name__}: {e}",
            warnings=found,
            sample_id=make_rejected_id(source_key, raw.ref),
        )
        return IngestResult(row=row, warnings=found)
    row["sample_id"] = make_sample_id(row["image_id"], caption)
    row["warnings"] = found
    return IngestResult(row=row, image=image, info=info, warnings=found)


# --- duplicate rows -----------------------------------------------------------------------------


def reject_duplicate(sample: dict, kept: str, source_key: str) -> None:
    """Turn a usable samples row into a rejected duplicate of the row at ``kept`` (shard_id:row_index)."""
    sample.update(
        status=schema.STATUS_REJECTED,
        reject_reason="duplicate_sample",
        reject_detail=f"same image and caption as {kept}",
        sample_id=make_rejected_id(source_key, sample["ref"]),
    )


def find_duplicate_rows(samples: pa.Table) -> pa.Table:
    """Usable rows whose sample_id was seen earlier; the earliest (shard_id, row_index) is kept.

    Args:
        samples: at least sample_id, status, shard_id, row_index, ref.
    Returns:
        The duplicate rows (same columns) with a ``kept`` column naming the row that was kept.
    """
    ok = samples.filter(pc.equal(samples["status"], schema.STATUS_OK))
    if ok.num_rows == 0:
        return ok.append_column("kept", pa.array([], pa.string()))
    ok = ok.sort_by([("sample_id", "ascending"), ("shard_id", "ascending"), ("row_index", "ascending")])
    ids = ok["sample_id"].to_numpy(zero_copy_only=False)
    repeat = np.zeros(len(ids), dtype=bool)
    repeat[1:] = ids[1:] == ids[:-1]
    first_index = np.maximum.accumulate(np.where(~repeat, np.arange(len(ids)), 0))
    shards = ok["shard_id"].to_numpy(zero_copy_only=False)
    rows = ok["row_index"].to_numpy()
    kept = [f"{shards[i]}:{rows[i]}" for i in first_index[repeat]]
    return ok.filter(pa.array(repeat)).append_column("kept", pa.array(kept, pa.string()))
