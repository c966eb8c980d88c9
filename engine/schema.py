"""Every table's columns, written down once.

Tables, stages, DuckDB views and API schemas all import their column names and Arrow schemas
from here, so a column means the same thing everywhere (STYLE.md, "Naming").
"""

from __future__ import annotations

import pyarrow as pa

# --- status and reasons -------------------------------------------------------------------------

STATUS_OK = "ok"
STATUS_REJECTED = "rejected"

# Machine-readable reasons a pair is unusable (samples.reject_reason).
REJECT_REASONS = {
    "missing_file": "the image file (or tar member) does not exist",
    "empty_file": "the image file has zero bytes",
    "file_too_large": "the image file is larger than the configured byte limit",
    "not_an_image": "the bytes are not an image format Pillow can identify",
    "truncated_image": "the image data ends early",
    "corrupt_image": "the image header is readable but its data does not decode",
    "decompression_bomb": "width x height exceeds the configured pixel limit",
    "missing_caption": "no caption field or sidecar exists for the image",
    "empty_caption": "the caption is empty or only whitespace",
    "malformed_caption_file": "the caption sidecar (.json) cannot be parsed",
    "malformed_row": "a table row or tar member set lacks the fields a pair needs",
    "download_failed": "img2dataset did not store the image (reject_detail: its status and error_message)",
    "duplicate_sample": "the same image bytes and caption were ingested before (first one kept)",
    "internal_error": "an unexpected error; reject_detail has the exception",
}

# Codes for pairs that are still usable (samples.warnings).
WARNINGS = {
    "caption_not_utf8": "caption bytes were not UTF-8; decoded with U+FFFD replacement",
    "caption_truncated": "caption was longer than the limit and was cut",
    "caption_control_chars_removed": "invisible control characters were removed from the caption",
    "extension_mismatch": "file extension does not match the decoded format",
    "converted_mode": "colour mode converted to RGB (CMYK, palette, 16-bit, alpha, grey...)",
    "alpha_flattened": "transparent pixels composited over white",
    "exif_rotated": "EXIF orientation applied, so width/height are as displayed",
    "animated_first_frame": "animated image: only the first frame is used",
}

# --- samples: one row per ingested record, rejects included --------------------------------------

SAMPLES = pa.schema(
    [
        ("sample_id", pa.string()),  # hash(image bytes, caption); see engine.profiling.ingest.make_sample_id
        ("image_id", pa.string()),  # hash(image bytes); null when there were no bytes to read
        ("source", pa.string()),  # the source as given (path or URI)
        ("source_kind", pa.string()),  # folder | table | webdataset | openclipart
        ("shard_id", pa.string()),  # <source_key>-<index>; the unit of work and of resume
        ("row_index", pa.int32()),  # position inside the shard (plan order)
        ("ref", pa.string()),  # the record's reference inside its source (path, row, tar member)
        ("uri", pa.string()),  # where the image is: absolute path, URI, or tar URI#member
        ("caption", pa.string()),  # the caption as ingested (decoded, trimmed, truncated)
        ("status", pa.string()),  # ok | rejected
        ("reject_reason", pa.string()),  # a key of REJECT_REASONS, null when ok
        ("reject_detail", pa.string()),  # human-readable detail (exception text), null when ok
        ("warnings", pa.list_(pa.string())),  # keys of WARNINGS, empty when none
        # The record's source metadata, a JSON object: a table row's other columns, img2dataset's
        # url/key/status/width/height and extra columns, a .json sidecar's fields; null when none.
        ("meta", pa.string()),
    ]
)

# --- plan rows: a source's listing, saved per source in the workspace's plans folder ---------------
# (engine.profiling.plan; each source's list_records() returns these columns)

PLAN_ROW = pa.schema(
    [
        ("ref", pa.string()),  # unique inside the source: relative path, row number, tar#key
        ("uri", pa.string()),  # where the image is read from (null when there is none)
        ("caption_ref", pa.string()),  # sidecar path / tar member holding the caption, if any
        ("caption", pa.binary()),  # caption bytes given by a table row (null: not given)
        ("error", pa.string()),  # a reject reason found while listing (e.g. malformed_row)
        ("detail", pa.string()),
        ("meta", pa.string()),  # source metadata known when listing (samples.meta), JSON; null: none
    ]
)
PLAN_FILE = pa.schema([("shard", pa.int32()), *PLAN_ROW])  # the saved plan: plan rows + their shard

# --- image batches: what the curate job hands each stage (pipelines/stages.py) --------------------
# One row per usable sample. The decoded image (RGB, EXIF-oriented, as ingest decoded it) is in
# ``pixels`` as raw bytes, row-major height x width x 3; the column is dictionary-encoded, so the
# samples that share an image (one image with several captions) share one entry: each distinct
# image is held, and worked on, once (engine.profiling.image_batch).

