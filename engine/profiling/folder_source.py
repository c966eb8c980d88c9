"""A folder of images with sidecar captions (img2dataset's ``files`` layout, among others)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from engine.profiling import img2dataset_output
from engine.profiling.records import (
    RawRecord,
    SourceError,
    attach_caption,
    attach_meta,
    meta_json,
    no_pairs,
    open_filesystem,
    pair_files,
    plan_table,
    read_file,
    split_error,
    stable_key,
)


class FolderSource:
    """A folder of images with sidecar captions: ``a/b.jpg`` + ``a/b.txt`` or ``a/b.json``.

    Files are grouped by path without extension. A group with an image file is a record; a lone
    ``.txt`` is a record whose image is missing; lone ``.json`` files and other files are metadata
    and are ignored. A record's ``.json`` sidecar is kept as its ``meta``. In img2dataset's
    ``files`` layout (``NNNNN/`` folders, ``NNNNN.parquet`` and ``NNNNN_stats.json`` beside each),
    the Parquet's row is the record's ``meta`` and its failed downloads are ``download_failed``
    records (``engine.profiling.img2dataset_output``).
    """

    kind = "folder"

    def __init__(self, location: str, max_file_bytes: int):
        self.location = location
        self.fs, self.base = open_filesystem(location)
        self.max_file_bytes = max_file_bytes
        info = self.fs.get_file_info(self.base)
        if info.type != pafs.FileType.Directory:
            raise SourceError(f"{location!r} is not a folder")

    @property
    def key(self) -> str:
        return stable_key(self.kind, self.base)

    def _uri(self, path: str) -> str:
        return (
            path if isinstance(self.fs, pafs.LocalFileSystem) else f"{self.location.split('://')[0]}://{path}"
        )

    def list_records(self) -> pa.Table:
        selector = pafs.FileSelector(self.base, recursive=True)
        groups: dict[str, dict[str, str]] = {}
        folders = set()
        for info in self.fs.get_file_info(selector):
            rel = os.path.relpath(info.path, self.base)
            if info.type == pafs.FileType.Directory:
                folders.add(rel)
            elif info.is_file:
                stem, ext = os.path.splitext(rel)
                groups.setdefault(stem, {})[ext.lower()] = rel
        sidecars = self._sidecars(groups, folders)
        keyed = []  # (group key, plan row): listed in key order, failed downloads among them
        for key, image, caption in pair_files(groups, orphan_captions=(".txt",)):
            meta = meta_json(sidecars[key]) if key in sidecars else None
            if image is None:  # a caption whose image is gone
                row = {"ref": caption, "uri": None, "caption_ref": caption, "meta": meta}
                keyed.append(
                    (key, row | {"error": "missing_file", "detail": f"no image file next to {caption}"})
                )
            else:  # a.jpg and a.png with one a.txt: two records, one caption
                uri = self._uri(f"{self.base}/{image}")
                keyed.append((key, {"ref": image, "uri": uri, "caption_ref": caption, "meta": meta}))
        for key, row in sidecars.items():
            failed = img2dataset_output.failed_plan_row(key, row)
            if failed and key not in groups:
                keyed.append((key, failed))
        if not keyed:
            raise no_pairs(self.location, self.fs, self.base, self.kind)
        return plan_table([row for _, row in sorted(keyed, key=lambda pair: pair[0])])

    def _sidecars(self, groups: dict[str, dict[str, str]], folders: set[str]) -> dict[str, dict]:
        """img2dataset's rows by group key (``NNNNN/key``), from each ``NNNNN.parquet`` with a
        ``NNNNN/`` folder and ``NNNNN_stats.json`` beside it; empty for any other folder."""
        found = {}
        for stem, files in groups.items():
            if ".parquet" in files and stem in folders and ".json" in groups.get(f"{stem}_stats", {}):
                rows = img2dataset_output.read_sidecar(self.fs, f"{self.base}/{files['.parquet']}")
                found.update({f"{stem}/{key}": row for key, row in (rows or {}).items()})
        return found

    def read_records(self, rows: pa.Table) -> Iterator[RawRecord]:
        for row in rows.to_pylist():
            record = RawRecord(ref=row["ref"], uri=row["uri"], name=os.path.basename(row["ref"]))
            record.caption_bytes, record.meta = row["caption"], row.get("meta")  # meta: not in old plans
            if row["error"]:
                record.error, record.detail = row["error"], row["detail"]
                yield record
                continue
            data, err = read_file(self.fs, f"{self.base}/{row['ref']}", self.max_file_bytes)
            record.image_bytes = data
            record.error, record.detail = split_error(err)
            caption_ref = row["caption_ref"]
            if caption_ref:
                caption = read_file(self.fs, f"{self.base}/{caption_ref}", self.max_file_bytes)
                attach_caption(record, caption_ref, *caption)
            if record.meta is None and (caption_ref or "").endswith(".txt"):  # a.jpg + a.txt + a.json
                attach_meta(record, read_file(self.fs, f"{self.base}/{caption_ref[:-4]}.json", 2**20)[0])
            yield record
