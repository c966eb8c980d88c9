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
import uuid

from PIL import Image

from engine.profiling.ingest import Reject, read_sample_image
from engine.workspace import Workspace

THUMB_DIR = f"{Workspace.cache}/thumbnails"
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
        data = make_thumbnail(read_sample_image(uri))
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
