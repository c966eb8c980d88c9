"""Where image-text pairs come from: a folder, a table, WebDataset tars, or the openclipart demo.

A source does two things:

* ``list_records()`` lists its records in a fixed order as a small Arrow table (the *plan rows*,
  ``schema.PLAN_ROW``: ``ref``, ``uri``, ``caption_ref``, ``caption``, ``error``). Only names and
  table captions are read here, never images, so this stays cheap at millions of records.
* ``read_records(rows)`` reads the bytes of a slice of those rows (one shard) and yields
  ``RawRecord`` objects (``engine.profiling.records``) for ``engine.profiling.ingest`` to judge.

:func:`load_source` picks the kind: ``folder_source``, ``table_source``, ``webdataset_source`` or
``openclipart_source``.
"""

from __future__ import annotations

import pyarrow.fs as pafs

from engine.profiling.folder_source import FolderSource
from engine.profiling.openclipart_source import OPENCLIPART_ROOT, OpenclipartSource
from engine.profiling.records import SourceError, open_filesystem
from engine.profiling.table_source import TableSource
from engine.profiling.webdataset_source import WebDatasetSource

SOURCE_KINDS = ("auto", "folder", "table", "webdataset", "openclipart")

Source = FolderSource | TableSource | WebDatasetSource | OpenclipartSource


def load_source(
    location: str,
    kind: str = "auto",
    max_file_bytes: int = 256 * 2**20,
    image_column: str | None = None,
    caption_column: str | None = None,
) -> Source:
    """Open a source, guessing its kind from the location when ``kind`` is 'auto'.

    'openclipart' (the word) is the demo source; a ``.tar`` file or a folder holding only
    ``.tar`` files is WebDataset; a ``.parquet``/``.csv``/``.tsv``/``.jsonl`` file is a table;
    any other folder is a folder of images with sidecar captions.
    """
    if kind not in SOURCE_KINDS:
        raise SourceError(f"unknown source kind {kind!r}; choose one of {', '.join(SOURCE_KINDS)}")
    if kind == "openclipart" or (kind == "auto" and location == "openclipart"):
        root = OPENCLIPART_ROOT if location == "openclipart" else location
        return OpenclipartSource(root, max_file_bytes)
    if kind == "auto":
        fs, path = open_filesystem(location)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise SourceError(f"{location!r} does not exist")
        if info.type == pafs.FileType.File:
            kind = "webdataset" if path.endswith(".tar") else "table"
        else:
            entries = [i for i in fs.get_file_info(pafs.FileSelector(path)) if i.is_file]
            is_wds = entries and all(i.path.endswith(".tar") for i in entries)
            kind = "webdataset" if is_wds else "folder"
    if kind == "folder":
        return FolderSource(location, max_file_bytes)
    if kind == "table":
        return TableSource(location, max_file_bytes, image_column, caption_column)
    return WebDatasetSource(location, max_file_bytes)
