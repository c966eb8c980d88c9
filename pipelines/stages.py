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

import contextlib
from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa
from PIL import Image

from engine import schema
from engine.profiling.ingest import IngestConfig, IngestResult, ingest_record
from engine.profiling.ocr import load_ocr, read_image
from engine.profiling.ocr_models import OcrConfig, check_config
from engine.profiling.ocr_signals import OcrResult, ocr_signals
from engine.profiling.profile import detect_language, profile_caption, profile_image
from engine.profiling.records import RawRecord


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


def build_image_stages(names: list[str]) -> list[ImageStage]:
    """Default-configured image stages, by name (unknown names raise ValueError)."""
    unknown = [name for name in names if name not in IMAGE_STAGES]
    if unknown:
        known = ", ".join(sorted(IMAGE_STAGES)) or "none"
        raise ValueError(f"unknown stage {unknown[0]!r} (image stages: {known})")
    return [IMAGE_STAGES[name]() for name in names]


# --- embed and safety: thin wrappers over engine.embed and engine.safety -------------------------


@dataclass
class EmbedStage:
    """Usable sample -> ``embeddings`` row: image and caption vectors and their cosine (clip_score).

    ``model`` is an ``engine.embed.load_embedder`` spec (None: the embedded default).
    """

    model: str | None = None
    batch_size: int = 32  # images per forward (engine.embed.IMAGE_BATCH)
    name: str = "embed"
    table: str = "embeddings"
    schema: pa.Schema = schema.EMBEDDINGS
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("decoded image", "caption")
    writes: tuple[str, ...] = ("model_id", "image_vec", "text_vec", "clip_score")
    _embedder: object = field(default=None, repr=False)
    _shard: object = field(default=None, repr=False)

    def setup(self) -> None:
        from engine.vectors.model_specs import load_embedder

        self._embedder = load_embedder(self.model)
        if self._embedder.embed_dim != schema.EMBED_DIM:
            raise ValueError(
                f"the embeddings table holds {schema.EMBED_DIM}-d vectors; {self.model} gives "
                f"{self._embedder.embed_dim}-d (use the embedder directly, or a {schema.EMBED_DIM}-d model)"
            )

    def begin_shard(self) -> None:
        from engine.vectors.embedder import ShardEmbedder

        self._shard = ShardEmbedder(self._embedder, self.batch_size)

    def add(self, item: StageItem) -> None:
        self._shard.add(item.sample_id, item.image_id, item.caption, item.image)

    def finish_shard(self) -> pa.Table:
        return self._shard.finish()


@dataclass
class SafetyStage:
    """Usable sample -> ``safety`` row: open_nsfw's P(nsfw), once per image."""

    name: str = "safety"
    table: str = "safety"
    schema: pa.Schema = schema.SAFETY
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("decoded image",)
    writes: tuple[str, ...] = ("nsfw_score",)
    _model: object = field(default=None, repr=False)
    _shard: object = field(default=None, repr=False)

    def setup(self) -> None:
        from engine.profiling.safety import load_nsfw_model

        self._model = load_nsfw_model(threads=1)  # one actor per CPU: one thread each

    def begin_shard(self) -> None:
        from engine.profiling.safety import ShardSafety

        self._shard = ShardSafety(self._model)

    def add(self, item: StageItem) -> None:
        self._shard.add(item.sample_id, item.image_id, item.image)

    def finish_shard(self) -> pa.Table:
        return self._shard.finish()


@dataclass
class OcrStage:
    """Decoded image + caption -> ``ocr`` row: lines, boxes, confidences, text signals.

    The image is read once per ``image_id`` in a shard; each caption gets its own overlap.
    An image the OCR fails on gets a row of nulls (the shard goes on).
    """

    config: OcrConfig = field(default_factory=OcrConfig.from_env)
    name: str = "ocr"
    table: str = "ocr"
    reads: tuple[str, ...] = ("decoded image", "caption")
    writes: tuple[str, ...] = schema.SIGNAL_COLUMNS["ocr"]
    schema: pa.Schema = schema.OCR  # (after writes: from here on `schema` is this field in the class body)
    num_cpus: float = 1
    num_gpus: float = 0
    _ocr: object = field(default=None, repr=False)
    _rows: list[dict] = field(default_factory=list, repr=False)
    _read: dict[str, OcrResult | None] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        check_config(self.config)  # a wrong model dir is a one-line error before any work starts

    def setup(self) -> None:
        if self._ocr is None:
            self._ocr = load_ocr(self.config)

    def begin_shard(self) -> None:
        self._rows, self._read = [], {}

    def add(self, item: StageItem) -> None:
        row = {"sample_id": item.sample_id, "image_id": item.image_id}
        if item.image_id not in self._read:
            try:
                self._read[item.image_id] = read_image(self._ocr, item.image, self.config.max_side)
            except Exception:  # one image that breaks the OCR must not fail the shard: nulls
                self._read[item.image_id] = None
        result = self._read[item.image_id]
        if result is not None:
            with contextlib.suppress(Exception):  # a degenerate box must not fail the shard either
                row.update(ocr_signals(result, item.caption))
        self._rows.append(row)

    def finish_shard(self) -> pa.Table:
        return pa.Table.from_pylist(self._rows, schema=self.schema)


# name -> class; constructing a class with no arguments gives the embedded default. 'all' runs
# them in this order.
IMAGE_STAGES: dict[str, type] = {"ocr": OcrStage, "embed": EmbedStage, "safety": SafetyStage}
