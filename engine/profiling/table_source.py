"""A table with an image and a caption per row: Parquet, CSV or JSONL; one file or a folder of Parquet.

The image is a path/URI (resolved against the table's folder when relative), or its bytes in the
table itself: a binary column (img2dataset's ``parquet`` layout: ``jpg``) or Hugging Face
``datasets``' ``Image`` feature, a ``{bytes, path}`` struct. The image column's type says which.
An embedded image's ``uri`` is ``FILE.parquet#COLUMN:ROW`` (:func:`read_embedded` reads it back).
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.profiling import img2dataset_output
from engine.profiling.records import (
    RawRecord,
    SourceError,
    meta_json,
    no_pairs,
    open_filesystem,
    plan_table,
    read_file,
    split_error,
    stable_key,
    text_to_bytes,
)

# Default column names tried, in order, when a table source does not name its columns: image bytes
# first (img2dataset's parquet has both ``jpg`` and ``url``), then paths and URIs.
IMAGE_COLUMNS = (
    "image",
    "jpg",
    "jpeg",
    "png",
    "webp",
    "image_bytes",
    "image_path",
    "path",
    "file",
    "filename",
    "uri",
    "url",
)

CAPTION_COLUMNS = ("caption", "text", "prompt", "title")


def image_kind(location: str, column: str, kind: pa.DataType | None) -> str:
    """How a column holds images: 'path' (text; CSV and JSONL), 'bytes' or 'struct' ({bytes, path})."""
    if kind is None or pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "path"
    if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
        return "struct"
    if img2dataset_output.is_bytes(kind):
        return "bytes"
    raise SourceError(
        f"{location}: column {column!r} is {kind}; an image column holds paths or URIs (text), "
        "image bytes (binary) or a {bytes, path} struct"
    )


def read_parquet_rows(fs: pafs.FileSystem, path: str, column: str, rows: set[int]) -> Iterator[tuple]:
    """``(row, value)`` of one column for some rows of a Parquet file, reading only their row groups."""
    with fs.open_input_file(path) as f:
        parquet = pq.ParquetFile(f)
        starts = [0]
        for group in range(parquet.num_row_groups):
            starts.append(starts[-1] + parquet.metadata.row_group(group).num_rows)
        for group in sorted({bisect.bisect_right(starts, r) - 1 for r in rows if 0 <= r < starts[-1]}):
            values = parquet.read_row_group(group, columns=[column]).column(0)
            for r in sorted(r for r in rows if starts[group] <= r < starts[group + 1]):
                yield r, values[r - starts[group]].as_py()


def read_embedded(uri: str) -> bytes:
    """The bytes of an embedded image, from its ``FILE.parquet#COLUMN:ROW`` uri (thumbnails, training).

    Raises:
        SourceError: the file, column or row is gone, or the row holds no bytes.
    """
    path, _, spot = uri.rpartition("#")
    column, _, row = spot.rpartition(":")
    fs, path = open_filesystem(path)
    try:
        value = next(read_parquet_rows(fs, path, column, {int(row)}), (None, None))[1]
    except (OSError, ValueError, KeyError, pa.ArrowException) as e:
        raise SourceError(f"{uri}: {e}") from None
    if isinstance(value, dict):
        value = value.get("bytes")
    if not value:
        raise SourceError(f"{uri}: no image bytes")
    return value


class TableSource:
    """A Parquet, CSV or JSONL table (or a folder of Parquet files) with an image and a caption column.

    Captions and the other columns (as ``meta``) are carried in the plan, so shards never re-read
    the table for them; embedded image bytes are read per shard, only the row groups it needs.
    CSV and JSONL are parsed row by row so that one malformed row, or one caption that is not
    UTF-8, affects only that row. img2dataset's rows that failed to download (``status`` is not
    ``success``) are ``download_failed`` records.
    """

    kind = "table"

    def __init__(
        self,
        location: str,
        max_file_bytes: int,
        image_column: str | None = None,
        caption_column: str | None = None,
    ):
        self.location = location
        self.fs, self.path = open_filesystem(location)
        self.max_file_bytes = max_file_bytes
        self.image_column, self.caption_column = image_column, caption_column
        info = self.fs.get_file_info(self.path)
        if info.type == pafs.FileType.File:
            self.files = [self.path]
        elif info.type == pafs.FileType.Directory:  # img2dataset's parquet layout, a saved HF dataset
            found = self.fs.get_file_info(pafs.FileSelector(self.path, recursive=True))
            self.files = sorted(i.path for i in found if i.is_file and i.path.lower().endswith(".parquet"))
            if not self.files:
                raise no_pairs(location, self.fs, self.path, self.kind)
        else:
            raise SourceError(f"{location!r} is not a file")
        self.format = self._detect_format(self.files[0])
        # Resolve the columns now, so a wrong name fails before any job starts.
        types = self._column_types()
        names = list(types)
        self.image_col = self._pick(names, image_column, IMAGE_COLUMNS, "image")
        self.caption_col = self._pick(names, caption_column, CAPTION_COLUMNS, "caption")
        self.image_kind = image_kind(location, self.image_col, types[self.image_col])
        self.has_status = img2dataset_output.has_status(names)

    @staticmethod
    def _detect_format(path: str) -> str:
        lower = path.lower()
        for suffix, fmt in (
            (".parquet", "parquet"),
            (".csv", "csv"),
            (".tsv", "tsv"),
            (".jsonl", "jsonl"),
            (".ndjson", "jsonl"),
            (".json", "jsonl"),
        ):
            if lower.endswith(suffix):
                return fmt
        raise SourceError(f"{path!r}: table sources must end in .parquet, .csv, .tsv or .jsonl")

    @property
    def key(self) -> str:
        return stable_key(self.kind, self.path, self.image_column or "", self.caption_column or "")

    def _pick(self, columns: list[str], wanted: str | None, defaults: tuple[str, ...], role: str) -> str:
        if wanted:
            if wanted not in columns:
                raise SourceError(f"{self.location}: no column {wanted!r} (columns: {', '.join(columns)})")
            return wanted
        for name in defaults:
            if name in columns:
                return name
        raise SourceError(
            f"{self.location}: no {role} column found among {', '.join(columns)}; "
            f"name it with --{role}-column"
        )

    def _rows(self, path: str) -> Iterator[tuple[dict | None, str | None]]:
        """Yield (row dict, None) or (None, error detail) for each row, in file order (no image bytes)."""
        if self.format == "parquet":
            with self.fs.open_input_file(path) as f:
                parquet = pq.ParquetFile(f)
                if self.image_col not in parquet.schema_arrow.names:
                    raise SourceError(f"{path}: no column {self.image_col!r}, unlike {self.files[0]}")
                skip = () if self.image_kind == "path" else (self.image_col,)
                columns = img2dataset_output.text_columns(parquet.schema_arrow, skip)
                if self.caption_col not in columns:
                    columns.append(self.caption_col)
                for batch in parquet.iter_batches(batch_size=65536, columns=columns):
                    for row in batch.to_pylist():
                        yield row, None
            return
        with self.fs.open_input_stream(path) as f:
            text = f.read().decode("utf-8", "surrogateescape")
        if self.format in ("csv", "tsv"):
            reader = csv.reader(
                io.StringIO(text, newline=""), delimiter="\t" if self.format == "tsv" else ","
            )
            header = next(reader, None)
            if not header:
                raise SourceError(f"{self.location}: empty CSV (no header row)")
            for fields in reader:
                if not any(fields):
                    continue  # blank line
                if len(fields) != len(header):
                    yield None, f"expected {len(header)} fields, got {len(fields)}"
                    continue
                yield dict(zip(header, fields, strict=True)), None
            return
        for line_no, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield None, f"line {line_no}: {e}"
                continue
            if not isinstance(obj, dict):
                yield None, f"line {line_no}: not a JSON object"
                continue
            yield obj, None

    def _column_types(self) -> dict[str, pa.DataType | None]:
        """Column name -> Arrow type (Parquet), or -> None: the CSV header, the first JSONL object's keys."""
        if self.format == "parquet":
            with self.fs.open_input_file(self.files[0]) as f:
                return {field.name: field.type for field in pq.ParquetFile(f).schema_arrow}
        for row, _ in self._rows(self.files[0]):
            if row is not None:
                return dict.fromkeys(row)
        return {}

    def list_records(self) -> pa.Table:
        rows = []
        for path in self.files:
            prefix = "" if path == self.path else f"{os.path.relpath(path, self.path)}#"
            for index, (row, problem) in enumerate(self._rows(path)):
                ref = f"{prefix}row:{index}"
                if row is None:
                    rows.append({"ref": ref, "error": "malformed_row", "detail": problem})
                else:
                    rows.append(self._plan_row(row, ref, path, index))
        if not rows:
            raise no_pairs(self.location, self.fs, self.path, self.kind)
        return plan_table(rows)

    def _plan_row(self, row: dict, ref: str, path: str, index: int) -> dict:
        """One table row's plan row: where its image is, its caption, its other columns as meta."""
        caption = row.get(self.caption_col)
        if isinstance(caption, str):
            caption = text_to_bytes(caption)
        elif caption is not None and not isinstance(caption, bytes):
            caption = str(caption).encode()
        plan = {
            "ref": ref,
            "caption": caption,
            "meta": meta_json(row, drop=(self.image_col, self.caption_col)),
        }
        failed = img2dataset_output.failure(row) if self.has_status else None
        if failed:
            plan["error"], plan["detail"] = failed
        if self.image_kind != "path":
            plan["uri"] = f"{path}#{self.image_col}:{index}"
            return plan
        image = row.get(self.image_col)
        if isinstance(image, str) and image.strip():
            plan["uri"] = self._resolve(image.strip(), path.rsplit("/", 1)[0])
        elif not failed:
            plan |= {"error": "malformed_row", "detail": f"no value in column {self.image_col!r}"}
        return plan

    def _resolve(self, image: str, base_dir: str) -> str:
        if "://" in image or os.path.isabs(image):
            return image
        return f"{base_dir}/{image}"

    def read_records(self, rows: pa.Table) -> Iterator[RawRecord]:
        rows = rows.to_pylist()
        embedded, unreadable = self._embedded(rows) if self.image_kind != "path" else ({}, {})
        for row in rows:
            uri = row["uri"]
            record = RawRecord(
                ref=row["ref"], uri=uri, name=os.path.basename(uri or ""), caption_bytes=row["caption"]
            )
            record.meta = row.get("meta")  # not in plans written before samples had meta
            if row["error"]:
                record.error, record.detail = row["error"], row["detail"]
            elif self.image_kind != "path":
                file = uri.rpartition("#")[0]
                if file in unreadable:
                    record.error, record.detail = "missing_file", f"unreadable table: {unreadable[file]}"
                else:
                    self._fill_embedded(record, embedded.get(uri), file)
            elif uri.startswith(("http://", "https://")):
                record.error = "missing_file"
                record.detail = "remote http(s) images are not fetched; download them first (img2dataset)"
            else:
                self._read_path(record, uri)
            yield record

    def _read_path(self, record: RawRecord, uri: str) -> None:
        try:
            fs, path = (self.fs, uri) if "://" not in uri else open_filesystem(uri)
            data, err = read_file(fs, path, self.max_file_bytes)
        except SourceError as e:
            data, err = None, f"missing_file:{e}"
        record.image_bytes = data
        record.error, record.detail = split_error(err)

    def _embedded(self, rows: list[dict]) -> tuple[dict, dict]:
        """The image column's values of a shard's rows (uri -> value), and the files that failed."""
        wanted: dict[str, set[int]] = {}
        for row in rows:
            if row["uri"] and not row["error"]:
                file, _, spot = row["uri"].rpartition("#")
                wanted.setdefault(file, set()).add(int(spot.rpartition(":")[2]))
        values, unreadable = {}, {}
        for file, indices in wanted.items():
            try:
                for index, value in read_parquet_rows(self.fs, file, self.image_col, indices):
                    values[f"{file}#{self.image_col}:{index}"] = value
            except (OSError, ValueError, KeyError, pa.ArrowException) as e:
                unreadable[file] = f"{type(e).__name__}: {e}"
        return values, unreadable

    def _fill_embedded(self, record: RawRecord, value, file: str) -> None:
        """An embedded image's bytes onto the record; a {bytes, path} struct without bytes is a path."""
        # img2dataset names the column after the format (jpg), so the extension check applies
        record.name = f"image.{self.image_col}" if self.image_col in ("jpg", "jpeg", "png", "webp") else ""
        if isinstance(value, dict):
            path, value = value.get("path"), value.get("bytes")
            if value is None and path:  # the Image feature also stores images by path
                record.uri = record.name = self._resolve(path, file.rsplit("/", 1)[0])
                self._read_path(record, record.uri)
                return
            record.name = os.path.basename(path or "")
        if value is None:
            record.error, record.detail = "missing_file", f"no image bytes in column {self.image_col!r}"
        elif len(value) > self.max_file_bytes:
            record.error = "file_too_large"
            record.detail = f"{len(value)} bytes > limit {self.max_file_bytes}"
        else:
            record.image_bytes = value
