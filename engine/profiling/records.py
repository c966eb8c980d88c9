"""What every source shares: the raw record, the source error, and reading files safely.

A source (``engine.profiling.source``) lists its records as *plan rows* (``schema.PLAN_ROW``) and
reads a shard's rows into :class:`RawRecord` objects for ``engine.profiling.ingest`` to judge.
Every problem found while reading (a missing file, an unparsable sidecar, a malformed row) is put
on the record as ``error`` instead of raised, so the record becomes a rejected sample.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from engine import schema

# Extensions read as images. A file with one of these that is not an image is rejected as
# not_an_image; a PNG named .jpg is accepted with an extension_mismatch warning.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}
)

CAPTION_EXTENSIONS = (".txt", ".json")  # in order of preference when both exist (img2dataset)


@dataclass
class RawRecord:
    """One record as read from a source, before any judgement."""

    ref: str  # unique inside the source
    uri: str | None  # where the image lives, for the samples table
    name: str  # file name used to compare the extension with the decoded format
    image_bytes: bytes | None = None  # None when the file is missing or too large
    caption_bytes: bytes | None = None  # None when there is no caption at all
    error: str | None = None  # a reject reason found while reading
    detail: str | None = None
    meta: str | None = None  # the record's source metadata, a JSON object (samples.meta)


class SourceError(ValueError):
    """The source as a whole cannot be read (wrong path, unknown format, missing column)."""


def open_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and the path inside it, for a local path or a URI."""
    if "://" in location:
        try:
            return pafs.FileSystem.from_uri(location)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as e:
            raise SourceError(f"cannot open {location!r}: {e}") from e
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))


def text_to_bytes(text: str) -> bytes:
    """Undo a 'surrogateescape' decode, so invalid UTF-8 reaches ingest as the original bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # lone surrogates that did not come from surrogateescape
        return text.encode("utf-8", "surrogatepass")


def json_object(data: bytes) -> tuple[dict | None, str | None]:
    """A JSON sidecar's object: (object, None) or (None, 'malformed_caption_file:why')."""
    try:
        obj = json.loads(data.decode("utf-8", "surrogateescape"))
    except (json.JSONDecodeError, RecursionError) as e:
        return None, f"malformed_caption_file:{e}"
    if not isinstance(obj, dict):
        return None, "malformed_caption_file:not a JSON object"
    return obj, None


def caption_from_json(data: bytes) -> tuple[bytes | None, str | None]:
    """The ``caption`` field of a JSON sidecar: (caption bytes or None, error or None)."""
    obj, error = json_object(data)
    if obj is None:
        return None, error
    value = obj.get("caption")
    if value is None:
        return None, None
    return text_to_bytes(value if isinstance(value, str) else json.dumps(value)), None


def split_error(error: str | None) -> tuple[str | None, str | None]:
    """'reason:detail' -> (reason, detail)."""
    if error is None:
        return None, None
    reason, _, detail = error.partition(":")
    return reason, detail or None


def stable_key(*parts: str) -> str:
    """A short stable hash naming a source (its plan and shard ids)."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=5).hexdigest()


def plan_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=schema.PLAN_ROW)


def read_file(fs: pafs.FileSystem, path: str, max_bytes: int) -> tuple[bytes | None, str | None]:
    """Read a whole file: (bytes, None) or (None, 'reason:detail'); never raises for a bad path."""
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            return None, "missing_file:no such file"
        if info.type != pafs.FileType.File:
            return None, "missing_file:not a regular file"
        if info.size is not None and info.size > max_bytes:
            return None, f"file_too_large:{info.size} bytes > limit {max_bytes}"
        with fs.open_input_stream(path) as f:
            return f.read(), None
    except (OSError, ValueError, pa.ArrowException) as e:  # permissions, NUL bytes in a path...
        return None, f"missing_file:{type(e).__name__}: {e}"


def pair_files(groups: dict[str, dict[str, str]], orphan_captions: tuple[str, ...]) -> Iterator[tuple]:
    """Turn files grouped by key ({key: {extension: name}}) into records, in key order.

    Yields ``(key, image name, caption name)`` per image (two images with one caption are two
    records), and ``(key, None, caption name)`` for a caption with an extension in
    ``orphan_captions`` whose image is gone. Other groups without an image are metadata.
    """
    for key in sorted(groups):
        files = groups[key]
        images = sorted(name for ext, name in files.items() if ext in IMAGE_EXTENSIONS)
        caption = next((files[e] for e in CAPTION_EXTENSIONS if e in files), None)
        for image in images:
            yield key, image, caption
        if not images and any(e in files for e in orphan_captions):
            yield key, None, caption


def attach_caption(record: RawRecord, caption_ref: str | None, data: bytes | None, error: str | None) -> None:
    """Put a sidecar's caption on a record (a .json sidecar's ``caption`` field, its other fields as
    metadata when the record has none yet); keep the first error."""
    if caption_ref is None:
        return
    if data is not None and caption_ref.endswith(".json"):
        attach_meta(record, data)
        data, error = caption_from_json(data)
    record.caption_bytes = data
    if error and not record.error:
        record.error, record.detail = split_error(error)


def meta_json(values: dict, drop: tuple[str, ...] = ("caption",)) -> str | None:
    """Source metadata as ``samples.meta`` holds it: a JSON object with sorted keys, None when empty.

    The caption is in its own column, so it is dropped; values JSON cannot hold become strings.
    """
    kept = {k: v for k, v in values.items() if k not in drop}
    return json.dumps(kept, sort_keys=True, ensure_ascii=False, default=str) if kept else None


def attach_meta(record: RawRecord, data: bytes | None) -> None:
    """A ``.json`` sidecar's fields as the record's metadata, unless the plan already gave some
    (img2dataset's Parquet holds the same fields); a sidecar that does not parse adds nothing."""
    if record.meta is not None or data is None:
        return
    obj, _ = json_object(data)
    if obj is not None:
        record.meta = meta_json(obj)


def no_pairs(location: str, fs: pafs.FileSystem, path: str, kind: str) -> SourceError:
    """The error of a source that lists no records: what the location holds, and what to pass instead.

    e.g. ``no pairs in out/: 3 .tar, 3 .parquet, 3 .json; pass --format webdataset or a file``.
    """
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return SourceError(f"no pairs in {location}: {os.path.basename(path)} holds no records")
    selector = pafs.FileSelector(path, recursive=True)
    counts = Counter(
        os.path.splitext(i.path)[1].lower() or "(no extension)"
        for i in fs.get_file_info(selector)
        if i.is_file
    )
    data_first = (".tar", ".parquet")  # on a tie, the extensions that hint at a kind come first
    order = sorted(counts, key=lambda e: (-counts[e], data_first.index(e) if e in data_first else 2, e))
    found = ", ".join(f"{counts[ext]} {ext}" for ext in order[:6]) or "it is empty"
    if len(counts) > 6:
        found += ", ..."
    # tars are the likelier meaning of a folder with tars and Parquet (img2dataset's sidecars)
    likely = next((k for ext, k in ((".tar", "webdataset"), (".parquet", "table")) if counts[ext]), kind)
    hint = (
        f"pass --format {likely} or a file" if likely != kind else "pass a folder of images, tars or a table"
    )
    return SourceError(f"no pairs in {location}: {found}; {hint}")
