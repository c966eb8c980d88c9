"""A folder of images with sidecar captions (the layout img2dataset writes)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from engine.profiling.records import (
    RawRecord,
    SourceError,
    attach_caption,
    open_filesystem,
    pair_files,
    plan_table,
    read_file,
    split_error,
    stable_key,
)


class FolderSource:
    """A folder of images with sidecar captions: ``a/b.jpg`` + ``a/b.txt`` or ``a/b.json``.

    This is the layout img2dataset writes. Files are grouped by path without extension. A group
    with an image file is a record; a lone ``.txt`` is a record whose image is missing; lone
    ``.json`` files and other files are metadata and are ignored.
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
        for info in self.fs.get_file_info(selector):
            if not info.is_file:
                continue
            rel = os.path.relpath(info.path, self.base)
            stem, ext = os.path.splitext(rel)
            groups.setdefault(stem, {})[ext.lower()] = rel
        rows = []
        for _, image, caption in pair_files(groups, orphan_captions=(".txt",)):
            if image is None:  # a caption whose image is gone
                rows.append(
                    {
                        "ref": caption,
                        "uri": None,
                        "caption_ref": caption,
                        "error": "missing_file",
                        "detail": f"no image file next to {caption}",
                    }
                )
            else:  # a.jpg and a.png with one a.txt: two records, one caption
                rows.append({"ref": image, "uri": self._uri(f"{self.base}/{image}"), "caption_ref": caption})
        return plan_table(rows)

    def read_records(self, rows: pa.Table) -> Iterator[RawRecord]:
        for row in rows.to_pylist():
            record = RawRecord(ref=row["ref"], uri=row["uri"], name=os.path.basename(row["ref"]))
            if row["error"]:
                record.error, record.detail = row["error"], row["detail"]
                yield record
                continue
            data, err = read_file(self.fs, f"{self.base}/{row['ref']}", self.max_file_bytes)
            record.image_bytes = data
            record.error, record.detail = split_error(err)
            if row["caption_ref"]:
                caption = read_file(self.fs, f"{self.base}/{row['caption_ref']}", self.max_file_bytes)
                attach_caption(record, row["caption_ref"], *caption)
            yield record
