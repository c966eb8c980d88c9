"""The source formats: folder, Parquet/CSV/JSONL table, WebDataset tars, openclipart."""

from __future__ import annotations

import csv
import io
import json
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from engine.profiling.folder_source import FolderSource
from engine.profiling.ingest import IngestConfig, ingest_record
from engine.profiling.openclipart_source import OpenclipartSource, openclipart_caption
from engine.profiling.records import SourceError
from engine.profiling.source import load_source
from engine.profiling.table_source import TableSource
from engine.profiling.webdataset_source import WebDatasetSource
from tests.data import jpeg_bytes, noise_image, png_bytes

CAPTIONS = ["a red square", "zwei Hunde im Schnee", "一只猫坐在窗台上", "a dog, a cat", 'quote "inside"']


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Five image files and their captions, written once; every format below points at them."""
    root = tmp_path_factory.mktemp("pairs")
    images = root / "images"
    images.mkdir()
    items = []
    for i, caption in enumerate(CAPTIONS):
        name = f"{i:03d}.jpg" if i % 2 else f"{i:03d}.png"
        data = jpeg_bytes(noise_image(i)) if i % 2 else png_bytes(noise_image(i))
        (images / name).write_bytes(data)
        items.append((name, data, caption))
    return root, items


def ingest_all(source) -> list[dict]:
    rows = []
    for record in source.read_records(source.list_records()):
        rows.append(ingest_record(record, source.key, IngestConfig()).row)
    return rows


def ok_pairs(rows) -> set[tuple[str, str]]:
    return {(r["sample_id"], r["caption"]) for r in rows if r["status"] == "ok"}


def expected_ids(items) -> set[tuple[str, str]]:
    from engine.profiling.ingest import make_image_id, make_sample_id

    return {(make_sample_id(make_image_id(data), caption), caption) for _, data, caption in items}


def test_folder_source(pairs, tmp_path):
    _, items = pairs
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, data, caption in items:
        (folder / name).write_bytes(data)
        (folder / (name.rsplit(".", 1)[0] + ".txt")).write_text(caption, encoding="utf-8")
    (folder / "metadata.json").write_text("{}")  # a lone .json is metadata, not a record
    assert ok_pairs(ingest_all(load_source(str(folder)))) == expected_ids(items)


@pytest.mark.parametrize("fmt", ["parquet", "csv", "tsv", "jsonl"])
def test_table_sources_give_the_same_samples(pairs, fmt):
    root, items = pairs
    rows = [
        {"image": f"images/{name}", "caption": caption, "extra": i}
        for i, (name, _, caption) in enumerate(items)
    ]
    path = root / f"pairs.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    elif fmt in ("csv", "tsv"):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, ["image", "caption", "extra"], delimiter="," if fmt == "csv" else "\t")
            writer.writeheader()
            writer.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    source = load_source(str(path))
    assert isinstance(source, TableSource)
    assert ok_pairs(ingest_all(source)) == expected_ids(items)


def test_webdataset_source_gives_the_same_samples(pairs, tmp_path):
    _, items = pairs
    tar_dir = tmp_path / "wds"
    tar_dir.mkdir()
    for shard in range(2):  # two tars, members split between them
        with tarfile.open(tar_dir / f"shard-{shard:05d}.tar", "w") as tar:
            for i, (name, data, caption) in enumerate(items):
                if i % 2 != shard:
                    continue
                key, ext = f"sample{i:04d}", name.rsplit(".", 1)[1]
                sidecar = caption.encode() if i % 3 else json.dumps({"caption": caption}).encode()
                for member, payload in (
                    (f"{key}.{ext}", data),
                    (f"{key}.{'txt' if i % 3 else 'json'}", sidecar),
                ):
                    info = tarfile.TarInfo(member)
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    source = load_source(str(tar_dir))
    assert isinstance(source, WebDatasetSource)
    rows = ingest_all(source)
    assert ok_pairs(rows) == expected_ids(items)
    assert all("#" in r["uri"] for r in rows)


def test_webdataset_bad_members(tmp_path):
    path = tmp_path / "bad.tar"
    with tarfile.open(path, "w") as tar:
        for member, payload in (
            ("a.txt", b"caption only"),
            ("b.png", b"not a png"),
            ("b.txt", b"cap"),
            ("c.png", png_bytes(noise_image(1))),
            ("d.jpg", jpeg_bytes(noise_image(2))),
            ("d.json", b"[1, 2]"),
        ):
            info = tarfile.TarInfo(member)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    rows = {r["ref"]: r for r in ingest_all(load_source(str(path)))}
    assert rows["bad.tar#a"]["reject_reason"] == "missing_file"
    assert rows["bad.tar#b.png"]["reject_reason"] == "not_an_image"
    assert rows["bad.tar#c.png"]["reject_reason"] == "missing_caption"
    assert rows["bad.tar#d.jpg"]["reject_reason"] == "malformed_caption_file"


def test_table_bad_rows(pairs):
    root, items = pairs
    path = root / "bad.csv"
    good_name = items[0][0]
    path.write_bytes(
        b"image,caption\n"
        + f"images/{good_name},fine\n".encode()
        + b"images/missing.png,no such file\n"
        + b",no image path\n"
        + b"images/"
        + good_name.encode()
        + b",extra,field\n"
        + b"images/"
        + good_name.encode()
        + b",caf\xe9 latin-1\n"
        + f"images/{good_name},\n".encode()
        + f"{root}/images/{good_name},absolute path\n".encode()
        + b"http://example.com/x.jpg,remote\n"
        + b"images/bad\x00name.png,a NUL byte in the path\n"
        + b"images,a folder and not a file\n"
    )
    rows = ingest_all(load_source(str(path)))
    outcome = [(r["status"], r["reject_reason"], r["warnings"]) for r in rows]
    assert outcome == [
        ("ok", None, []),
        ("rejected", "missing_file", []),
        ("rejected", "malformed_row", []),
        ("rejected", "malformed_row", []),
        ("ok", None, ["caption_not_utf8"]),
        ("rejected", "empty_caption", []),
        ("ok", None, []),
        ("rejected", "missing_file", []),
        ("rejected", "missing_file", []),
        ("rejected", "missing_file", []),
    ]
    assert "not fetched" in rows[7]["reject_detail"]
    assert "not a regular file" in rows[9]["reject_detail"]


def test_jsonl_bad_lines(pairs):
    root, items = pairs
    path = root / "bad.jsonl"
    path.write_text(
        json.dumps({"image": f"images/{items[0][0]}", "caption": "ok"})
        + "\n"
        + "{not json\n"
        + "[1, 2]\n"
        + json.dumps({"image": f"images/{items[1][0]}"})
        + "\n\n",
        encoding="utf-8",
    )
    rows = ingest_all(load_source(str(path)))
    assert [r["reject_reason"] for r in rows] == [None, "malformed_row", "malformed_row", "missing_caption"]


def test_configurable_columns(pairs):
    root, items = pairs
    path = root / "named.parquet"
    pq.write_table(pa.table({"img": [f"images/{items[0][0]}"], "alt_text": ["named columns"]}), path)
    with pytest.raises(SourceError, match="image column"):
        load_source(str(path))
    source = load_source(str(path), image_column="img", caption_column="alt_text")
    assert [r["caption"] for r in ingest_all(source)] == ["named columns"]
    with pytest.raises(SourceError, match="no column 'nope'"):
        load_source(str(path), image_column="nope", caption_column="alt_text")


def test_source_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        load_source(str(tmp_path / "nothing"))
    (tmp_path / "table.xlsx").write_bytes(b"x")
    with pytest.raises(SourceError, match="must end in"):
        load_source(str(tmp_path / "table.xlsx"))
    with pytest.raises(SourceError, match="unknown source kind"):
        load_source(str(tmp_path), kind="zip")


def test_openclipart_caption_from_svg_metadata():
    svg = b"""<svg xmlns="http://www.w3.org/2000/svg" xmlns:cc="http://web.resource.org/cc/"
      xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
      <metadata><rdf:RDF><cc:Work rdf:about="">
        <dc:title>scale</dc:title>
        <dc:subject><rdf:Bag><rdf:li></rdf:li><rdf:li>tool</rdf:li><rdf:li>mass</rdf:li>
          <rdf:li>scale</rdf:li></rdf:Bag></dc:subject>
        <dc:creator><cc:Agent><dc:title>Someone</dc:title></cc:Agent></dc:creator>
      </cc:Work><cc:License><dc:title>public domain</dc:title></cc:License></rdf:RDF></metadata></svg>"""
    assert openclipart_caption(svg) == "scale: tool, mass"


def test_openclipart_demo_source_is_real_and_ordered():
    # scripts/setup.sh installs Debian's openclipart; without it this fails with the install hint.
    source = OpenclipartSource()
    listing = source.list_records()
    assert listing.num_rows > 8000
    assert listing["ref"].to_pylist() == source.list_records()["ref"].to_pylist()  # stable order
    rows = ingest_all_slice(source, listing.slice(0, 20))
    assert sum(r["status"] == "ok" for r in rows) >= 18
    assert all(r["caption"] for r in rows if r["status"] == "ok")


def ingest_all_slice(source, rows_table):
    return [ingest_record(r, source.key, IngestConfig()).row for r in source.read_records(rows_table)]


def test_folder_source_lone_caption_is_missing_file(tmp_path):
    (tmp_path / "a.txt").write_text("caption without image")
    rows = ingest_all(FolderSource(str(tmp_path), 2**30))
    assert [(r["ref"], r["reject_reason"]) for r in rows] == [("a.txt", "missing_file")]


def test_a_folder_of_tars_with_sidecars_is_webdataset_and_of_parquet_a_table(tmp_path):
    from engine.profiling.source import detect_kind

    (tmp_path / "wds").mkdir()
    for name in ("00000.tar", "00000.parquet", "00000_stats.json"):  # img2dataset's webdataset layout
        (tmp_path / "wds" / name).write_bytes(b"")
    (tmp_path / "pq").mkdir()
    for name in ("00000.parquet", "00000_stats.json"):  # its parquet layout
        (tmp_path / "pq" / name).write_bytes(b"")
    (tmp_path / "files" / "00000").mkdir(parents=True)  # its files layout: a sub-folder per shard
    (tmp_path / "files" / "00000.parquet").write_bytes(b"")
    kinds = {name: detect_kind(str(tmp_path / name)) for name in ("wds", "pq", "files")}
    assert kinds == {"wds": "webdataset", "pq": "table", "files": "folder"}


def test_table_columns_are_kept_as_meta_and_old_plans_still_read(pairs):
    root, items = pairs
    path = root / "meta.csv"
    path.write_text(f"image,caption,license\nimages/{items[0][0]},a caption,cc-by\n", encoding="utf-8")
    source = load_source(str(path))
    listing = source.list_records()
    assert listing["meta"].to_pylist() == ['{"license": "cc-by"}']
    old_plan = listing.drop_columns(["meta"])  # a plan saved before samples had meta
    (record,) = source.read_records(old_plan)
    assert record.meta is None and record.image_bytes == items[0][1]
