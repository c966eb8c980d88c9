"""Where image-text pairs come from: a folder, a table, WebDataset tars, or the openclipart demo.

img2dataset's three output layouts are read as what they are (``files``: a folder,
``webdataset``: tars, ``parquet``: a folder of tables), with its metadata and failed downloads
(``engine.profiling.img2dataset_output``).

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

import os

import pyarrow.fs as pafs

from engine.profiling.folder_source import FolderSource
from engine.profiling.openclipart_source import OPENCLIPART_ROOT, OpenclipartSource
from engine.profiling.records import IMAGE_EXTENSIONS, SourceError, open_filesystem
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
    """Open a source, guessing its kind from the location when ``kind`` is 'auto' (``--format``).

    'openclipart' (the word) is the demo source; a ``.tar`` file, or a folder with ``.tar`` files
    and no images beside them, is WebDataset; a ``.parquet``/``.csv``/``.tsv``/``.jsonl`` file, or
    a folder with ``.parquet`` files and neither images, tars nor sub-folders, is a table; any
    other folder is a folder of images with sidecar captions. A source that lists no records
    raises ``SourceError`` naming what the location holds (``records.no_pairs``).
    """
    if kind not in SOURCE_KINDS:
        raise SourceError(f"unknown source kind {kind!r}; choose one of {', '.join(SOURCE_KINDS)}")
    if kind == "openclipart" or (kind == "auto" and location == "openclipart"):
        root = OPENCLIPART_ROOT if location == "openclipart" else location
        return OpenclipartSource(root, max_file_bytes)
    if kind == "auto":
        kind = detect_kind(location)
    if kind == "folder":
        return FolderSource(location, max_file_bytes)
    if kind == "table":
        return TableSource(location, max_file_bytes, image_column, caption_column)
    return WebDatasetSource(location, max_file_bytes)


def detect_kind(location: str) -> str:
    """'folder', 'table' or 'webdataset' for a path, from its name or its folder's top level."""
    fs, path = open_filesystem(location)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise SourceError(f"{location!r} does not exist")
    if info.type == pafs.FileType.File:
        return "webdataset" if path.endswith(".tar") else "table"
    entries = fs.get_file_info(pafs.FileSelector(path))
    extensions = {os.path.splitext(i.path)[1].lower() for i in entries if i.is_file}
    if extensions & IMAGE_EXTENSIONS:
        return "folder"
    if ".tar" in extensions:  # img2dataset's webdataset layout has .parquet and .json beside them
        return "webdataset"
    has_folders = any(i.type == pafs.FileType.Directory for i in entries)
    if ".parquet" in extensions and not has_folders:  # img2dataset's parquet layout
        return "table"
    return "folder"
