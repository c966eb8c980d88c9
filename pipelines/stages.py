"""The stages of the curate job: small dataclasses that call ``engine``; no model code here.

Every stage has the same shape (NeMo Curator's, STYLE.md):

* resources: ``num_cpus`` and ``num_gpus`` per worker;
* ``prepare(ws)`` (optional; ``prepare_stages`` calls it): in the driver, before any actor,
  record in the workspace what the stage will write (the embed stage registers its model,
  ``engine.embedding_models``, and names its table);
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
from engine.devices import actor_device, is_cuda, resolve_device, stage_gpus
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
        self.config.device = resolve_device(self.config.device)
        self.num_gpus = stage_gpus(self.config.device) if not self.num_gpus else self.num_gpus

    def setup(self) -> None:
        if self._ocr is None:
            self.config.device = actor_device(self.config.device)
            self._ocr = load_ocr(self.config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return ocr_batch(self._ocr, batch, self.config.max_side)


@dataclass
class EmbedStage:
    """Usable samples -> ``embeddings``: image and caption vectors and their cosine (clip_score).

    ``model`` is an ``engine.vectors.model_specs`` spec (None: the embedded default), ``device``
    ``auto|cpu|cuda|cuda:N`` (``engine.devices``). ``prepare(ws)`` registers the model in the
    workspace and points ``table`` at that model's own embeddings table (``embeddings@KEY``), so
    vectors of several models, of any width, live side by side.
    """

    model: str | None = None
    device: str = "cpu"
    batch_size: int | None = None  # images per forward; None: IMAGE_BATCH on CPU, GPU_IMAGE_BATCH on CUDA
    gpus_per_actor: float | None = None  # on CUDA; None: engine.devices.GPUS_PER_ACTOR
    name: str = "embed"
    table: str = "embeddings"  # set by prepare() to the model's table
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("sample_id", "image_id", "caption", "pixels")
    writes: tuple[str, ...] = ("model_id", "image_vec", "text_vec", "clip_score")
    schema: pa.Schema = schema.EMBEDDINGS  # after reads/writes: below, `schema` is this field
    required: bool = False
    model_id: str = ""  # set by prepare(): what the loaded model must be
    _embedder: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        from engine.vectors.embedder import GPU_IMAGE_BATCH, IMAGE_BATCH

        self.device = resolve_device(self.device)
        self.num_gpus = stage_gpus(self.device, self.gpus_per_actor)
        self.batch_size = self.batch_size or (GPU_IMAGE_BATCH if is_cuda(self.device) else IMAGE_BATCH)

    def prepare(self, ws) -> None:
        from engine.embedding_models import register_model
        from engine.vectors.model_specs import describe_model

        described = describe_model(self.model)
        held = register_model(ws, described.model_id, described.spec, described.dim)
        self.model, self.model_id = described.spec, described.model_id
        self.table, self.schema = f"embeddings@{held.key}", schema.embeddings_schema(described.dim)

    def setup(self) -> None:
        from engine.vectors.model_specs import load_embedder

        self._embedder = load_embedder(self.model, device=actor_device(self.device))
        if self.model_id and self._embedder.model_id != self.model_id:  # the weights changed on disk
            raise ValueError(
                f"{self.model} is now {self._embedder.model_id}, was {self.model_id} when the job began"
            )

    def __call__(self, batch: pa.Table) -> pa.Table:
        from engine.vectors.embedder import embed_batch

        return embed_batch(self._embedder, batch, self.batch_size)


@dataclass
class SafetyStage:
    """Usable samples -> ``safety``: open_nsfw's P(nsfw), once per image (engine.profiling.safety)."""

    device: str = "cpu"  # auto | cpu | cuda | cuda:N (engine.devices)
    gpus_per_actor: float | None = None
    name: str = "safety"
    table: str = "safety"
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("sample_id", "image_id", "pixels")
    writes: tuple[str, ...] = ("nsfw_score",)
    schema: pa.Schema = schema.SAFETY  # after reads/writes: below, `schema` is this field
    required: bool = False
    _model: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        self.num_gpus = stage_gpus(self.device, self.gpus_per_actor)

    def setup(self) -> None:
        from engine.profiling.safety import load_nsfw_model

        # one actor per CPU: one thread each
        self._model = load_nsfw_model(threads=1, device=actor_device(self.device))

    def __call__(self, batch: pa.Table) -> pa.Table:
        from engine.profiling.safety import nsfw_batch

        return nsfw_batch(self._model, batch)


