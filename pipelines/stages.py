"""Stages of the curate job. Each is a small dataclass that calls ``engine``; no model code here.

A stage names its resources (``num_cpus``, ``num_gpus``), loads what it needs once in
``setup()``, and maps one item to the next with ``__call__``. ``reads`` and ``writes`` list the
columns it consumes and produces, so a reader can follow the data from stage to stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
