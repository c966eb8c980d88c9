"""Request and response bodies: the OpenAPI contract. Column names follow ``engine/schema.py``:
the explorer's range filters and card fields are made from ``schema.EXPLORER_SIGNALS``."""

from __future__ import annotations

from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, create_model

from engine import schema
from engine.catalog import SORT_KEYS

MAX_SQL_CHARS = 100_000  # a generated query with a long IN list stays far below


class Health(BaseModel):
    status: Literal["ok"]
    version: str


# --- stats -----------------------------------------------------------------------------------


class Histogram(BaseModel):
    score: str  # a signals column: clip_score, nsfw_score, ...
    count: int  # samples with a finite value
    edges: list[float]  # bins + 1 edges, lo to hi; empty when count is 0
    counts: list[int]  # samples per bin


class Stats(BaseModel):
    """``engine.catalog.dataset_stats`` plus score histograms."""

    totals: dict[str, Any]  # samples, ok, rejected, distinct_images
    by_source: list[dict[str, Any]]
    reject_reasons: list[dict[str, Any]]  # reject_reason, n
    warnings: list[dict[str, Any]]
    caption_languages: list[dict[str, Any]]
    signals: list[dict[str, Any]]  # signal, min, p50, p95, max
    image_duplicates: dict[str, Any]
    score_histograms: list[Histogram]


# --- concepts --------------------------------------------------------------------------------


class ConceptRow(BaseModel):
    model_config = ConfigDict(extra="allow")
    concept_id: int
    synset: str
    lemmas: list[str] | None = None
    gloss: str | None = None
    depth: int | None = None
    source: str | None = None
    n_direct: int  # samples tagged with it directly
    n_rollup: int  # samples tagged with it or any descendant


class ConceptNeighbourhood(BaseModel):
    concept: ConceptRow
    parents: list[ConceptRow]
    children: list[ConceptRow]
    siblings: list[ConceptRow]
    parts: list[ConceptRow]
    wholes: list[ConceptRow]


# --- search ----------------------------------------------------------------------------------


class SearchHit(BaseModel):
    rank: int
    sample_id: str
    score: float  # cosine similarity
    caption: str | None = None
    uri: str | None = None


class SearchResult(BaseModel):
    target: Literal["image", "text"]  # the index searched
    model_id: str | None = None  # the embedding model whose index answered (the active model)
    hits: list[SearchHit]


# --- embedding models ------------------------------------------------------------------------


class ModelInfo(BaseModel):
    key: str  # short name, as 'zcurate models' shows it
    model_id: str  # architecture@weights#hash, stored with every vector
    spec: str | None  # what loads it (engine.vectors.model_specs)
    dim: int  # vector width
    active: bool
    samples: int  # rows of its embeddings table


class ModelList(BaseModel):
    active: str | None  # the key of the active model (None before anything was embedded)
    models: list[ModelInfo]


class ActivateModel(BaseModel):
    model: str = Field(min_length=1, description="Key, model id or spec of a model the workspace holds")
    force: bool = False  # recompute indexes, dedup and tags even when it is already active


# --- query -----------------------------------------------------------------------------------


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: str = Field(min_length=1, max_length=MAX_SQL_CHARS, description="One SELECT over the catalog")
    max_rows: int | None = Field(None, ge=1, description="At most this many rows (the server caps it too)")


class QueryColumn(BaseModel):
    name: str
    type: str  # Arrow type


class QueryResult(BaseModel):
    columns: list[QueryColumn]
    rows: list[list[Any]]
    row_count: int
    truncated: bool  # the query had more rows than returned


# --- jobs ------------------------------------------------------------------------------------


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(
        min_length=1, max_length=4096, description="'openclipart' or a path under the service's source root"
    )
    steps: list[str] = Field(
        default_factory=list, max_length=16, description="Image stages: embed, ocr, safety"
    )
    limit: int | None = Field(None, ge=1, le=1_000_000_000, description="Only the first N records")
    shard_size: int = Field(256, ge=1, le=1_000_000, description="Records per shard")


class StepProgress(BaseModel):
    step: str  # ingest, profile, embed, ocr, safety
    rows_done: int
    rows_total: int
    shards_done: int
    shards_total: int


class JobProgress(BaseModel):
    rows_done: int
    rows_total: int
    steps: list[StepProgress]


class JobStatus(BaseModel):
    id: str
    status: Literal["pending", "running", "succeeded", "failed", "cancelled"]
    source: str
    steps: list[str]
    created: float  # unix seconds
    started: float | None = None
    finished: float | None = None
    error: str = ""  # the last line of the job's output when it failed
    progress: JobProgress | None = None


# --- manifests -------------------------------------------------------------------------------

# One path component: a recipe name or a stage folder. Not "-" first, as engine.curation.feedback
# requires of a stage (a leading "-" reads as an option on a command line).
STAGE_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$"
MANIFEST_ID_PATTERN = r"^[0-9a-f]{16}$"  # engine.manifest.make_manifest_id


class ManifestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str = Field(pattern=STAGE_PATTERN, description="A shipped recipe: lowres, omni or sft")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="Seeds captions, balancing and draws")
    size: int | None = Field(
        None,
        ge=1,
        le=2**31 - 1,
        description="Materialise N draws (the server caps it too); none: one row per sample with its weight",
    )
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        max_length=64,
        description='Recipe keys to change, dotted: {"filters.clip_score.min": 0.3, "dedup.keep": "all"}',
    )


class ManifestStatus(BaseModel):
    id: str  # manifest_id: 16 hex digits of the hash of inputs, recipe, seed, size, feedback, boosts
    stage: str
    status: Literal["pending", "running", "ready", "failed"]
    error: str = ""  # why it failed
    created: float | None = None  # unix seconds, for builds this service started
    started: float | None = None
    finished: float | None = None
    sidecar: dict[str, Any] | None = None  # GET /v1/manifests/{id} of a ready one: the JSON sidecar


