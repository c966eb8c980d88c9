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
        ("sample_id", pa.string()),  # hash(image bytes, caption); see engine.ingest.make_sample_id
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

# --- concept_loss: the trainer's per-concept loss report (engine/s3dit, read by feedback) -----------

# One file per report: feedback/<stage>/<step>.parquet (see engine.s3dit.concept_loss).
CONCEPT_LOSS = pa.schema(
    [
        ("stage", pa.string()),  # the training stage (lowres, omni, sft, ...)
        ("step", pa.int64()),  # the trainer's global step when the report was made
        ("manifest", pa.string()),  # the manifest the batches came from (path or URI)
        ("concept_id", pa.string()),  # a concept of the manifest's concept_ids; "" = samples without
        ("samples", pa.int32()),  # draws carrying the concept since the previous report
        ("loss_mean", pa.float32()),  # mean flow-matching loss of those draws
        ("loss_std", pa.float32()),  # their standard deviation (0 for one draw)
    ]
)

TABLES: dict[str, pa.Schema] = {
    "samples": SAMPLES,
    "signals": SIGNALS,
}

# Columns of other tables that the catalog's ``signals`` view joins in by sample_id, so a user sees
# one row of signals per sample whichever stage produced them (table name -> columns). Each image
# stage writes its own table (a rerun of one stage never rewrites another's files).
SIGNAL_COLUMNS: dict[str, tuple[str, ...]] = {}
