"""Thumbnails for the dashboard: a sample's image scaled to fit THUMB_SIDE, made on first request.

A thumbnail is cached in the workspace at ``_cache/thumbnails/<2 hex>/<sample_id>.jpg`` (the two
hex digits spread 1M files over 256 folders) and written atomically (a temporary file in the same
folder, then a rename), so two requests racing on one sample each write a whole file and a reader
never sees half of one. A sample id is a hash of the image bytes and the caption, so a cached
thumbnail never goes stale: its ETag is the sample id and the thumbnail format's version.
"""

from __future__ import annotations

import io
import os
import tarfile
import uuid

import pyarrow as pa
from PIL import Image

from engine.ingest import IngestConfig, Reject, decode_image
from engine.source import open_filesystem
from engine.workspace import Workspace

THUMB_DIR = "_cache/thumbnails"
THUMB_SIDE = 256  # longest side in pixels: a grid cell on a laptop screen is ~180 px, 256 stays sharp
THUMB_QUALITY = 82  # JPEG quality: ~8-15 kB per thumbnail, no visible artefacts at grid size
THUMB_VERSION = "v1"  # change it with THUMB_SIDE or THUMB_QUALITY: browsers then fetch new ones
MEDIA_TYPE = "image/jpeg"


class ThumbnailError(ValueError):
    """The sample has no image that can be read (a rejected sample, a file removed since)."""


def thumbnail_rel(sample_id: str) -> str:
    """The cached thumbnail's path relative to the workspace root."""
    return f"{THUMB_DIR}/{sample_id[:2]}/{sample_id}.jpg"


def thumbnail_etag(sample_id: str) -> str:
    return f'"{sample_id}-{THUMB_VERSION}"'


def read_image(uri: str) -> Image.Image:
    """Decode the image at a sample's uri (path, pyarrow URI or ``archive.tar#member``) as ingest
    did (``engine.s3dit.data.read_image`` does the same for training, but imports torch).

    Raises:
        Reject: the file is missing or does not decode.
    """
    if "#" in uri and uri.split("#", 1)[0].endswith(".tar"):
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


def make_thumbnail(image: Image.Image, side: int = THUMB_SIDE) -> bytes:
    """JPEG bytes of ``image`` scaled (never up) so its longest side is at most ``side``."""
    image = image.convert("RGB")  # decoded samples are RGB already; a caller's image may not be
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=THUMB_QUALITY, optimize=True)
    return out.getvalue()


def ensure_thumbnail(ws: Workspace, sample_id: str, uri: str | None) -> str:
    """The path of the sample's cached thumbnail, made from the image at ``uri`` if missing.

    Raises:
        ThumbnailError: no uri, or the image cannot be read or decoded.
    """
    path = ws.path(thumbnail_rel(sample_id))
    if os.path.isfile(path):
        return path
    if not uri:
        raise ThumbnailError(f"sample {sample_id} has no image")
    try:
        data = make_thumbnail(read_image(uri))
    except Reject as e:
        raise ThumbnailError(f"sample {sample_id}: {e.reason}") from None
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ThumbnailError(f"sample {sample_id}: cannot decode ({type(e).__name__})") from None
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    return path