IMAGE_BATCH = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image_id", pa.string()),
        ("caption", pa.string()),
        ("width", pa.int32()),  # of the decoded image, as displayed
        ("height", pa.int32()),
        ("pixels", pa.dictionary(pa.int32(), pa.large_binary())),  # large: one batch may pass 2 GiB
        ("image_format", pa.string()),  # of the file, as ingest found it (the profiler needs these)
        ("image_mode", pa.string()),
        ("bits_per_pixel", pa.int16()),
        ("file_bytes", pa.int64()),
    ]
)

# --- signals: the Data Profiling Engine's cheap per-pair signals (status ok only) ----------------

SIGNALS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image_id", pa.string()),
        ("width", pa.int32()),  # as displayed (after EXIF orientation)
        ("height", pa.int32()),
        ("aspect", pa.float32()),  # width / height
        ("image_format", pa.string()),  # Pillow's format name: JPEG, PNG, WEBP, GIF...
        ("image_mode", pa.string()),  # the original Pillow mode: RGB, RGBA, P, CMYK, I;16...
        ("bits_per_pixel", pa.int16()),  # of the original mode (RGB 24, RGBA 32, L 8, I;16 16, 1 1)
        ("file_bytes", pa.int64()),
        ("phash", pa.uint64()),  # 64-bit DCT perceptual hash (imagehash.phash bit order)
        ("compression_ratio", pa.float32()),  # width*height*bits_per_pixel/8 / file_bytes
        ("border_variance", pa.float32()),  # variance of grey levels in the outer border band
        ("jpeg_bpp", pa.float32()),  # bits per pixel of a JPEG re-encode at fixed quality
        ("blur", pa.float32()),  # variance of the 4-neighbour Laplacian of grey levels
        ("colourfulness", pa.float32()),  # Hasler & Suesstrunk (2003) M3
        ("entropy", pa.float32()),  # Shannon entropy of the 256-bin grey histogram, bits
        ("caption_chars", pa.int32()),
        ("caption_words", pa.int32()),  # whitespace tokens; each CJK character counts as a word
        ("caption_lang", pa.string()),  # ISO 639-1 guess from py3langid, "und" when no letters
        ("caption_lang_prob", pa.float32()),  # normalised probability of that guess
        ("caption_has_cjk", pa.bool_()),  # Han, kana or Hangul present
    ]
)

# --- the concept graph and tags (engine/graph/concept_graph.py, engine/graph/tagging.py) -----------

# The workspace's graph: the pruned WordNet base plus concepts mined from its captions. One file
# per table (shard id "graph"), rewritten by `zcurate tag` / `zcurate graph build`.
CONCEPTS = pa.schema(
    [
        ("concept_id", pa.int64()),  # WordNet: the synset's offset in data.noun; mined: >= 2**40
        ("synset", pa.string()),  # nltk-style name, e.g. lorikeet.n.01; mined terms: clipart.x.01
        ("lemmas", pa.list_(pa.string())),  # WordNet lemma names (underscores for spaces)
        ("gloss", pa.string()),  # WordNet's definition; for mined terms, how they were attached
        ("depth", pa.int16()),  # fewest is_a/instance_of steps up to entity.n.01
        ("source", pa.string()),  # wordnet | caption (mined from this workspace's captions)
        ("lexname", pa.string()),  # WordNet lexicographer file, e.g. noun.animal
        ("pagerank", pa.float32()),  # N * PageRank, co-occurrence weighted (1.0 = uniform)
        ("noise", pa.string()),  # why it is corpus noise (engine.graph.noise), null for content
    ]
)

CONCEPT_EDGES = pa.schema(
    [
        ("parent_id", pa.int64()),
        ("child_id", pa.int64()),
        ("kind", pa.string()),  # is_a | instance_of | part_of
    ]
)

CONCEPT_ANCESTORS = pa.schema(
    [
        ("concept_id", pa.int64()),
        ("ancestor_id", pa.int64()),  # via is_a/instance_of; the concept itself at distance 0
        ("distance", pa.int16()),  # fewest steps
    ]
)

# Where a tag came from (tags.source): the caption's words, the OCR text, or CLIP zero-shot.
TAG_SOURCES = ("caption", "ocr", "clip")

TAGS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("concept_id", pa.int64()),
        ("source", pa.string()),  # one of TAG_SOURCES
        ("score", pa.float32()),  # text: share of the sense scores (1.0 unambiguous); clip: cosine
        ("hits", pa.int16()),  # times the concept matched in that text (1 for clip)
        ("span", pa.string()),  # the matched words (normalised); null for clip
    ]
)

GRAPH_SHARD = "graph"  # the shard id of the single file of each graph table

# --- concept_loss: the trainer's per-concept loss report (engine/s3dit, read by feedback) -----------

