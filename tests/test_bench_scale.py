"""bench/bench_scale.py: the derived dataset, the extrapolation arithmetic, the scale tables of
docs/benchmarks.md against bench/results-scale.json, and (slow) a small end-to-end run that resumes."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile

import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "bench", "bench_scale.py")
RESULTS = os.path.join(REPO, "bench", "results-scale.json")
DOCS_PAGE = os.path.join(REPO, "docs", "benchmarks.md")  # its "Scale" section holds the tables

_spec = importlib.util.spec_from_file_location("bench_scale", SCRIPT)
bench_scale = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_scale)


def _base(tmp_path, name: str, size: tuple[int, int], title: str) -> dict:
    """A base image (RGBA, transparent left half) and its SVG, as base_images() describes them."""
    image = Image.new("RGBA", size, (200, 40, 40, 255))
    image.paste((0, 0, 0, 0), (0, 0, size[0] // 2, size[1]))
    png = tmp_path / f"{name}.png"
    image.save(png)
    svg = tmp_path / f"{name}.svg"
    svg.write_text(  # the RDF metadata openclipart_caption reads: cc:Work/dc:title
        '<svg xmlns="http://www.w3.org/2000/svg" xmlns:dc="http://purl.org/dc/elements/1.1/" '
        'xmlns:cc="http://creativecommons.org/ns#" xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f"<metadata><rdf:RDF><cc:Work><dc:title>{title}</dc:title></cc:Work></rdf:RDF></metadata></svg>"
    )
    return {"uri": str(png), "caption_ref": str(svg), "ref": name, "pixels": size[0] * size[1]}


def test_plan_pairs_spreads_variants_round_robin_and_big_bases_once():
    big = bench_scale.BIG_PIXELS + 1
    bases = [{"pixels": 100}, {"pixels": big}, {"pixels": 100}, {"pixels": 100}]
    pairs = bench_scale.plan_pairs(bases, 10)
    assert len(pairs) == len(set(pairs)) == 10
    assert pairs == sorted(pairs)
    per_base = {b: sum(1 for p in pairs if p[0] == b) for b in range(4)}
    assert per_base == {0: 3, 1: 1, 2: 3, 3: 3}  # the big base once; the cut falls on variant 2
    assert (1, 0) in pairs
    with pytest.raises(SystemExit, match="cannot derive"):
        bench_scale.plan_pairs([{"pixels": big}] * 3, 4)


def test_derive_is_deterministic_and_varies(tmp_path):
    base = _base(tmp_path, "b", (400, 300), "red box")
    with Image.open(base["uri"]) as image:
        image.load()
        first = [bench_scale.derive(image, "key", v) for v in range(4)]
        again = [bench_scale.derive(image, "key", v) for v in range(4)]
        other_key = bench_scale.derive(image, "other", 1)
    assert first == again
    assert len(set(first)) == 4 and other_key != first[1]
    original = Image.open(io.BytesIO(first[0]))
    assert original.format == "JPEG" and original.size == (400, 300)
    # Variant 0 is the original on white: the transparent half comes out white.
    assert all(c > 245 for c in original.convert("RGB").getpixel((10, 150)))
    for data in first[1:]:
        variant = Image.open(io.BytesIO(data))
        assert variant.format == "JPEG" and max(variant.size) <= 400
        assert variant.width * variant.height >= 0.75 * 400 * 300 * 0.98  # crops keep >= 75 % area


def test_write_tar_pairs_images_with_captions_and_is_reproducible(tmp_path):
    small = _base(tmp_path, "small", (120, 90), "Red box")
    big = _base(tmp_path, "big", (64, 64), "Huge poster")
    big["pixels"] = bench_scale.BIG_PIXELS + 1  # treated as big: goes in as the original PNG
    bases = [small, big]
    pairs = [(0, 0), (0, 1), (0, 2), (1, 0)]
    paths = [str(tmp_path / "a.tar"), str(tmp_path / "b.tar")]
    for path in paths:
        assert bench_scale.write_tar((path, bases, pairs)) == 4
    with open(paths[0], "rb") as a, open(paths[1], "rb") as b:
        assert a.read() == b.read()
    assert not os.path.exists(paths[0] + ".part")
    with tarfile.open(paths[0]) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        assert {m.mtime for m in tar.getmembers()} == {0}
    assert sorted(members) == sorted(
        [f"0000{b}_{v}.{ext}" for b, v in pairs for ext in ("jpg" if b == 0 else "png", "txt")]
    )
    assert members["00000_1.txt"].decode() == members["00000_0.txt"].decode()
    assert "red box" in members["00000_0.txt"].decode().lower()
    assert "huge poster" in members["00001_0.txt"].decode().lower()
    with open(big["uri"], "rb") as f:
        assert members["00001_0.png"] == f.read()


def _read_json(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _results(steps: dict[str, tuple[float, int]]) -> dict:
    return {"steps": [{"step": s, "cpu_s": cpu, "rows": rows} for s, (cpu, rows) in steps.items()]}


def test_per_pair_costs_take_measured_shard_steps_and_referenced_global_steps():
    costs = bench_scale.per_pair_costs(
        _results({"ingest": (10.0, 1000), "embed": (70.0, 1000), "tag": (5.0, 1000)})
    )
    assert costs["ingest"] == {
        "mode": "cluster",
        "cpu_ms": 10.0,
        "source": "this run: 10.0 CPU s / 1,000 pairs",
    }
    assert costs["embed"]["cpu_ms"] == 70.0
    # A global step takes its slope from its 1M-10M benchmark; this run's figure is shown beside it.
    assert costs["tag"]["cpu_ms"] == bench_scale.REFERENCE["tag"][0]
    assert "(this run, 50k incl. fixed costs: 5 ms)" in costs["tag"]["source"]
    # A shard step this run missed falls back to its reference, or is left out and says so.
    assert costs["ocr"]["cpu_ms"] == bench_scale.REFERENCE["ocr"][0]
    assert costs["safety"] == {"mode": "cluster", "cpu_ms": None, "source": "not measured"}


def test_extrapolate_is_the_stated_formula():
    results = _results({s: (1.0, 1000) for s in ("ingest", "embed", "ocr", "safety")})  # 1 ms a pair each
    rows = bench_scale.extrapolate(results, [1_000_000_000], [1, 4])
    ref = bench_scale.REFERENCE
    node_ms = ref["index"][0] + ref["dedup"][0]
    core_ms = ref["tag"][0] + ref["manifest"][0]
    vcpus = bench_scale.NODE_VCPUS
    for row, nodes in zip(rows, [1, 4], strict=True):
        cluster_h = 1e9 * 4 * 1.0 / 1000 / (nodes * vcpus) / 3600
        one_node_h = 1e9 * node_ms / 1000 / vcpus / 3600 + 1e9 * core_ms / 1000 / 3600
        assert row["nodes"] == nodes and row["pairs"] == 1_000_000_000
        assert row["cluster_h"] == round(cluster_h, 1)
        assert row["one_node_h"] == round(one_node_h, 1)
        assert row["hours"] == round(cluster_h + one_node_h, 1)
        expected_usd = nodes * vcpus * (cluster_h + one_node_h) * bench_scale.VCPU_HOUR_USD
        assert row["usd"] == round(expected_usd)
    # Four times the nodes: the per-shard hours shrink four times, the one-node hours do not.
    assert rows[1]["cluster_h"] == pytest.approx(rows[0]["cluster_h"] / 4, abs=0.1)
    assert rows[1]["one_node_h"] == rows[0]["one_node_h"]


def test_docs_tables_are_the_results_file():
    """The scale tables of docs/benchmarks.md are what `--extrapolate` prints from
    bench/results-scale.json, and printing them leaves the file alone."""
    with open(RESULTS, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    out = subprocess.run(
        [sys.executable, SCRIPT, "--json", RESULTS, "--extrapolate"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    with open(RESULTS, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == before
    with open(DOCS_PAGE, encoding="utf-8") as f:
        page = f.read()
    table_lines = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table_lines) >= 8 + 2 + 8 + 2 + 8 + 2
    missing = [line for line in table_lines if line not in page]
    assert not missing, f"the scale tables of {DOCS_PAGE} differ from {RESULTS}: {missing[:3]}"
    results = _read_json(RESULTS)
    steps = {s["step"] for s in results["steps"]}
    assert steps == set(bench_scale.STEPS)  # every step measured at scale
    assert min(s["rows"] for s in results["steps"]) >= 49_000 and results["n"] >= 50_000


@pytest.mark.slow
def test_small_run_measures_every_step_and_resumes(tmp_path):
    """The whole benchmark on 40 derived pairs: every step measured with its counts; the same
    command again runs nothing and keeps every figure."""
    root, results_path = str(tmp_path / "scale"), str(tmp_path / "scale.json")
    cmd = [sys.executable, SCRIPT, "--n", "40", "--root", root, "--json", results_path]
    subprocess.run(cmd, check=True, timeout=900, capture_output=True, cwd=REPO)
    results = _read_json(results_path)
    assert results["generate"]["pairs"] == 40 and results["generate"]["written_now"] == 40
    steps = {s["step"]: s for s in results["steps"]}
    assert list(steps) == list(bench_scale.STEPS)
    ok = steps["ingest"]["counts"]["ok"]
    assert steps["ingest"]["rows"] == 40 and ok + steps["ingest"]["counts"]["rejected"] == 40
    for name in ("embed", "ocr", "safety", "index", "dedup", "tag", "manifest"):
        assert steps[name]["rows"] == ok, name
    for step in steps.values():
        assert step["wall_s"] > 0 and step["cpu_s"] > 0 and step["peak_pss_gib"] > 0, step
    assert steps["index"]["counts"]["text_vectors"] == ok
    assert 0 < steps["manifest"]["counts"]["manifest_rows"] <= ok
    assert len(results["extrapolation"]) == 2 * 4

    tars = sorted(os.listdir(os.path.join(root, "source")))
    stamps = {t: os.stat(os.path.join(root, "source", t)).st_mtime_ns for t in tars}
    again = subprocess.run(cmd, check=True, timeout=300, capture_output=True, text=True, cwd=REPO)
    resumed = _read_json(results_path)
    assert resumed["steps"] == results["steps"]
    assert resumed["generate"] == results["generate"]
    assert len(resumed["commits"]) == len(results["commits"]) + 1
    assert {t: os.stat(os.path.join(root, "source", t)).st_mtime_ns for t in tars} == stamps
    assert '"step"' not in again.stdout  # no step ran again
