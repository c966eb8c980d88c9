"""A Parquet, CSV or JSONL table naming an image path or URI and a caption per row."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from engine.profiling.records import (
    RawRecord,
    SourceError,
    open_filesystem,
    plan_table,
    read_file,
    split_error,
    stable_key,
    text_to_bytes,
)

# Default column names tried, in order, when a table source does not name its columns.
IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "uri", "url")

CAPTION_COLUMNS = ("caption", "text", "prompt", "title")


class TableSource:
    """A Parquet, CSV or JSONL table with an image path/URI column and a caption column.

    Relative image paths are resolved against the table's folder. Captions are carried in the
    plan, so shards never re-read the table. CSV and JSONL are parsed row by row so that one
    malformed row, or one caption that is not UTF-8, affects only that row.
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
        if info.type != pafs.FileType.File:
            raise SourceError(f"{location!r} is not a file")
        self.format = self._detect_format(self.path)
        # Resolve the columns now, so a wrong name fails before any job starts.
        names = self._columns()
        self.image_col = self._pick(names, image_column, IMAGE_COLUMNS, "image")
        self.caption_col = self._pick(names, caption_column, CAPTION_COLUMNS, "caption")

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

    def _rows(self) -> Iterator[tuple[dict | None, str | None]]:
        """Yield (row dict, None) or (None, error detail) for each row, in file order."""
        if self.format == "parquet":
            with self.fs.open_input_file(self.path) as f:
                for batch in pq.ParquetFile(f).iter_batches(batch_size=65536):
                    for row in batch.to_pylist():
                        yield row, None
            return
        with self.fs.open_input_stream(self.path) as f:
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

    def _columns(self) -> list[str]:
        """Column names: the Parquet schema, the CSV header, or the keys of the first JSONL object."""
        if self.format == "parquet":
            with self.fs.open_input_file(self.path) as f:
                return pq.ParquetFile(f).schema_arrow.names
        for row, _ in self._rows():
            if row is not None:
                return list(row)
        return []

    def list_records(self) -> pa.Table:
        base_dir = self.path.rsplit("/", 1)[0]
        rows = []
        for index, (row, problem) in enumerate(self._rows()):
            ref = f"row:{index}"
            if row is None:
                rows.append({"ref": ref, "error": "malformed_row", "detail": problem})
                continue
            image = row.get(self.image_col)
            if not isinstance(image, str) or not image.strip():
                rows.append(
                    {"ref": ref, "error": "malformed_row", "detail": f"no value in column {self.image_col!r}"}
                )
                continue
            caption = row.get(self.caption_col)
            if isinstance(caption, str):
                caption = text_to_bytes(caption)
            elif caption is not None and not isinstance(caption, bytes):
                caption = str(caption).encode()
            rows.append({"ref": ref, "uri": self._resolve(image.strip(), base_dir), "caption": caption})
        return plan_table(rows)

    def _resolve(self, image: str, base_dir: str) -> str:
        if "://" in image or os.path.isabs(image):
            return image
        return f"{base_dir}/{image}"

    def read_records(self, rows: pa.Table) -> Iterator[RawRecord]:
        for row in rows.to_pylist():
            uri = row["uri"]
            record = RawRecord(
                ref=row["ref"], uri=uri, name=os.path.basename(uri or ""), caption_bytes=row["caption"]
            )
            if row["error"]:
                record.error, record.detail = row["error"], row["detail"]
            elif uri.startswith(("http://", "https://")):
                record.error = "missing_file"
                record.detail = "remote http(s) images are not fetched; download them first (img2dataset)"
            else:
                try:
                    fs, path = (self.fs, uri) if "://" not in uri else open_filesystem(uri)
                    data, err = read_file(fs, path, self.max_file_bytes)
                except SourceError as e:
                    data, err = None, f"missing_file:{e}"
                record.image_bytes = data
                record.error, record.detail = split_error(err)
            yield record
