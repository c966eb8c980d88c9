"""Where image-text pairs come from: a folder, a table, WebDataset tars, or the openclipart demo.

A source does two things:

* ``list_records()`` lists its records in a fixed order as a small Arrow table (the *plan rows*:
  ``ref``, ``uri``, ``caption_ref``, ``caption``, ``error``). Only names and table captions are
  read here, never images, so this stays cheap at millions of records.
* ``read_records(rows)`` reads the bytes of a slice of those rows (one shard) and yields
  ``RawRecord`` objects for ``engine.ingest`` to judge.

Every problem found while reading (a missing file, an unparsable sidecar, a malformed row) is put
on the record as ``error`` instead of raised, so the record becomes a rejected sample.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tarfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

# Extensions read as images. A file with one of these that is not an image is rejected as
# not_an_image; a PNG named .jpg is accepted with an extension_mismatch warning.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".ppm", ".pgm"}
)
CAPTION_EXTENSIONS = (".txt", ".json")  # in order of preference when both exist (img2dataset)

# Default column names tried, in order, when a table source does not name its columns.
IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename", "uri", "url")
CAPTION_COLUMNS = ("caption", "text", "prompt", "title")

OPENCLIPART_ROOT = "/usr/share/openclipart"  # Debian's openclipart-png and openclipart-svg

PLAN_ROW = pa.schema(
    [
        ("ref", pa.string()),  # unique inside the source: relative path, row number, tar#key
        ("uri", pa.string()),  # where the image is read from (null when there is none)
        ("caption_ref", pa.string()),  # sidecar path / tar member holding the caption, if any
        ("caption", pa.binary()),  # caption bytes given by a table row (null: not given)
        ("error", pa.string()),  # a reject reason found while listing (e.g. malformed_row)
        ("detail", pa.string()),
    ]
)


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


class SourceError(ValueError):
    """The source as a whole cannot be read (wrong path, unknown format, missing column)."""


# --- helpers ------------------------------------------------------------------------------------


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


def caption_from_json(data: bytes) -> tuple[bytes | None, str | None]:
    """The ``caption`` field of a JSON sidecar: (caption bytes or None, error or None)."""
    try:
        obj = json.loads(data.decode("utf-8", "surrogateescape"))
    except (json.JSONDecodeError, RecursionError) as e:
        return None, f"malformed_caption_file:{e}"
    if not isinstance(obj, dict):
        return None, "malformed_caption_file:not a JSON object"
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


def _plan_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=PLAN_ROW)


def _read_file(fs: pafs.FileSystem, path: str, max_bytes: int) -> tuple[bytes | None, str | None]:
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
    """Put a sidecar's caption on a record (a .json sidecar's ``caption`` field); keep the first error."""
    if caption_ref is None:
        return
    if data is not None and caption_ref.endswith(".json"):
        data, error = caption_from_json(data)
    record.caption_bytes = data
    if error and not record.error:
        record.error, record.detail = split_error(error)


# --- folder -------------------------------------------------------------------------------------


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
        return _plan_table(rows)

    def read_records(self, rows: pa.Table) -> Iterator[RawRecord]:
        for row in rows.to_pylist():
            record = RawRecord(ref=row["ref"], uri=row["uri"], name=os.path.basename(row["ref"]))
            if row["error"]:
                record.error, record.detail = row["error"], row["detail"]
                yield record
                continue
            data, err = _read_file(self.fs, f"{self.base}/{row['ref']}", self.max_file_bytes)
            record.image_bytes = data
            record.error, record.detail = split_error(err)
            if row["caption_ref"]:
                caption = _read_file(self.fs, f"{self.base}/{row['caption_ref']}", self.max_file_bytes)
                attach_caption(record, row["caption_ref"], *caption)
            yield record


# --- table --------------------------------------------------------------------------------------


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
        return _plan_table(rows)

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
                    data, err = _read_file(fs, path, self.max_file_bytes)
                except SourceError as e:
                    data, err = None, f"missing_file:{e}"
                record.image_bytes = data
                record.error, record.detail = split_error(err)
            yield record


# --- WebDataset ---------------------------------------------------------------------------------


def _wds_split(member: str) -> tuple[str, str]:
    """WebDataset's key convention: 'dir/000123.jpg' -> ('dir/000123', '.jpg')."""
    directory, _, base = member.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{directory}/{stem}" if directory else stem
    return key, (dot + ext).lower()


