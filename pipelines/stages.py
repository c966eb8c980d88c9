"""The stages of the curate job: small dataclasses that call ``engine``; no model code here.

Every stage has the same shape (NeMo Curator's, STYLE.md):

* resources: ``num_cpus`` and ``num_gpus`` per worker;
* ``setup()``: load the model, once per actor (stages are pickled to Ray actors before it);
* ``__call__(batch) -> table``: a batch of usable samples (``schema.IMAGE_BATCH``: ids, caption,
  the decoded image, each distinct image once) in, the rows of the stage's workspace table
  (``table``, columns ``schema``) out, one per batch row, in batch order;
* ``reads`` / ``writes``: the columns it uses (of ``IMAGE_BATCH``) and fills (of its table).

The runner (``pipelines.runner``) builds the batches, calls the stages in order and writes their
tables. ``profile`` always runs and is ``required``: a sample whose image it fails on is rejected.
The image stages (``IMAGE_STAGES``) run when asked for; one that raises fails its shard (each of
them already turns one bad image into a row of nulls), and ``pipelines.backfill`` runs one later over
the shards that lack it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import pyarrow as pa

from engine import schema
from engine.profiling.ocr import load_ocr, ocr_batch
from engine.profiling.ocr_models import OcrConfig, check_config
from engine.profiling.profile import detect_language, profile_batch


class Stage(Protocol):
    """What the runner expects of a stage (the module docstring says what each part means)."""

    name: str  # the name users pass to ``--stages``
    table: str  # the workspace table it writes: one shard per curate shard, same shard_id
    schema: pa.Schema  # that table's columns, sample_id and image_id first
    num_cpus: float
    num_gpus: float
    reads: tuple[str, ...]  # columns of schema.IMAGE_BATCH
    writes: tuple[str, ...]  # columns of ``schema``
    required: bool  # a sample it has no row for is rejected (profile); else a failure fails the shard

    def setup(self) -> None:
        """Load models (once per actor)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        """One row of ``schema`` per batch row, in batch order."""


@dataclass
class ProfileStage:
    """Usable samples -> ``signals``: size, format, pHash, blur, colour, entropy, caption language..."""

    name: str = "profile"
    table: str = "signals"
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = (
        "sample_id",
        "image_id",
        "caption",
        "pixels",
        "image_format",
        "image_mode",
        "bits_per_pixel",
        "file_bytes",
    )
    writes: tuple[str, ...] = tuple(schema.SIGNALS.names[2:])
    schema: pa.Schema = schema.SIGNALS  # after reads/writes: below, `schema` is this field
    required: bool = True

    def setup(self) -> None:
        detect_language("warm up")  # py3langid's model loads on first use: once per actor

    def __call__(self, batch: pa.Table) -> pa.Table:
        return profile_batch(batch)


@dataclass
class OcrStage:
    """Usable samples -> ``ocr``: lines, boxes, confidences, text signals (engine.profiling.ocr)."""

    config: OcrConfig = field(default_factory=OcrConfig.from_env)
    name: str = "ocr"
    table: str = "ocr"
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("sample_id", "image_id", "caption", "pixels")
    writes: tuple[str, ...] = schema.SIGNAL_COLUMNS["ocr"]
    schema: pa.Schema = schema.OCR  # after reads/writes: below, `schema` is this field
    required: bool = False
    _ocr: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_config(self.config)  # a wrong model dir is a one-line error before any work starts

    def setup(self) -> None:
        if self._ocr is None:
            self._ocr = load_ocr(self.config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return ocr_batch(self._ocr, batch, self.config.max_side)


@dataclass
class EmbedStage:
    """Usable samples -> ``embeddings``: image and caption vectors and their cosine (clip_score).

    ``model`` is an ``engine.vectors.model_specs.load_embedder`` spec (None: the embedded default).
    """

    model: str | None = None
    batch_size: int = 32  # images per forward (engine.vectors.embedder.IMAGE_BATCH)
    name: str = "embed"
    table: str = "embeddings"
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("sample_id", "image_id", "caption", "pixels")
    writes: tuple[str, ...] = ("model_id", "image_vec", "text_vec", "clip_score")
    schema: pa.Schema = schema.EMBEDDINGS  # after reads/writes: below, `schema` is this field
    required: bool = False
    _embedder: object = field(default=None, repr=False)

    def setup(self) -> None:
        from engine.vectors.model_specs import load_embedder

        self._embedder = load_embedder(self.model)
        if self._embedder.embed_dim != schema.EMBED_DIM:
            raise ValueError(
                f"the embeddings table holds {schema.EMBED_DIM}-d vectors; {self.model} gives "
                f"{self._embedder.embed_dim}-d (use the embedder directly, or a {schema.EMBED_DIM}-d model)"
            )

    def __call__(self, batch: pa.Table) -> pa.Table:
        from engine.vectors.embedder import embed_batch

        return embed_batch(self._embedder, batch, self.batch_size)


@dataclass
class SafetyStage:
    """Usable samples -> ``safety``: open_nsfw's P(nsfw), once per image (engine.profiling.safety)."""

    name: str = "safety"
    table: str = "safety"
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("sample_id", "image_id", "pixels")
    writes: tuple[str, ...] = ("nsfw_score",)
    schema: pa.Schema = schema.SAFETY  # after reads/writes: below, `schema` is this field
    required: bool = False
    _model: object = field(default=None, repr=False)

    def setup(self) -> None:
        from engine.profiling.safety import load_nsfw_model

        self._model = load_nsfw_model(threads=1)  # one actor per CPU: one thread each

    def __call__(self, batch: pa.Table) -> pa.Table:
        from engine.profiling.safety import nsfw_batch

        return nsfw_batch(self._model, batch)


# name -> class; constructing a class with no arguments gives the embedded default. 'all' runs
# them in this order, after profile.
IMAGE_STAGES: dict[str, type] = {"ocr": OcrStage, "embed": EmbedStage, "safety": SafetyStage}


def build_image_stages(names: list[str]) -> list[Stage]:
    """Default-configured image stages, by name (unknown names raise ValueError)."""
    unknown = [name for name in names if name not in IMAGE_STAGES]
    if unknown:
        known = ", ".join(sorted(IMAGE_STAGES)) or "none"
        raise ValueError(f"unknown stage {unknown[0]!r} (image stages: {known})")
    return [IMAGE_STAGES[name]() for name in names]