# One file per report: Workspace.feedback_rel(stage, step) (see engine.s3dit.concept_loss). The
# concept ids are the graph's int64 ids, as in tags and in a manifest's concept_ids, end to end.
CONCEPT_LOSS = pa.schema(
    [
        ("stage", pa.string()),  # the training stage (lowres, omni, sft, ...)
        ("step", pa.int64()),  # the trainer's global step when the report was made
        ("manifest", pa.string()),  # the manifest the batches came from (path or URI)
        ("concept_id", pa.int64()),  # a concept of the manifest's concept_ids; null = draws without one
        ("samples", pa.int32()),  # draws carrying the concept since the previous report
        ("loss_mean", pa.float32()),  # mean flow-matching loss of those draws
        ("loss_std", pa.float32()),  # their standard deviation (0 for one draw)
    ]
)

TABLES: dict[str, pa.Schema] = {
    "samples": SAMPLES,
    "signals": SIGNALS,
    "concepts": CONCEPTS,
    "concept_edges": CONCEPT_EDGES,
    "concept_ancestors": CONCEPT_ANCESTORS,
    "tags": TAGS,
}

# Columns of other tables that the catalog's ``signals`` view joins in by sample_id, so a user sees
# one row of signals per sample whichever stage produced them (table name -> columns). Each image
# stage writes its own table (a rerun of one stage never rewrites another's files). Filled below,
# table by table; signals_view() gives the view's columns with their types.
SIGNAL_COLUMNS: dict[str, tuple[str, ...]] = {}

# --- embeddings and safety: the Cross-modal Vector Engine's vectors and the NSFW score -----------

EMBED_DIM = 256  # the embedded default embedder's width; each model's table has its own width
# (engine.embedding_models records it; Workspace.table_schema gives the table's columns)


def embeddings_schema(dim: int = EMBED_DIM) -> pa.Schema:
    """The ``embeddings`` table for vectors of width ``dim`` (one row per usable pair)."""
    return pa.schema(
        [
            ("sample_id", pa.string()),
            ("image_id", pa.string()),
            ("model_id", pa.string()),  # Embedder.model_id (engine.vectors): architecture@weights#sha256
            ("image_vec", pa.list_(pa.float16(), dim)),  # L2-normalised; null if the image failed
            ("text_vec", pa.list_(pa.float16(), dim)),  # L2-normalised caption vector
            ("clip_score", pa.float32()),  # cosine(image, caption) in float32, before the cast
        ]
    )


EMBEDDINGS = embeddings_schema()

SAFETY = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image_id", pa.string()),
        ("nsfw_score", pa.float32()),  # open_nsfw P(nsfw) in [0, 1]; null if the image failed
    ]
)

TABLES["embeddings"] = EMBEDDINGS
TABLES["safety"] = SAFETY
SIGNAL_COLUMNS["embeddings"] = ("clip_score",)
SIGNAL_COLUMNS["safety"] = ("nsfw_score",)

# --- dedup: near-duplicate communities (engine/vectors/dedup.py), one global shard "all" ----------------

DEDUP = pa.schema(
    [
        ("sample_id", pa.string()),
        ("community_id", pa.string()),  # sample_id of the community's representative (itself if alone)
        ("is_representative", pa.bool_()),  # the one sample of its community a recipe keeps
        ("nearest_id", pa.string()),  # the most similar other image (image cosine), null without index
        ("nearest_sim", pa.float32()),  # that exact cosine
    ]
)
TABLES["dedup"] = DEDUP
# --- ocr: the text in each usable pair's image (engine/profiling/ocr.py; the ocr image stage) ---------------
# A row with null ocr_text is an image the OCR failed on; an image without text has ocr_text "".

OCR_LINE = pa.struct(
    [
        ("text", pa.string()),
        ("confidence", pa.float32()),  # recognition score, 0..1
        ("box", pa.list_(pa.list_(pa.float32(), 2), 4)),  # 4 corners [x, y] in image pixels, clockwise
    ]
)

OCR = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image_id", pa.string()),
        ("ocr_text", pa.string()),  # lines in reading order, joined by "\n"; "" when no text
        ("ocr_lines", pa.list_(OCR_LINE)),  # in reading order
        ("ocr_conf_mean", pa.float32()),  # mean line confidence; null without lines
        ("text_area_ratio", pa.float32()),  # area of the union of line boxes / image area
        ("ocr_lang", pa.string()),  # en | zh | mixed | none
        ("ocr_caption_overlap", pa.float32()),  # share of OCR characters the caption has; null without text
        ("has_watermark_text", pa.bool_()),  # a small credit/URL/stock-agency line (ocr_signals heuristic)
    ]
)

TABLES["ocr"] = OCR
SIGNAL_COLUMNS["ocr"] = tuple(OCR.names[2:])