class WebDatasetSource:
    """WebDataset ``.tar`` shards (``key.jpg`` + ``key.txt`` or ``key.json``): one tar or a folder of them."""

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
            raise SourceError(f"{location!r} holds no .tar files")

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
            groups: dict[str, dict[str, str]] = {}
            for name in members:
                key, ext = _wds_split(name)
                groups.setdefault(key, {})[ext] = name
            for key, image, caption in pair_files(groups, orphan_captions=CAPTION_EXTENSIONS):
                if image is None:
                    rows.append(
                        {
                            "ref": f"{tar_name}#{key}",
                            "uri": None,
                            "caption_ref": caption,
                            "error": "missing_file",
                            "detail": f"no image member for key {key!r}",
                        }
                    )
                else:
                    rows.append(
                        {"ref": f"{tar_name}#{image}", "uri": f"{tar_path}#{image}", "caption_ref": caption}
                    )
        return _plan_table(rows)

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
        if row["error"]:
            record.error, record.detail = row["error"], row["detail"]
        elif open_error:
            record.error, record.detail = "missing_file", f"tar unreadable: {open_error}"
        else:
            record.image_bytes, err = self._member(tar, index, member)
            record.error, record.detail = split_error(err)
            if row["caption_ref"]:
                attach_caption(record, row["caption_ref"], *self._member(tar, index, row["caption_ref"]))
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


# --- openclipart (the demo) ---------------------------------------------------------------------


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def openclipart_caption(svg: bytes) -> str:
    """Title and keywords of an openclipart SVG as one caption: 'title: kw1, kw2'.

    Both live in the RDF metadata of the work (``cc:Work/dc:title``, ``dc:subject//rdf:li``);
    other ``dc:title`` elements there name the licence and the author, so they are skipped.
    Elements are matched by local name: the files use the old ``web.resource.org/cc/`` namespace
    and newer ones ``creativecommons.org/ns#``.
    """
    root = ET.fromstring(svg)
    work = next((e for e in root.iter() if _local(e.tag) == "Work"), None)
    if work is None:
        return ""
    title = next(((c.text or "").strip() for c in work if _local(c.tag) == "title"), "")
    keywords: list[str] = []
    for subject in (c for c in work if _local(c.tag) == "subject"):
        for li in (e for e in subject.iter() if _local(e.tag) == "li"):
            word = (li.text or "").strip()
            if word and word.lower() != title.lower() and word not in keywords:
                keywords.append(word)
    if title and keywords:
        return f"{title}: {', '.join(keywords)}"
    return title or ", ".join(keywords)


class OpenclipartSource:
    """The demo: openclipart from Debian (PNG as image, SVG title + keywords as caption).

    Records are ordered by a hash of their path, so ``--limit N`` takes a spread of categories
    rather than the first folder alphabetically, and the same N always gives the same subset.
    """

    kind = "openclipart"

    def __init__(self, location: str = OPENCLIPART_ROOT, max_file_bytes: int = 2**31):
        self.location = location
        self.root = os.path.abspath(location)
        self.max_file_bytes = max_file_bytes
        if not os.path.isdir(os.path.join(self.root, "png")):
            raise SourceError(
                f"openclipart not found at {self.root}: install the Debian packages "
                "openclipart-png and openclipart-svg (make setup does)"
            )

    @property
    def key(self) -> str:
        return stable_key(self.kind, self.root)

    def list_records(self) -> pa.Table:
        png_root = os.path.join(self.root, "png")
        refs = []
        for directory, _, files in os.walk(png_root):
            for name in files:
                if name.lower().endswith(".png"):
                    refs.append(os.path.relpath(os.path.join(directory, name), png_root))
        refs.sort(key=lambda r: (hashlib.blake2b(r.encode(), digest_size=8).digest(), r))
        rows = [
            {
                "ref": r,
                "uri": os.path.join(png_root, r),
                "caption_ref": os.path.join(self.root, "svg", r[:-4] + ".svg"),
            }
            for r in refs
        ]
        return _plan_table(rows)

    def read_records(self, rows: pa.Table) -> Iterator[RawRecord]:
        local = pafs.LocalFileSystem()
        for row in rows.to_pylist():
            record = RawRecord(ref=row["ref"], uri=row["uri"], name=os.path.basename(row["ref"]))
            data, err = _read_file(local, row["uri"], self.max_file_bytes)
            record.image_bytes = data
            record.error, record.detail = split_error(err)
            if os.path.exists(row["caption_ref"]):
                try:
                    with open(row["caption_ref"], "rb") as f:
                        record.caption_bytes = openclipart_caption(f.read()).encode()
                except ET.ParseError as e:
                    if not record.error:
                        record.error, record.detail = "malformed_caption_file", f"SVG metadata: {e}"
            yield record


# --- choosing a source --------------------------------------------------------------------------

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
