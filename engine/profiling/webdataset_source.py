"""WebDataset ``.tar`` shards: ``key.jpg`` + ``key.txt`` or ``key.json`` members (img2dataset's too)."""

from __future__ import annotations

import os
import tarfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pyarrow as pa
import pyarrow.fs as pafs

from engine.profiling import img2dataset_output
from engine.profiling.records import (
    CAPTION_EXTENSIONS,
    RawRecord,
    SourceError,
    attach_caption,
    attach_meta,
    meta_json,
    no_pairs,
    open_filesystem,
    pair_files,
    plan_table,
    split_error,
    stable_key,
)


def _wds_split(member: str) -> tuple[str, str]:
    """WebDataset's key convention: 'dir/000123.jpg' -> ('dir/000123', '.jpg')."""
    directory, _, base = member.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{directory}/{stem}" if directory else stem
    return key, (dot + ext).lower()


class WebDatasetSource:
    """WebDataset ``.tar`` shards (``key.jpg`` + ``key.txt`` or ``key.json``): one tar or a folder of them.

    A ``key.json`` member is kept as the record's ``meta``. img2dataset's ``webdataset`` layout puts
    ``NNNNN.parquet`` beside each ``NNNNN.tar``: its rows are the records' ``meta``, and its failed
    downloads become ``download_failed`` records (``engine.profiling.img2dataset_output``).
    """

    kind = "webdataset"

    def __init__(self, location: str, max_file_bytes: int):
        self.location = location
        self.fs, self.base = open_filesystem(location)
        self.max_file_bytes = max_file_bytes
        info = self.fs.get_file_info(self.base)
        if info.type == pafs.FileType.File:
            self.tars = [self.base]
        elif info.type == pafs.FileType.Directory:
            selector = pafs.FileSelector(self.base, recursive=True)
            self.tars = sorted(i.path for i in self.fs.get_file_info(selector) if i.path.endswith(".tar"))
        else:
            raise SourceError(f"{location!r} does not exist")
        if not self.tars:
            raise no_pairs(location, self.fs, self.base, self.kind)

    @property
    def key(self) -> str:
        return stable_key(self.kind, self.base)

    @contextmanager
    def _open_tar(self, path: str) -> Iterator[tarfile.TarFile]:
        """A tar opened for random access; closes the underlying file too (tarfile does not)."""
        with self.fs.open_input_file(path) as f, tarfile.open(fileobj=f, mode="r:") as tar:
            yield tar

    def list_records(self) -> pa.Table:
        rows = []
        for tar_path in self.tars:
            tar_name = (
                os.path.relpath(tar_path, self.base) if tar_path != self.base else os.path.basename(tar_path)
            )
            try:
                with self._open_tar(tar_path) as tar:
                    members = [m.name for m in tar.getmembers() if m.isfile()]
            except (tarfile.TarError, OSError) as e:
                rows.append(
                    {
                        "ref": f"{tar_name}#",
                        "uri": tar_path,
                        "error": "malformed_row",
                        "detail": f"unreadable tar: {e}",
                    }
                )
                continue
            rows += self._list_tar(tar_path, tar_name, members)
        if not rows:
            raise no_pairs(self.location, self.fs, self.base, self.kind)
        return plan_table(rows)

    def _list_tar(self, tar_path: str, tar_name: str, members: list[str]) -> list[dict]:
        """One tar's plan rows in key order, with img2dataset's failed downloads among them."""
        groups: dict[str, dict[str, str]] = {}
        for name in members:
            key, ext = _wds_split(name)
            groups.setdefault(key, {})[ext] = name
        sidecar = img2dataset_output.sidecar_of(self.fs, tar_path) or {}
        keyed = []  # (key, plan row)
        for key, image, caption in pair_files(groups, orphan_captions=CAPTION_EXTENSIONS):
            meta = meta_json(sidecar[key]) if key in sidecar else None
            row = {"ref": f"{tar_name}#{image or key}", "caption_ref": caption, "meta": meta}
            if image is None:
                row |= {"error": "missing_file", "detail": f"no image member for key {key!r}"}
            else:
                row["uri"] = f"{tar_path}#{image}"
            keyed.append((key, row))
        for key, found in sidecar.items():
            failed = img2dataset_output.failed_plan_row(f"{tar_name}#{key}", found)
            if failed and key not in groups:
                keyed.append((key, failed))
        return [row for _, row in sorted(keyed, key=lambda pair: pair[0])]

    def read_records(self, rows: pa.Table) -> Iterator[RawRecord]:
        by_tar: dict[str, list[dict]] = {}
        for row in rows.to_pylist():
            tar_path = (row["uri"] or "").split("#", 1)[0]
            by_tar.setdefault(tar_path, []).append(row)
        for tar_path, tar_rows in by_tar.items():
            with ExitStack() as stack:
                tar, index, open_error = None, {}, None
                if tar_path:
                    try:
                        tar = stack.enter_context(self._open_tar(tar_path))
                        index = {m.name: m for m in tar.getmembers()}
                    except (tarfile.TarError, OSError) as e:
                        open_error = str(e)
                for row in tar_rows:
                    yield self._read_row(row, tar, index, open_error)

    def _read_row(self, row: dict, tar, index: dict, open_error: str | None) -> RawRecord:
        member = (row["uri"] or "#").split("#", 1)[1]
        record = RawRecord(ref=row["ref"], uri=row["uri"], name=member)
        record.caption_bytes, record.meta = row["caption"], row.get("meta")  # meta: not in old plans
        if row["error"]:
            record.error, record.detail = row["error"], row["detail"]
        elif open_error:
            record.error, record.detail = "missing_file", f"tar unreadable: {open_error}"
        else:
            record.image_bytes, err = self._member(tar, index, member)
            record.error, record.detail = split_error(err)
            if row["caption_ref"]:
                attach_caption(record, row["caption_ref"], *self._member(tar, index, row["caption_ref"]))
            meta_member = f"{_wds_split(member)[0]}.json"
            if record.meta is None and meta_member in index:  # key.txt + key.json: the .json is metadata
                attach_meta(record, self._member(tar, index, meta_member)[0])
        return record

    def _member(self, tar, index, name) -> tuple[bytes | None, str | None]:
        info = index.get(name)
        if info is None:
            return None, f"missing_file:no member {name!r}"
        if info.size > self.max_file_bytes:
            return None, f"file_too_large:{info.size} bytes > limit {self.max_file_bytes}"
        try:
            return tar.extractfile(info).read(), None
        except (tarfile.TarError, OSError) as e:  # a tar cut short mid-member
            return None, f"truncated_image:{e}"