class ManifestSummary(BaseModel):
    id: str
    stage: str
    status: Literal["pending", "running", "ready", "failed"]
    rows: int | None = None  # ready ones
    seed: int | None = None
    size: int | None = None
    error: str = ""


# --- feedback --------------------------------------------------------------------------------

MAX_LOSS_ROWS = 100_000  # concepts in one report: the whole concept graph is ~43k


class ConceptLoss(BaseModel):
    model_config = ConfigDict(extra="forbid")
    concept_id: int | None = Field(
        None,
        ge=0,
        le=2**63 - 1,  # an int64 (schema.CONCEPT_LOSS)
        description="A concept id of the manifest rows; null for draws without one",
    )
    samples: int = Field(ge=0, le=2**31 - 1, description="Draws carrying the concept since the last report")
    # Bounded so the float32 column holds it (a flow-matching loss is a mean squared error: >= 0).
    loss_mean: float = Field(ge=0, le=1e30, description="Mean flow-matching loss of those draws")
    loss_std: float = Field(0.0, ge=0, le=1e30, description="Their standard deviation")


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    stage: str = Field(pattern=STAGE_PATTERN, description="The training stage: lowres, omni, sft, ...")
    step: int = Field(ge=0, le=999_999_999, description="The trainer's global step (one report per step)")
    manifest: str = Field("", max_length=4096, description="The manifest the batches came from")
    losses: list[ConceptLoss] = Field(min_length=1, max_length=MAX_LOSS_ROWS)


class FeedbackResult(BaseModel):
    path: str  # where the report went, in the workspace: feedback/<stage>/<step, 9 digits>.parquet
    rows: int
    multipliers: dict[str, Any]  # engine.feedback.concept_multipliers' summary after this report
    # The manifest the service rebuilds from this report when ``manifest`` named one of its own
    # (its id, its data URL or its path): the reported one's recipe, seed and size over the
    # reports as they are now. A trainer follows it once ready (also the response's Location).
    refreshed: ManifestStatus | None = None


# --- samples, thumbnails and concept gaps (the dashboard's explorer and concept pages) ----------

SAMPLE_ID_PATTERN = r"^[0-9a-f]{32}$"  # engine.ingest.make_sample_id: 16-byte blake2b, hex


def signal_type(column: str) -> type:
    """The Python type of a column of the catalog's ``signals`` view: int or float."""
    return int if pa.types.is_integer(schema.signals_view().field(column).type) else float


# ``<signal>_min`` and ``<signal>_max`` for each of schema.EXPLORER_SIGNALS (null where a stage has
# not run: such a sample matches no bound on that signal).
SignalRanges = create_model(
    "SignalRanges",
    __config__=ConfigDict(extra="forbid", allow_inf_nan=False),
    **{f"{c}_{bound}": (float | None, None) for c in schema.EXPLORER_SIGNALS for bound in ("min", "max")},
)


class SampleFilter(SignalRanges):
    """Usable samples matching every given condition (``*_min`` <= value <= ``*_max``)."""

    concept: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.'\-]+$",
        description="Tagged with this concept (id or synset name) or any concept below it",
    )
    has_text: bool | None = Field(None, description="OCR found text (true) or found none (false)")
    community: str | None = Field(
        None, pattern=SAMPLE_ID_PATTERN, description="In this near-duplicate community (its representative)"
    )
    near_duplicate: bool | None = Field(None, description="In a near-duplicate community of two or more")
    caption: str | None = Field(None, min_length=1, max_length=200, description="Caption contains (any case)")
    sort: Literal[SORT_KEYS] = Field("sample_id", description="A column; '-' first for descending")  # type: ignore[valid-type]
    offset: int = Field(0, ge=0, le=10_000_000)  # a page deep into 10M samples; deeper: filter more
    limit: int = Field(60, ge=1, le=500, description="Samples per page")


# One grid cell: what the explorer shows under a thumbnail (engine.catalog.CARD_SQL's columns).
SampleCard = create_model(
    "SampleCard",
    __doc__="One grid cell: what the explorer shows under a thumbnail.",
    sample_id=(str, ...),
    caption=(str | None, None),
    **{c: (signal_type(c) | None, None) for c in schema.EXPLORER_SIGNALS},
    has_text=(bool | None, None),  # null: OCR has not run on it
    community_id=(str | None, None),
)


class SamplePage(BaseModel):
    total: int  # samples matching the filter
    offset: int
    limit: int
    samples: list[SampleCard]


class SampleDetail(BaseModel):
    sample: dict[str, Any]  # the samples row
    signals: dict[str, Any] | None = None  # the catalog's signals row (with OCR, clip and NSFW scores)
    dedup: dict[str, Any] | None = None  # its dedup row plus community_size
    tags: list[dict[str, Any]]  # concept_id, synset, source, score, span


class Communities(BaseModel):
    communities: int  # near-duplicate communities of two or more samples
    samples: int  # samples in them
    largest: list[dict[str, Any]]  # community_id, n_samples, max_sim; largest first


class ConceptMatch(BaseModel):
    concept_id: int
    synset: str
    depth: int | None = None
    n_direct: int
    n_rollup: int


class ConceptGap(BaseModel):
    concept_id: int
    synset: str
    n_rollup: int
    share: float  # of the compared concepts' rolled-up count
    target: float  # the prior's share (uniform over the level)
    ratio: float  # share / target: > 1 over-, < 1 under-represented


class ConceptGaps(BaseModel):
    depth: int
    concepts: int  # compared concepts at that depth
    over: list[ConceptGap]  # most over-represented first
    under: list[ConceptGap]  # most under-represented first
