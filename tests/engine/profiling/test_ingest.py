"""Ingest on real files: every bad-input case of the foundation issue, without Ray."""

from __future__ import annotations

import pytest

from engine import schema
from engine.profiling.folder_source import FolderSource
from engine.profiling.ingest import (
    IngestConfig,
    clean_caption,
    find_duplicate_rows,
    ingest_record,
    make_image_id,
    make_sample_id,
)
from engine.profiling.records import RawRecord
from tests.data import Case, noise_image, png_bytes


def ingest_folder(folder: str, config: IngestConfig | None = None) -> dict[str, dict]:
    """Rows keyed by file stem, as one shard task would make them (duplicates aside)."""
    source = FolderSource(folder, max_file_bytes=2**30)
    config = config or IngestConfig()
    rows = {}
    for record in source.read_records(source.list_records()):
        result = ingest_record(record, source.key, config)
        rows[record.ref.rsplit(".", 1)[0]] = {**result.row, "image": result.image}
    return rows


@pytest.fixture(scope="module")
def ingested(case_folder) -> dict[str, dict]:
    return ingest_folder(case_folder)


def test_every_case_gets_its_status_reason_and_warnings(ingested, cases: dict[str, Case]):
    assert set(ingested) == set(cases)
    for stem, case in cases.items():
        row = ingested[stem]
        expected_status = "ok" if case.reason == "duplicate_sample" else case.status  # marked later
        assert row["status"] == expected_status, (stem, row)
        if case.status == "rejected" and case.reason != "duplicate_sample":
            assert row["reject_reason"] == case.reason, (stem, row)
            assert row["reject_reason"] in schema.REJECT_REASONS
            assert row["image"] is None
        else:
            assert row["reject_reason"] is None
            assert case.warnings <= set(row["warnings"]), (stem, row["warnings"])
            assert row["image"].mode == "RGB"
        assert set(row["warnings"]) <= set(schema.WARNINGS), row["warnings"]


def test_clean_images_get_no_warnings(ingested):
    assert ingested["good"]["warnings"] == []
    assert ingested["good_json"]["caption"] == "from json"


def test_exif_rotation_is_applied(ingested):
    assert ingested["rotated"]["image"].size == (20, 40)  # stored 40x20 with orientation 6


def test_caption_repairs(ingested):
    assert ingested["latin1"]["caption"] == "caf\ufffd au lait"
    assert len(ingested["long_caption"]["caption"]) <= IngestConfig().max_caption_chars
    assert ingested["control_chars"]["caption"] == "bell and null chars"


def test_rejects_keep_what_is_known(ingested):
    assert ingested["truncated"]["image_id"] is not None  # the bytes were read
    assert ingested["truncated"]["caption"] == "cut short"
    assert ingested["missing_image"]["image_id"] is None
    assert ingested["empty_caption"]["caption"] == ""
    assert "truncated" in ingested["truncated"]["reject_detail"]


def test_ids_are_content_hashes(ingested, cases):
    image_id = make_image_id(cases["good"].image)
    assert ingested["good"]["image_id"] == image_id
    assert ingested["good"]["sample_id"] == make_sample_id(image_id, "a good photo")
    # same image with another caption: same image_id, different sample_id
    assert ingested["dup_a"]["image_id"] == ingested["same_image_other_caption"]["image_id"]
    assert ingested["dup_a"]["sample_id"] != ingested["same_image_other_caption"]["sample_id"]
    assert ingested["dup_a"]["sample_id"] == ingested["dup_b"]["sample_id"]
    ids = [row["sample_id"] for stem, row in ingested.items() if stem != "dup_b"]
    assert len(ids) == len(set(ids)), "sample_id must be unique, rejects included"


def test_limits_are_configurable(case_folder):
    rows = ingest_folder(case_folder, IngestConfig(max_pixels=48 * 32 - 1, max_caption_chars=5))
    assert rows["good"]["reject_reason"] == "decompression_bomb"
    assert rows["rotated"]["status"] == "ok"  # 20x40 = 800 px is under the limit
    assert rows["rotated"]["caption"] == "rotat"
    assert "caption_truncated" in rows["rotated"]["warnings"]


def test_file_size_limit_refuses_before_reading(case_folder):
    source = FolderSource(case_folder, max_file_bytes=100)
    rows = {r.ref: r for r in source.read_records(source.list_records())}
    record = rows["good.jpg"]
    assert record.image_bytes is None and record.error == "file_too_large"
    result = ingest_record(record, source.key, IngestConfig())
    assert result.row["reject_reason"] == "file_too_large"


def test_a_crashing_decoder_becomes_an_internal_error_reject(monkeypatch):
    import engine.profiling.ingest as ingest

    def explode(*args):
        raise RuntimeError("decoder crashed")

    monkeypatch.setattr(ingest, "decode_image", explode)
    record = RawRecord(ref="x.png", uri="/x.png", name="x.png", image_bytes=b"abc", caption_bytes=b"cap")
    result = ingest.ingest_record(record, "key", IngestConfig())
    assert result.row["reject_reason"] == "internal_error"
    assert "decoder crashed" in result.row["reject_detail"]


@pytest.mark.parametrize(
    ("raw", "expected", "warnings"),
    [
        (b"  a cat  ", "a cat", []),
        ("\ufeffa cat".encode(), "a cat", []),
        ("cafe\u0301".encode(), "caf\u00e9", []),  # NFC: the same text gives the same sample_id
        (b"\xff\xfe bad", "\ufffd\ufffd bad", ["caption_not_utf8"]),
    ],
)
def test_clean_caption(raw, expected, warnings):
    assert clean_caption(raw, 100) == (expected, warnings)


@pytest.mark.parametrize(
    ("raw", "reason"), [(None, "missing_caption"), (b"", "empty_caption"), (b"\x00\x01 \n", "empty_caption")]
)
def test_clean_caption_rejects(raw, reason):
    from engine.profiling.ingest import Reject

    with pytest.raises(Reject) as info:
        clean_caption(raw, 100)
    assert info.value.reason == reason


def test_find_duplicate_rows_keeps_the_earliest_row():
    import pyarrow as pa

    table = pa.table(
        {
            "sample_id": ["a", "b", "a", "a", "c"],
            "status": ["ok", "ok", "ok", "rejected", "ok"],
            "shard_id": ["s-1", "s-0", "s-0", "s-0", "s-1"],
            "row_index": [0, 0, 5, 1, 1],
            "ref": ["r1", "r2", "r3", "r4", "r5"],
        }
    )
    dups = find_duplicate_rows(table)
    assert dups.select(["ref", "kept"]).to_pylist() == [{"ref": "r1", "kept": "s-0:5"}]


def test_same_bytes_same_ids_whatever_the_name():
    data = png_bytes(noise_image(42))
    a = ingest_record(RawRecord("a.png", "/a.png", "a.png", data, b"cap"), "k1", IngestConfig())
    b = ingest_record(RawRecord("b.png", "/b.png", "b.png", data, b"cap"), "k2", IngestConfig())
    assert a.row["sample_id"] == b.row["sample_id"] and a.row["image_id"] == b.row["image_id"]
