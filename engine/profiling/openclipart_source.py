"""The demo source: openclipart from Debian (PNG images, SVG title and keywords as captions)."""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from engine.profiling.records import RawRecord, SourceError, plan_table, read_file, split_error, stable_key

OPENCLIPART_ROOT = "/usr/share/openclipart"  # Debian's openclipart-png and openclipart-svg


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
        return plan_table(rows)

    def read_records(self, rows: pa.Table) -> Iterator[RawRecord]:
        local = pafs.LocalFileSystem()
        for row in rows.to_pylist():
            record = RawRecord(ref=row["ref"], uri=row["uri"], name=os.path.basename(row["ref"]))
            data, err = read_file(local, row["uri"], self.max_file_bytes)
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