# --- quality and nudity: no-reference quality scores and a second NSFW opinion (image stages) -------
# (engine/profiling/quality.py, engine/profiling/nudity.py). Tables of their own, so a workspace
# curated before them gets them by backfill (pipelines/backfill.py) and reads nulls until then.

QUALITY = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image_id", pa.string()),
        ("brisque", pa.float32()),  # BRISQUE (LIVE-trained SVR), lower is better (~0-100); null: undefined
        ("piqe", pa.float32()),  # PIQE (MATLAB's piqe), lower is better (0-100; 100 = flat); null: undefined
    ]
)

NUDITY = pa.schema(
    [
        ("sample_id", pa.string()),
        ("image_id", pa.string()),
        ("nsfw_nudenet", pa.float32()),  # NudeNet's top explicit-class detection score in [0, 1], 0: none
    ]
)

TABLES["quality"] = QUALITY
TABLES["nudity"] = NUDITY
SIGNAL_COLUMNS["quality"] = ("brisque", "piqe")
SIGNAL_COLUMNS["nudity"] = ("nsfw_nudenet",)


def signals_view() -> pa.Schema:
    """The columns of the catalog's ``signals`` view (engine.catalog): ``SIGNALS`` and then each
    table's ``SIGNAL_COLUMNS``, with their types, in that order."""
    fields = list(SIGNALS)
    for table, names in SIGNAL_COLUMNS.items():
        fields += [TABLES[table].field(name) for name in names]
    return pa.schema(fields)


# --- manifests: the Active Curation Engine's output (engine/curation/manifest.py) -----------------
# Workspace.manifest_rel(stage, manifest_id) + ".parquet"; a JSON sidecar beside it. After these
# columns come the pool columns the recipe read (its filters and tilts), and with --size the draw
# columns (MANIFEST_DRAW).

MANIFEST_ROW = pa.schema(
    [
        ("sample_id", pa.string()),
        ("uri", pa.string()),
        ("caption", pa.string()),  # as the stage uses it (caption_form says which form)
        ("weight", pa.float64()),  # relative sampling weight, mean 1 over the rows
        ("bucket_h", pa.int32()),
        ("bucket_w", pa.int32()),
        ("stage", pa.string()),
        ("kind", pa.string()),  # t2i (text-to-image) | i2i (image-to-image: source_* is the reference)
        ("concept_ids", pa.list_(pa.int64())),  # graph concept ids, as in tags
        ("source_sample_id", pa.string()),
        ("source_uri", pa.string()),
        ("caption_form", pa.string()),  # original | ocr | tags | enhanced
    ]
)
# What any manifest must have for a trainer to draw from it (a hand-made one may lack the rest).
MANIFEST_REQUIRED = ("sample_id", "uri", "caption", "weight", "bucket_h", "bucket_w")
MANIFEST_DRAW = pa.schema([("draw", pa.int64()), ("epoch", pa.int32())])  # a materialised manifest

# One row per boosted sample of one boost file: Workspace.boost_rel(stage, name).
BOOSTS = pa.schema(
    [
        ("sample_id", pa.string()),
        ("factor", pa.float64()),  # multiplies the sample's manifest weight; in (0, MAX_BOOST]
        ("reason", pa.string()),  # what the user was fixing, e.g. "gap: lorikeet"
    ]
)

# --- column groups the service shows (api, catalog) ---
# Named groups of the catalog's ``signals`` view columns (signals_view()), so `zcurate stats`, the
# API's schemas and the dashboard list them from one place. Each group's order is its display order.

# Profiling signals summarised by quantiles (`zcurate stats`, GET /v1/stats): the numbers a recipe
# or a person reads a spread of. Left out: aspect (width / height, both listed), bits_per_pixel (a
# constant of the colour mode), phash (a hash, not a measure) and caption_lang_prob.
STAT_SIGNALS = (
    "width",
    "height",
    "file_bytes",
    "compression_ratio",
    "border_variance",
    "jpeg_bpp",
    "blur",
    "colourfulness",
    "entropy",
    "caption_chars",
    "caption_words",
)
# Scores with a histogram in GET /v1/stats: what a recipe thresholds on (image-caption agreement,
# NSFW probability, OCR confidence and text area; null where a stage has not run), then sharpness
# and size, which the dashboard's overview plots too.
SCORE_SIGNALS = ("clip_score", "nsfw_score", "ocr_conf_mean", "text_area_ratio", "blur", "width", "height")
# The explorer's range filters and sort keys (GET /v1/samples), shown on each sample's card: the
# scores without OCR confidence (a card says whether OCR found text instead, has_text).
EXPLORER_SIGNALS = tuple(name for name in SCORE_SIGNALS if name != "ocr_conf_mean")
