"""A batch of decoded images as an Arrow table (``schema.IMAGE_BATCH``): what every stage receives.

The curate job (``pipelines.runner``) collects a shard's usable samples into batches with
:class:`ImageBatchBuilder`; a stage turns a batch back into images with :func:`batch_images`, which
gives each distinct image once and, per row, which image it is, so image work (signals, OCR, an
embedding, an NSFW score) is done once per image while caption work is done per row.

A batch is full at ``BATCH_IMAGES`` distinct images or ``BATCH_BYTES`` of pixels, whichever comes
first: the bound on what one worker holds in memory at a time. A shard of the default size whose
images fit in ``BATCH_BYTES`` is one batch, so stages see the whole shard at once (the embedder's
caption batches, for one, are then the same as when it worked shard by shard).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from PIL import Image

from engine import schema
from engine.profiling.ingest import ImageInfo

BATCH_IMAGES = 256  # distinct images per batch: a default shard (pipelines.curate.DEFAULT_SHARD_SIZE)
BATCH_BYTES = 256 << 20  # RGB bytes per batch: ~340 web images of 0.25 MP, ~7 photos of 12 MP; one
# image bigger than that is a batch of its own (ingest caps an image at 100 MP, 300 MB)


class ImageBatchBuilder:
    """Collects usable samples (a samples row, its decoded image and ingest's ImageInfo) into batches."""

    def __init__(self, max_images: int = BATCH_IMAGES, max_bytes: int = BATCH_BYTES):
        self.max_images, self.max_bytes = max_images, max_bytes
        self._start()

    def _start(self) -> None:
        """An empty batch."""
        self._rows: list[dict] = []
        self._pixels: list[bytes] = []  # one entry per distinct image
        self._entry_of: dict[str, int] = {}  # image_id -> index into _pixels
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def full(self) -> bool:
        return len(self._pixels) >= self.max_images or self._bytes >= self.max_bytes

    def add(self, row: dict, image: Image.Image, info: ImageInfo) -> None:
        """Add one usable sample (``row`` has sample_id, image_id, caption); its image is kept
        once per batch, however many captions come with it."""
        entry = self._entry_of.get(row["image_id"])
        if entry is None:
            entry = self._entry_of[row["image_id"]] = len(self._pixels)
            self._pixels.append(image.tobytes())
            self._bytes += len(self._pixels[-1])
        self._rows.append(
            {
                "sample_id": row["sample_id"],
                "image_id": row["image_id"],
                "caption": row["caption"],
                "width": image.width,
                "height": image.height,
                "entry": entry,
                "image_format": info.image_format,
                "image_mode": info.image_mode,
                "bits_per_pixel": info.bits_per_pixel,
                "file_bytes": info.file_bytes,
            }
        )

    def take(self) -> pa.Table:
        """The batch as a table (schema.IMAGE_BATCH), and an empty builder again."""
        rows, pixels = self._rows, self._pixels
        self._start()
        columns = {name: [r[name] for r in rows] for name in schema.IMAGE_BATCH.names if name != "pixels"}
        indices = pa.array([r["entry"] for r in rows], pa.int32())
        columns["pixels"] = pa.DictionaryArray.from_arrays(indices, pa.array(pixels, pa.large_binary()))
        return pa.table({name: columns[name] for name in schema.IMAGE_BATCH.names}, schema=schema.IMAGE_BATCH)


def image_rows(batch: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(first row of each distinct image, the image of each row), images numbered in the order
    they first appear: image i is row ``first[i]``'s image, and row r shows image
    ``image_of_row[r]`` (a slice or a ``take`` of a batch works too)."""
    entries = batch["pixels"].combine_chunks().indices.to_numpy(zero_copy_only=False)
    _, first, inverse = np.unique(entries, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")  # by first appearance
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return first[order].astype(np.int64), rank[inverse.ravel()]


def batch_images(batch: pa.Table) -> tuple[list[Image.Image], np.ndarray]:
    """The distinct images of a batch (RGB, as ingest decoded them) and the image of each row."""
    first, image_of_row = image_rows(batch)
    pixels = batch["pixels"].combine_chunks()
    width, height = batch["width"].to_numpy(), batch["height"].to_numpy()
    images = [
        Image.frombytes("RGB", (int(width[r]), int(height[r])), pixels[int(r)].value.as_buffer())
        for r in first
    ]
    return images, image_of_row


def batch_rows(batch: pa.Table, image_of_row: np.ndarray) -> Iterator[tuple[str, str, str, int]]:
    """(sample_id, image_id, caption, its image's index in ``batch_images``) per row, in order."""
    return zip(
        batch["sample_id"].to_pylist(),
        batch["image_id"].to_pylist(),
        batch["caption"].to_pylist(),
        image_of_row.tolist(),
        strict=True,
    )


def image_info(batch: pa.Table, row: int) -> ImageInfo:
    """Ingest's facts about the file of a batch row's image (for the profiler)."""
    return ImageInfo(
        batch["image_format"][row].as_py(),
        batch["image_mode"][row].as_py(),
        batch["bits_per_pixel"][row].as_py(),
        batch["file_bytes"][row].as_py(),
    )
