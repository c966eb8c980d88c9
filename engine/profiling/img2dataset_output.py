"""img2dataset's output folders: the Parquet beside each shard that names every row it tried.

img2dataset writes each shard ``NNNNN`` in one of three layouts (``--output_format``): a
``NNNNN/`` folder of ``key.jpg`` + ``key.txt`` + ``key.json`` files, a ``NNNNN.tar`` of the same
members, or the image bytes in ``NNNNN.parquet``'s ``jpg`` column. In all three, ``NNNNN.parquet``
has one row per URL it tried, downloaded or not: ``key``, ``url``, ``caption``, ``status``
(``success``, ``failed_to_download``, ``failed_to_resize``), ``error_message``, ``width``,
``height`` and any ``--save_additional_columns``; ``NNNNN_stats.json`` sits beside it.

The sources read that Parquet so that the row's fields are kept as ``samples.meta`` and a row
img2dataset could not fetch becomes a ``download_failed`` reject instead of silence.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.profiling.records import meta_json, text_to_bytes

STATUS_COLUMNS = ("status", "error_message")  # together they mark img2dataset's rows


def has_status(columns: list[str]) -> bool:
    """Whether a table's columns are img2dataset's (a row may be a failed download)."""
    return all(c in columns for c in STATUS_COLUMNS)


def failure(row: dict) -> tuple[str, str] | None:
    """``("download_failed", "status: error_message")`` for a row img2dataset did not store, else None."""
    status = row.get("status")
    if status is None or status == "success":
        return None
    message = row.get("error_message")
    return "download_failed", f"{status}: {message}" if message else str(status)


def failed_plan_row(ref: str, row: dict) -> dict | None:
    """The plan row of a URL img2dataset did not store (None when it did): rejected as
    ``download_failed``, with its caption and its row as ``meta``."""
    failed = failure(row)
    if failed is None:
        return None
    caption = row.get("caption")
    caption = text_to_bytes(caption) if isinstance(caption, str) else None
    return {"ref": ref, "caption": caption, "error": failed[0], "detail": failed[1], "meta": meta_json(row)}


def is_bytes(kind: pa.DataType) -> bool:
    """Binary data, or a struct that holds some (Hugging Face's Image feature: ``{bytes, path}``)."""
    if pa.types.is_struct(kind):
        return any(is_bytes(kind.field(i).type) for i in range(kind.num_fields))
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)


def text_columns(schema: pa.Schema, skip: tuple[str, ...] = ()) -> list[str]:
    """The columns worth reading as metadata: all but image bytes and ``skip``."""
    return [f.name for f in schema if f.name not in skip and not is_bytes(f.type)]


def read_sidecar(fs: pafs.FileSystem, path: str) -> dict[str, dict] | None:
    """``key -> row`` of img2dataset's Parquet at ``path`` (image bytes left out), or None when there
    is no such file or it is not img2dataset's."""
    try:
        if fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with fs.open_input_file(path) as f:
            parquet = pq.ParquetFile(f)
            names = parquet.schema_arrow.names
            if "key" not in names or not has_status(names):
                return None
            rows = parquet.read(columns=text_columns(parquet.schema_arrow)).to_pylist()
    except (OSError, pa.ArrowException):  # not a Parquet file after all: not img2dataset's
        return None
    return {str(row["key"]): row for row in rows}


def sidecar_of(fs: pafs.FileSystem, shard_path: str) -> dict[str, dict] | None:
    """The sidecar rows of a shard ``NNNNN.tar`` or ``NNNNN/`` folder: ``NNNNN.parquet`` beside it."""
    stem = shard_path[:-4] if shard_path.endswith(".tar") else shard_path.rstrip("/")
    return read_sidecar(fs, f"{stem}.parquet")