@dataclass
class QualityStage:
    """Usable samples -> ``quality``: BRISQUE and PIQE, lower is better (engine.profiling.quality)."""

    name: str = "quality"
    table: str = "quality"
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("sample_id", "image_id", "pixels")
    writes: tuple[str, ...] = schema.SIGNAL_COLUMNS["quality"]
    schema: pa.Schema = schema.QUALITY  # after reads/writes: below, `schema` is this field
    required: bool = False

    def setup(self) -> None:
        from engine.profiling.quality import load_brisque_model

        load_brisque_model()  # a missing model fails the actor here, not as nulls on every image

    def __call__(self, batch: pa.Table) -> pa.Table:
        from engine.profiling.quality import quality_batch

        return quality_batch(batch)


@dataclass
class NudityStage:
    """Usable samples -> ``nudity``: NudeNet's explicit-class score, once per image
    (engine.profiling.nudity), a second opinion beside the safety stage's open_nsfw."""

    device: str = "cpu"  # auto | cpu | cuda | cuda:N (engine.devices)
    gpus_per_actor: float | None = None
    name: str = "nudity"
    table: str = "nudity"
    num_cpus: float = 1
    num_gpus: float = 0
    reads: tuple[str, ...] = ("sample_id", "image_id", "pixels")
    writes: tuple[str, ...] = schema.SIGNAL_COLUMNS["nudity"]
    schema: pa.Schema = schema.NUDITY  # after reads/writes: below, `schema` is this field
    required: bool = False
    _model: object = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.device = resolve_device(self.device)
        self.num_gpus = stage_gpus(self.device, self.gpus_per_actor)

    def setup(self) -> None:
        from engine.profiling.nudity import load_nudity_model

        # one actor per CPU: one thread each
        self._model = load_nudity_model(threads=1, device=actor_device(self.device))

    def __call__(self, batch: pa.Table) -> pa.Table:
        from engine.profiling.nudity import nudity_batch

        return nudity_batch(self._model, batch)


def prepare_stages(ws, stages) -> None:
    """Call each stage's optional ``prepare(ws)`` in the driver, before the stages go to actors."""
    for stage in stages:
        prepare = getattr(stage, "prepare", None)  # a stage of one's own need not have one
        if prepare is not None:
            prepare(ws)


# name -> class; constructing a class with no arguments gives the embedded default. 'all' runs
# them in this order, after profile (but OPT_IN_STAGES).
IMAGE_STAGES: dict[str, type] = {
    "ocr": OcrStage,
    "embed": EmbedStage,
    "safety": SafetyStage,
    "quality": QualityStage,
    "nudity": NudityStage,
}
# Stages 'all' leaves out, run only when named: NudeNet's wheel carries the AGPL-3.0 in its LICENSE
# file (its metadata says MIT), so a user opts in knowingly (docs/engines/profiling.md).
OPT_IN_STAGES = frozenset({"nudity"})


def default_stage_names() -> list[str]:
    """The stages 'all' runs: every registered image stage but the opt-in ones, in order."""
    return [name for name in IMAGE_STAGES if name not in OPT_IN_STAGES]


def build_image_stages(
    names: list[str], model: str | None = None, device: str = "auto", gpus_per_actor: float | None = None
) -> list[Stage]:
    """Image stages by name (unknown names raise ValueError), the embed stage with ``model``, every
    stage on ``device`` (``engine.devices``: auto | cpu | cuda | cuda:N)."""
    unknown = [name for name in names if name not in IMAGE_STAGES]
    if unknown:
        known = ", ".join(sorted(IMAGE_STAGES)) or "none"
        raise ValueError(f"unknown stage {unknown[0]!r} (image stages: {known})")
    built = {
        "ocr": lambda: OcrStage(OcrConfig.from_env(device=device)),
        "embed": lambda: EmbedStage(model=model, device=device, gpus_per_actor=gpus_per_actor),
        "safety": lambda: SafetyStage(device=device, gpus_per_actor=gpus_per_actor),
        "nudity": lambda: NudityStage(device=device, gpus_per_actor=gpus_per_actor),
    }
    return [built.get(name, IMAGE_STAGES[name])() for name in names]  # a stage registered by a user too
