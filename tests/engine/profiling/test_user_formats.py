"""Inputs users hold, made by the libraries that make them: img2dataset's three output layouts (run
offline over ``file://`` URLs, some missing), webdataset's ``TarWriter``, Hugging Face ``datasets``
Parquet with an ``Image`` feature; and the one-line error of a source with no pairs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.profiling.plan import plan_source
from engine.profiling.records import SourceError
from engine.profiling.source import load_source
from engine.profiling.table_source import read_embedded
from engine.workspace import Workspace
from tests.data import jpeg_bytes, noise_image, png_bytes, run_shards_here

# img2dataset's input: six URLs, two of them missing (one per shard of three), with a license column
# kept through --save_additional_columns.
URLS = [
    (0, "a red fox"),
    (1, "two boats"),
    (None, "gone one"),
    (2, "a green hill"),
    (3, "rain"),
    (None, "gone two"),
]

IMG2DATASET_RUN = """
import sys
from img2dataset import download

if __name__ == "__main__":
    download(url_list=sys.argv[1], input_format="parquet", url_col="url", caption_col="caption",
             save_additional_columns=["license"], output_format=sys.argv[2], output_folder=sys.argv[3],
             processes_count=1, thread_count=2, resize_mode="no", number_sample_per_shard=3,
             distributor="multiprocessing", enable_wandb=False, timeout=2, retries=0)
