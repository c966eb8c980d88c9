"""Stages of the curate job. Each is a small dataclass that calls ``engine``; no model code here.

A stage names its resources (``num_cpus``, ``num_gpus``), loads what it needs once in
``setup()``, and maps one item to the next with ``__call__``. ``reads`` and ``writes`` list the
columns it consumes and produces, so a reader can follow the data from stage to stage.

Two kinds:

* record stages (``IngestStage``, ``ProfileStage``) make the ``samples`` and ``signals`` rows;
* image stages (OCR, embedding, safety...) follow the ``ImageStage`` protocol below: each gets
  every usable sample of a shard (``StageItem``, decoded image included) and returns its own
  table for that shard. They are listed by name in ``IMAGE_STAGES``; the curate job runs the
  ones asked for, and ``pipelines.backfill`` runs one of them later over shards that lack it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
from PIL import Image

from engine import schema
from engine.ingest import IngestConfig, IngestResult, ingest_record
from engine.profile import detect_language, profile_caption, profile_image
from engine.source import RawRecord


@dataclass
class IngestStage:
    """Raw record (bytes from the source) -> samples row + decoded RGB image."""

    source_key: str
    config: IngestConfig
    name: str = "ingest"
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("image bytes", "caption bytes")
    writes: tuple[str, ...] = tuple(schema.SAMPLES.names)

    def setup(self) -> None:
        pass  # Pillow needs no set-up

    def __call__(self, record: RawRecord) -> IngestResult:
        return ingest_record(record, self.source_key, self.config)


@dataclass
class ProfileStage:
    """Usable sample (decoded image + caption) -> signals row.

    Image signals are computed once per ``image_id`` in a shard, so an image that comes with
    several captions is profiled once and its values are shared.
    """

    name: str = "profile"
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("decoded image", "caption")
    writes: tuple[str, ...] = tuple(schema.SIGNALS.names)
    _image_signals: dict[str, dict] = field(default_factory=dict, repr=False)

    def setup(self) -> None:
        """Load the language model now (once per actor) and start with an empty image cache."""
        detect_language("warm up")
        self._image_signals.clear()

    def __call__(self, result: IngestResult) -> dict:
        row = result.row
        image_signals = self._image_signals.get(row["image_id"])
        if image_signals is None:
            image_signals = profile_image(result.image, result.info)
            self._image_signals[row["image_id"]] = image_signals
        return {
            "sample_id": row["sample_id"],
            "image_id": row["image_id"],
            **image_signals,
            **profile_caption(row["caption"]),
        }


@dataclass
class StageItem:
    """One usable sample, as an image stage sees it."""

    sample_id: str
    image_id: str
    caption: str
    image: Image.Image  # decoded RGB, EXIF-oriented, full size (ingest caps the pixel count)


class ImageStage(Protocol):
    """What the curate job and the backfill job expect of an image stage.

    Instances are pickled to Ray actors before ``setup()``, so models load in ``setup()`` only.
    """

    name: str  # the name users pass to ``--stages``
    table: str  # the workspace table it writes: one shard per curate shard, same shard_id
    schema: pa.Schema  # that table's columns, sample_id and image_id first
    num_cpus: float
    num_gpus: float
    reads: tuple[str, ...]
    writes: tuple[str, ...]

    def setup(self) -> None:
        """Load models (once per actor)."""

    def begin_shard(self) -> None:
        """Forget the previous shard's rows and caches."""

    def add(self, item: StageItem) -> None:
        """Take one usable sample (in row order); never raise for one bad image."""

    def finish_shard(self) -> pa.Table:
        """One row per added sample, in the order they were added."""


# name -> class; constructing a class with no arguments gives the embedded default.
IMAGE_STAGES: dict[str, type] = {}


def build_image_stages(names: list[str]) -> list[ImageStage]:
    """Default-configured image stages, by name (unknown names raise ValueError)."""
    unknown = [name for name in names if name not in IMAGE_STAGES]
    if unknown:
        known = ", ".join(sorted(IMAGE_STAGES)) or "none"
        raise ValueError(f"unknown stage {unknown[0]!r} (image stages: {known})")
    return [IMAGE_STAGES[name]() for name in names]