"""


def curate_here(location: str, root, **options) -> list[dict]:
    """Plan and run every shard in this process (the curate job's runner, without Ray); samples rows."""
    ws = Workspace(str(root)).create()
    source = load_source(location, **options)
    run_shards_here(ws, source, plan_source(ws, source, shard_size=4))
    return ws.read_table("samples").to_pylist()


def by_status(rows: list[dict], status: str) -> list[dict]:
    return [r for r in rows if r["status"] == status]


@pytest.fixture(scope="module")
def img2dataset_outputs(tmp_path_factory) -> dict[str, str]:
    """img2dataset run once per output format, the three in parallel; format -> output folder."""
    pytest.importorskip("img2dataset", reason="scripts/setup.sh installs img2dataset (--no-deps)")
    root = tmp_path_factory.mktemp("img2dataset")
    (root / "images").mkdir()
    urls, captions, licenses = [], [], []
    for n, (seed, caption) in enumerate(URLS):
        path = root / "images" / f"{n}.jpg"
        if seed is not None:
            path.write_bytes(jpeg_bytes(noise_image(seed)))
        urls.append(path.as_uri())
        captions.append(caption)
        licenses.append(f"cc-{n}")
    pq.write_table(pa.table({"url": urls, "caption": captions, "license": licenses}), root / "urls.parquet")
    (root / "run.py").write_text(IMG2DATASET_RUN)
    env = os.environ | {"NO_ALBUMENTATIONS_UPDATE": "1", "WANDB_MODE": "disabled", "WANDB_SILENT": "true"}
    runs = {
        fmt: subprocess.Popen(
            [sys.executable, "run.py", "urls.parquet", fmt, f"out_{fmt}"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for fmt in ("files", "webdataset", "parquet")
    }
    for fmt, run in runs.items():
        output = run.communicate(timeout=300)[0].decode(errors="replace")
        assert run.returncode == 0, f"img2dataset --output_format {fmt}:\n{output[-3000:]}"
    return {fmt: str(root / f"out_{fmt}") for fmt in runs}


@pytest.mark.parametrize(
    ("fmt", "kind"), [("files", "folder"), ("webdataset", "webdataset"), ("parquet", "table")]
)
def test_img2dataset_output_is_read_with_its_metadata_and_failures(img2dataset_outputs, tmp_path, fmt, kind):
    folder = img2dataset_outputs[fmt]
    assert sorted(f for f in os.listdir(folder) if f.endswith("_stats.json")) == [
        "00000_stats.json",
        "00001_stats.json",
    ]
    assert load_source(folder).kind == kind
    rows = curate_here(folder, tmp_path)
    ok, rejected = by_status(rows, "ok"), by_status(rows, "rejected")
    assert (len(ok), len(rejected)) == (4, 2)
    assert sorted(r["caption"] for r in ok) == sorted(c for s, c in URLS if s is not None)
    for row in ok:
        meta = json.loads(row["meta"])
        n = int(meta["url"].rsplit("/", 1)[1].split(".")[0])  # .../images/<n>.jpg
        assert row["caption"] == URLS[n][1] and meta["license"] == f"cc-{n}"  # --save_additional_columns
        assert (meta["status"], meta["width"], meta["height"]) == ("success", 48, 32)
        assert meta["key"] and "caption" not in meta
    for row in rejected:  # the failed downloads: kept, with img2dataset's reason
        assert row["reject_reason"] == "download_failed"
        assert (
            row["reject_detail"].startswith("failed_to_download: ") and "No such file" in row["reject_detail"]
        )
        assert row["caption"] in ("gone one", "gone two")
        assert json.loads(row["meta"])["status"] == "failed_to_download"
    if fmt == "parquet":  # an embedded image's uri reads back (thumbnails, training batches)
        assert read_embedded(ok[0]["uri"]).startswith(b"\xff\xd8")


def test_img2dataset_webdataset_through_run_curate(img2dataset_outputs, tmp_path):
    """The layout that used to curate to 0 samples, through the real curate job (Ray, global steps)."""
    from pipelines.curate import run_curate

    ws = Workspace(str(tmp_path / "ws"))
    source = load_source(img2dataset_outputs["webdataset"])
    summary = run_curate(source, ws, num_cpus=2, progress=False, image_stages=[], tag=False)
    assert (summary.samples, summary.ok, summary.rejected) == (6, 4, 2)
    assert summary.reject_reasons == {"download_failed": 2}
    assert summary.source == img2dataset_outputs["webdataset"]


def test_webdataset_tarwriter_shards(tmp_path):
    wds = pytest.importorskip("webdataset")
    folder = tmp_path / "shards"
    folder.mkdir()
    for shard in range(2):
        with wds.TarWriter(str(folder / f"shard-{shard:05d}.tar")) as sink:
            for i in range(3):
                n = shard * 3 + i
                sample = {"__key__": f"s{n:04d}", "jpg": jpeg_bytes(noise_image(10 + n))}
                if n % 2:  # a caption in .txt and metadata in .json, or both in the .json
                    sample |= {"txt": f"photo {n}", "json": {"source": "cam", "n": n}}
                else:
                    sample["json"] = {"caption": f"photo {n}", "source": "cam", "n": n}
                sink.write(sample)
    with wds.TarWriter(str(folder / "shard-00002.tar")) as sink:  # no caption anywhere
        sink.write({"__key__": "nocap", "png": png_bytes(noise_image(20)), "cls": 3})
    assert load_source(str(folder)).kind == "webdataset"
    rows = curate_here(str(folder), tmp_path / "ws")
    ok = by_status(rows, "ok")
    assert sorted(r["caption"] for r in ok) == [f"photo {n}" for n in range(6)]
    assert all(json.loads(r["meta"]) == {"source": "cam", "n": int(r["caption"][6:])} for r in ok)
    assert [r["reject_reason"] for r in by_status(rows, "rejected")] == ["missing_caption"]


def test_hugging_face_datasets_parquet_with_an_image_feature(tmp_path):
    datasets = pytest.importorskip("datasets")
    on_disk = tmp_path / "kept.png"
    on_disk.write_bytes(png_bytes(noise_image(33)))
    features = datasets.Features(
        {"image": datasets.Image(), "text": datasets.Value("string"), "score": datasets.Value("float32")}
    )
    data = {
        "image": [noise_image(30), noise_image(31), noise_image(32), str(on_disk)],  # last: stored by path
        "text": ["a cat", "a dog", "", "a file"],
        "score": [0.5, 0.25, 1.0, 0.75],
    }
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_dict(data, features=features).to_parquet(str(path))
    assert pq.ParquetFile(path).schema_arrow.field("image").type.get_field_index("bytes") == 0
    rows = curate_here(str(path), tmp_path / "ws")
    assert [(r["status"], r["caption"], r["reject_reason"]) for r in rows] == [
        ("ok", "a cat", None),
        ("ok", "a dog", None),
        ("rejected", "", "empty_caption"),
        ("ok", "a file", None),
    ]
    assert [json.loads(r["meta"]) for r in rows] == [{"score": s} for s in data["score"]]
    assert rows[0]["uri"] == f"{path}#image:0" and rows[3]["uri"] == str(on_disk)


def test_parquet_with_a_binary_image_column_in_a_folder(tmp_path):
    folder = tmp_path / "tables"
    folder.mkdir()
    for part in range(2):
        images = [jpeg_bytes(noise_image(40 + part * 2 + i)) for i in range(2)]
        if part:
            images[1] = None  # a row without bytes
        table = pa.table(
            {
                "png": pa.array(images, pa.binary()),
                "prompt": [f"p{part}{i}" for i in range(2)],
                "id": [part] * 2,
            }
        )
        pq.write_table(table, folder / f"part-{part}.parquet", row_group_size=1)
    source = load_source(str(folder))
    assert (source.kind, source.image_col, source.image_kind) == ("table", "png", "bytes")
    rows = curate_here(str(folder), tmp_path / "ws")
    assert [(r["ref"], r["status"], r["reject_reason"]) for r in rows] == [
        ("part-0.parquet#row:0", "ok", None),
        ("part-0.parquet#row:1", "ok", None),
        ("part-1.parquet#row:0", "ok", None),
        ("part-1.parquet#row:1", "rejected", "missing_file"),
    ]
    assert all(r["warnings"] == ["extension_mismatch"] for r in by_status(rows, "ok"))  # JPEG in 'png'
    with pytest.raises(SourceError, match="column 'id' is int64"):
        load_source(str(folder), image_column="id")


def write_img2dataset_like(folder) -> None:
    """What --output_format webdataset writes when every download failed: three empty tars, with a
    .parquet (one failed row each) and a _stats.json beside each."""
    folder.mkdir()
    for shard in range(3):
        with tarfile.open(folder / f"{shard:05d}.tar", "w"):
            pass
        sidecar = {"key": [f"{shard}0"], "status": ["failed_to_download"], "error_message": ["timed out"]}
        pq.write_table(pa.table(sidecar), folder / f"{shard:05d}.parquet")
        (folder / f"{shard:05d}_stats.json").write_text("{}")


def test_a_source_without_pairs_says_what_it_found(tmp_path):
    folder = tmp_path / "out"
    write_img2dataset_like(folder)
    with pytest.raises(SourceError) as e:  # read as a folder of images: the sidecars are not its own
        load_source(str(folder), kind="folder").list_records()
    assert (
        str(e.value)
        == f"no pairs in {folder}: 3 .tar, 3 .parquet, 3 .json; pass --format webdataset or a file"
    )
    listing = load_source(str(folder)).list_records()  # as tars: the failed downloads are its records
    assert listing["error"].to_pylist() == ["download_failed"] * 3
    assert listing["detail"].to_pylist() == ["failed_to_download: timed out"] * 3
    with tarfile.open(tmp_path / "empty.tar", "w"):
        pass
    with pytest.raises(SourceError, match=r"empty\.tar holds no records"):
        load_source(str(tmp_path / "empty.tar")).list_records()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="it is empty; pass a folder of images, tars or a table"):
        load_source(str(tmp_path / "empty")).list_records()


def test_curate_of_a_folder_without_pairs_exits_2_with_one_line(tmp_path):
    folder = tmp_path / "out"
    write_img2dataset_like(folder)
    args = ["curate", str(folder), "--workspace", str(tmp_path / "ws"), "--stages", "profile"]
    result = CliRunner().invoke(app, [*args, "--format", "folder"], terminal_width=400)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"error: no pairs in {folder}: 3 .tar, 3 .parquet, 3 .json"
    )
    assert "Traceback" not in result.output
