"""The documentation: the MkDocs site builds with --strict, README.md stays a front page, every page
of docs/ is in the nav, and every measured figure of docs/benchmarks.md is what its results file says.

The benchmark checks render each table row from the results file the page names (bench/results-*.json,
written by the bench/ scripts; the default embedder's figures from its heads file's metadata) in the
page's format, and look for the row in that section of the page. A row that differs fails with the
row the file gives. The scale tables are checked by tests/test_bench_scale.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
BENCH = ROOT / "bench"
MKDOCS_YML = ROOT / "mkdocs.yml"
BENCHMARKS_PAGE = DOCS / "benchmarks.md"
HEADS_FILE = ROOT / "engine" / "vectors" / "weights" / "EffLite0-MiniLM-L6.safetensors"
README_MAX_LINES = 300  # issue 17: the README is a front page; the rest lives in the site


# --- the site ---------------------------------------------------------------------------------------


def test_the_site_builds_with_strict(tmp_path):
    """Broken links and anchors, pages missing from the nav, nav entries without a page and
    mkdocstrings entries for modules that do not exist are warnings, which --strict makes fatal."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pyproject's [dev] has it)")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's notice about its successor
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(MKDOCS_YML),
            "-d",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    problems = [line for line in result.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
    assert result.returncode == 0, "mkdocs build --strict failed:\n" + "\n".join(
        problems or [result.stderr[-3000:]]
    )
    assert (tmp_path / "site" / "sample-flow" / "index.html").exists()


def nav_pages(node) -> list[str]:
    """Every page path named in mkdocs.yml's nav, however deep."""
    if isinstance(node, str):
        return [node] if node.endswith(".md") else []
    if isinstance(node, list):
        return [page for item in node for page in nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    return []


def test_every_page_is_in_the_nav():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))
    in_nav = nav_pages(config["nav"])
    on_disk = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md"))
    assert sorted(set(in_nav)) == on_disk, "docs/ pages and mkdocs.yml's nav differ"
    assert len(in_nav) == len(set(in_nav)), "a page is in the nav twice"


def test_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= README_MAX_LINES
    for command in ("make demo", "make test", "mkdocs serve"):  # the two commands; how to read the docs
        assert command in readme, command


def test_readme_links_point_at_files_that_exist():
    """README.md is read on GitHub, outside the site: its relative links must name real files."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [t.split("#")[0] for t in targets if "://" not in t and not t.startswith(("#", "mailto:"))]
    assert local, "the README links into the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


# --- the figures: results file -> the rows the page shows --------------------------------------------


def results(name: str) -> dict:
    with open(BENCH / name, encoding="utf-8") as f:
        return json.load(f)


def git_results(commit: str, name: str) -> dict | None:
    """A results file as an earlier commit held it (the page quotes some runs from git history);
    None where the checkout has no history (a source tarball, a shallow clone)."""
    try:
        text = subprocess.run(
            ["git", "show", f"{commit}:bench/{name}"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return json.loads(text)


def ingest_rows() -> list[str]:
    r = results("results-ingest.json")
    loop, e2e, warm = r["loop"], r["ray_end_to_end"], r["ray_excl_startup"]
    second, steady = r["ray_second_job"], r["steady_state"]
    span = steady["ray_work_span_s"]
    return [
        f"| plain Python loop (1 process) | {loop['wall_s']:.1f} | {loop['images_per_s']:.1f} | 1.00x |",
        f"| Ray `run_curate`, incl. Ray start-up (what `zcurate curate` does) | {e2e['wall_s']:.1f} "
        f"| {e2e['images_per_s']:.1f} | {e2e['ratio']:.2f}x |",
        f"| Ray `run_curate`, excl. Ray start-up | {warm['wall_s']:.1f} | {warm['images_per_s']:.1f} "
        f"| {warm['ratio']:.2f}x |",
        f"| Ray `run_curate`, second job in the same Ray session | {second['wall_s']:.1f} "
        f"| {second['images_per_s']:.1f} | {second['ratio']:.2f}x |",
        f"| `ray.init` alone | {warm['ray_init_s']:.1f} | | |",
        f"| steady state: shard work only (loop {steady['loop_shards_s']:.1f} s vs Ray span) | {span:.1f} "
        f"| {r['n'] / span:.1f} | {steady['ratio']:.2f}x |",
        f"| machine ceiling: {r['num_cpus']} pure-Python processes vs one (best of 3) | | "
        f"| {r['parallel_ceiling']:.2f}x |",
    ]


# The OCR runs the page quotes: (label, results file, the commit whose copy of it to read; None: the
# file as it is now).
OCR_RUNS = (
    ("`results-ocr-seed2.json`", "results-ocr-seed2.json", None),
    ("`results-ocr-1thread.json`", "results-ocr-1thread.json", None),
    ("`results-ocr-1thread-b0f0e5a.json`", "results-ocr-1thread-b0f0e5a.json", None),
    ("`results-ocr-1thread.json` at git `ada921a`", "results-ocr-1thread.json", "ada921a"),
    ("`results-ocr-loop1.json`", "results-ocr-loop1.json", None),
    ("`results-ocr.json`", "results-ocr.json", None),
    ("`results-ocr-f3f6788.json`", "results-ocr-f3f6788.json", None),
)


def ocr_runs() -> list[tuple[str, dict]]:
    runs = []
    for label, name, commit in OCR_RUNS:
        r = results(name) if commit is None else git_results(commit, name)
        if r is not None:
            runs.append((f"{label} (`{r['commit']}`)", r))
    return runs


def ocr_accuracy_rows() -> list[str]:
    rows = []
    for label, r in ocr_runs():
        for a in r["accuracy"]:
            s = a["scores"]
            exact = {group: s[group]["exact_line_accuracy"] for group in s}
            rows.append(
                f"| {label} | {a['backend']} | {a['threads']} "
                f"| {exact['en_clean']:.3f} | {exact['zh_clean']:.3f} "
                f"| {exact['en_photo_or_clipart']:.3f} | {exact['zh_photo_or_clipart']:.3f} "
                f"| {exact['all']:.3f} / {s['all']['exact_line_accuracy_ignoring_spaces']:.3f} "
                f"| {s['all']['cer']:.4f} | {a['images_per_s']:.2f} | {a['load_s']:.1f} |"
            )
    return rows


def ocr_stage_rows() -> list[str]:
    rows = []
    for label, r in ocr_runs():
        ray = r["ray"]
        threads = ray["loop"].get("threads", ray["num_cpus"])  # --loop-threads defaults to --num-cpus
        rows.append(
            f"| {label} | {ray['backend']} "
            f"| {ray['loop_images_per_s']:.2f} ({threads} thread{'s' * (threads > 1)}) "
            f"| {ray['ray_images_per_s']:.2f} | {ray['ratio_ray_vs_loop']:.2f}x "
            f"| {ray['ray_images_per_s_steady']:.2f} vs {ray['loop_images_per_s_excl_setup']:.2f} "
            f"| {ray['ratio_steady']:.2f}x |"
        )
    return rows


def tagging_rows() -> list[str]:
    runs = [("`results-tagging.json`", results("results-tagging.json"))]
    runs.append(("`results-tagging-quiet.json`", results("results-tagging-quiet.json")))
    earlier = git_results("9d83f72", "results-tagging.json")
    if earlier is not None:
        runs.append(("`results-tagging.json` at git `9d83f72`", earlier))
    rows = []
    for label, r in runs:
        convert = f"{r['convert_s']:.1f}" if "convert_s" in r else ""
        ceiling = f"{r['machine_ceiling']:.2f}x" if "machine_ceiling" in r else ""
        rows.append(
            f"| {label} (`{r['commit']}`) | {r['load_start'][0]:.1f} | {convert} | {r['graph_load_s']:.1f} "
            f"| {r['graph_prune_s']:.1f} | {r['matcher_build_s']:.1f} | {r['baseline_captions_per_s']:,.0f} "
            f"| {r['captions_per_s']:,.0f} | {r['speedup']:.2f}x | {ceiling} |"
        )
    return rows


def tagging_unique_rows() -> list[str]:
    r = results("results-tagging-unique.json")
    return [
        f"| `results-tagging-unique.json` (`{r['commit']}`) | {r['load_start'][0]:.1f} | {r['captions']:,} "
        f"| {r['graph_load_s']:.1f} | {r['graph_prune_s']:.1f} | {r['matcher_build_s']:.1f} "
        f"| {r['cold_captions_per_s']:,.0f} | {r['cold_parallel_captions_per_s']:,.0f} "
        f"| {r['warm_captions_per_s']:,.0f} | {r['warm_parallel_captions_per_s']:,.0f} "
        f"| {r['machine_ceiling']:.2f}x |"
    ]


def embed_rows() -> list[str]:
    r = results("results-embed.json")
    bare, procs, stage = r["bare"], r["bare_processes"], r["stage"]
    best = max(bare["images_per_s"], procs["images_per_s"])
    return [
        f"| bare forward, 1 process x {r['args']['num_cpus']} torch threads | {bare['forward_s']:.1f} "
        f"| {bare['images_per_s']:.1f} | {bare['images_per_s'] / best:.2f}x |",
        f"| bare forward, {procs['processes']} processes x 1 thread | {procs['forward_s']:.1f} "
        f"| {procs['images_per_s']:.1f} | {procs['images_per_s'] / best:.2f}x |",
        f"| Ray embed stage, work span (steady state) | {stage['span_s']:.1f} "
        f"| {stage['images_per_s_span']:.1f} | {r['ratio_span']:.2f}x |",
        f"| Ray embed stage, job in a running Ray (actor start + model load) | {stage['job_s']:.1f} "
        f"| {stage['images_per_s_job']:.1f} | {r['ratio_job']:.2f}x |",
        f"| Ray embed stage, end to end (incl. `ray.init` {stage['ray_init_s']:.1f} s) "
        f"| {stage['end_to_end_s']:.1f} | {stage['images_per_s_end_to_end']:.1f} "
        f"| {r['ratio_end_to_end']:.2f}x |",
    ]


def embed_quiet_rows() -> list[str]:
    rows = []
    for name in ("results-embed-quiet-512.json", "results-embed-quiet-2000.json"):
        r = results(name)
        stage = r["stage"]
        rows.append(
            f"| `{name}` | {r['bare']['pairs']:,} | {r['bare_processes']['images_per_s']:.1f} "
            f"| {stage['images_per_s_span']:.1f} ({r['ratio_span']:.2f}x) "
            f"| {stage['images_per_s_job']:.1f} ({r['ratio_job']:.2f}x) "
            f"| {stage['images_per_s_end_to_end']:.1f} ({r['ratio_end_to_end']:.2f}x) |"
        )
    return rows


def heads_metadata() -> dict:
    """The training record ``zcurate train-embedder`` stores in the heads file (safetensors metadata)."""
    with open(HEADS_FILE, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    return json.loads(header["__metadata__"]["zcurate"])


EMBEDDER_SETS = {
    "test": "in-distribution test split",
    "elementary-icons": "held-out source: elementary-xfce icons",
    "tuxpaint": "independent: Tux Paint stamps (reserved)",
}


def embedder_rows() -> list[str]:
    meta = heads_metadata()
    cfg = meta["train_config"]
    with open(HEADS_FILE, "rb") as f:
        file_sha = hashlib.sha256(f.read()).hexdigest()
    rows = []
    for name, label in EMBEDDER_SETS.items():
        h = meta["results"][name]
        rows.append(
            f"| {label} | {h['pairs']:,} | {h['i2t_r1']:.3f} | {h['i2t_r10']:.3f} "
            f"| {h['t2i_r1']:.3f} | {h['t2i_r10']:.3f} | **{h['auc']:.3f}** "
            f"| {h['matched_mean']:.3f} / {h['shuffled_mean']:.3f} |"
        )
    rows += [
        f"| training | {meta['pairs']['train']:,} pairs of {', '.join(cfg['sources'])}; "
        f"{cfg['epochs']} epochs, batch {cfg['batch_size']}, lr {cfg['lr']:g}, "
        f"weight decay {cfg['weight_decay']:g}, seed {cfg['seed']} |",
        f"| commit | `{meta['commit']}` |",
        f"| (split, source/key) list sha256 | `{meta['data_sha256']}` |",
        f"| heads file sha256 | `{file_sha}` |",
    ]
    return rows


def embedder_search_rows() -> list[str]:
    meta = heads_metadata()
    source = meta["train_config"]["validation_source"]
    rows = [
        f"| epochs | weight decay | {source} AUC | {source} image -> text R@10 |",
        "|---:|---:|---:|---:|",
    ]
    for tried in meta["search"]:
        setting, result = tried["setting"], tried[source]
        decay, auc, r10 = setting["weight_decay"], result["auc"], result["i2t_r10"]
        rows.append(f"| {setting['epochs']} | {decay:g} | {auc:.3f} | {r10:.3f} |")
    return rows


def test_the_embedder_figures_come_from_a_clean_commit():
    commit = heads_metadata()["commit"]
    assert commit != "unknown" and not commit.endswith("-dirty"), f"heads trained at {commit}"


def dedup_rows() -> list[str]:
    r = results("results-dedup-1m.json")
    t = r["times_s"]
    return [
        f"| dedup of {r['n']:,} {r['dim']}-d vectors ({r['planted_clusters']:,} planted clusters, "
        f"{r['planted_pairs']:,} planted pairs, {r['hard_negatives']:,} hard negatives), threshold "
        f"{r['threshold']:.2f}, {r['method']} | result | target |",
        f"| wall: IVF-PQ train {t['train_s']:.0f} s + add {t['add_s']:.0f} s "
        f"+ k-NN graph {t['knn_graph_s']:.0f} s "
        f"+ communities {t['communities_s']:.1f} s + representatives {t['representatives_s']:.1f} s "
        f"| **{r['dedup_wall_s']:.0f} s** | <= 600 s |",
        f"| CPU | {r['dedup_cpu_s']:.0f} s | |",
        f"| pair recall / precision | **{r['recall']:.3f} / {r['precision']:.3f}** | >= 0.99 / >= 0.99 |",
        f"| peak RSS | {r['peak_rss_mib']:,} MiB | |",
    ]


def dedup_hard_negative_rows() -> list[str]:
    """bench_dedup.py's hard-negative distribution at 100k (issue 21)."""
    r = results("results-dedup-100k.json")
    lo, hi = r["hard_negative_range"]
    return [
        f"| dedup of {r['n']:,} {r['dim']}-d vectors ({r['planted_clusters']:,} planted clusters, "
        f"{r['hard_negatives']:,} hard negatives at cosine {lo:.2f}-{hi:.2f}), threshold "
        f"{r['threshold']:.2f}, {r['method']} | result |",
        f"| wall (train + add + k-NN graph + communities) | {r['dedup_wall_s']:.0f} s |",
        f"| pair recall / precision | **{r['recall']:.3f} / {r['precision']:.3f}** |",
    ]


def search_rows() -> list[str]:
    r = results("results-search.json")
    rows = []
    for kind, v in r["results"].items():
        p = v["params"]
        label = {
            "flat": "`flat` (exact)",
            "ivfpq": f"`ivfpq` (nlist {p['nlist']}, {p['pq_m']}-byte PQ, nprobe {p['nprobe']})",
            "hnsw": f"`hnsw` (M {p['hnsw_m']}, efSearch {p['ef_search']}; parallel build)",
        }[kind]
        rows.append(
            f"| {label} | {v['p50_ms']:g} | {v['p99_ms']:g} | {v['recall_at_10_vs_flat']:.3f} "
            f"| {v['build_s']:.1f} |"
        )
    return rows


CALIBRATION_EDITS = {  # tests/neardup.py's CRAWL_EDITS, as the page names them
    "resized": "resized to 1/2",
    "reencoded": "JPEG quality 30",
    "crop10": "cropped 10% of each side's length",
    "crop20": "cropped 20%",
    "crop30": "cropped 30%",
    "border": "solid coloured frame (8%)",
    "letterbox": "letterboxed to 16:9",
    "watermarked": "diagonal text watermark",
    "caption": "caption bar",
    "flipped": "mirrored",
    "jitter": "colour jitter",
}


def calibration_rows() -> list[str]:
    """The calibration's chosen setting per edit, and the held-out evaluation beside imagehash."""
    c = results("results-dedup-calibration.json")
    e = results("results-neardup-eval.json")
    chosen, louvain = c["calibration"]["chosen"], c["calibration"]["louvain_same_edges"]
    m, b, photos = e["method"], e["imagehash_phash_le_4"], e["photos_only"]
    rows = [
        f"| {label} | {chosen['recall_per_edit'][name]:.3f} | {m['recall_per_edit'][name]:.3f} "
        f"| {photos['recall_per_edit'][name]:.3f} | {b['recall_per_edit'][name]:.3f} |"
        for name, label in CALIBRATION_EDITS.items()
    ]
    rows += [
        f"| **recall, all copies** | **{chosen['recall']:.3f}** | **{m['recall']:.3f}** "
        f"| {photos['recall']:.3f} | {b['recall']:.3f} |",
        f"| **precision** (removed images) | **{chosen['precision']:.3f}** | **{m['precision']:.3f}** "
        f"| {photos['precision']:.3f} | {b['precision']:.3f} |",
        f"| pair precision | {chosen['pair_precision']:.3f} | {m['pair_precision']:.3f} "
        f"| {photos['pair_precision']:.3f} | {b['pair_precision']:.3f} |",
        f"| images (originals edited + distractors) | {c['images']:,} ({c['originals_edited']} + "
        f"{c['distractors']}) | {e['images']:,} ({e['originals_edited']} + {e['distractors']}) | | |",
        f"| Louvain on the calibration's edges (precision / recall) | "
        f"{louvain['precision']:.3f} / {louvain['recall']:.3f} | | | |",
    ]
    for floor, top in c["calibration"]["best_recall_at_precision"].items():
        if top:
            rows.append(
                f"| best recall at precision >= {floor} | {top['recall']:.3f} (cosine "
                f"{top['threshold']:.2f}, d = {top['phash_distance']}) | | | |"
            )
    return rows


def vectors_dedup_figures() -> list[str]:
    """The figures docs/engines/vectors.md ("Dedup") quotes, as it writes them (spacing aside)."""
    c = results("results-dedup-calibration.json")
    e = results("results-neardup-eval.json")
    ch, m, b = c["calibration"]["chosen"], e["method"], e["imagehash_phash_le_4"]
    at_95 = c["calibration"]["best_recall_at_precision"]["0.95"]
    return [
        f"cosine **{ch['threshold']:.2f}**, pHash **d = {ch['phash_distance']}**",
        (
            f"cosine **{ch['confirm_threshold']:.2f}** within **{ch['confirm_distance']}** bits"
            if ch["confirm_distance"] >= 0
            else "pHash-confirmed pairs **off**"
        ),
        f"diameter bound **{ch['min_cosine']:.2f}**",
        f"precision **{ch['precision']:.3f}** and recall **{ch['recall']:.3f}** there",
        f"precision **{m['precision']:.3f}** and recall **{m['recall']:.3f}**",
        f"**{b['precision']:.3f}** / **{b['recall']:.3f}** for imagehash",
        (
            f"(the best was recall **{at_95['recall']:.3f}**)"
            if at_95
            else "No setting of the calibration grid reached precision 0.95"
        ),
    ]


def test_the_vectors_page_quotes_the_dedup_results():
    """docs/engines/vectors.md's dedup figures are the results files', and the library's defaults
    are the calibration's choice."""
    from engine.vectors.dedup import DedupConfig

    page = (DOCS / "engines" / "vectors.md").read_text(encoding="utf-8")
    section = " ".join(page[page.index("## Dedup") :].split())
    missing = [f for f in vectors_dedup_figures() if " ".join(f.split()) not in section]
    assert not missing, f"docs/engines/vectors.md, 'Dedup', differs from its results files: {missing}"
    chosen = results("results-dedup-calibration.json")["calibration"]["chosen"]
    knobs = ("threshold", "phash_distance", "confirm_threshold", "confirm_distance", "min_cosine")
    assert {k: getattr(DedupConfig(), k) for k in knobs} == {k: chosen[k] for k in knobs}


MANIFEST_BUILDS = {
    "ours_lowres": "ours, `lowres`",
    "ours_omni": "ours, `omni` (+ image-to-image rows, 18 buckets, caption mix)",
    "ours_sft": "ours, `sft` (near-uniform marginal: EM over the concept pairs)",
    "pandas_lowres": "pandas, `lowres`",
}


def manifest_rows() -> list[str]:
    r = results("results-manifest.json")
    rows = [f"| build over {r['n']:,} pairs | wall s | peak memory | rows |"]
    for key, label in MANIFEST_BUILDS.items():
        v = r[key]
        rows.append(f"| {label} | {v['seconds']:.1f} | {v['peak_rss_gib']:.2f} GiB | {v['rows']:,} |")
    memory = r["ours_lowres"]["peak_rss_gib"] / r["pandas_lowres"]["peak_rss_gib"]
    rows.append(f"**{r['speedup_vs_pandas']:.1f}x faster** than pandas with {memory:.0%} of its memory")
    return rows


def samples_page_rows() -> list[str]:
    r = results("results-samples-page.json")
    return [
        f"| {row['filter']} | {row['total']:,} | {row['baseline_s']:.3f} | {row['ours_s']:.3f} "
        f"| {row['baseline_s'] / row['ours_s']:.2f} |"
        for row in r["rows"]
    ]


def api_rows() -> list[str]:
    r = results("results-api.json")
    rows = []
    for run in r["runs"]:
        rate = run["rate_per_client"]
        mode = f"paced {rate:g}/s per client" if rate else "saturating (back to back)"
        texts = "unique texts" if run["unique_queries"] else "repeated texts"
        load = run["machine"]
        cells = [f"{mode}, {texts}", f"{load['loadavg_before'][0]:.2f} -> {load['loadavg_after'][0]:.2f}"]
        endpoints = run["endpoints"]
        cells += [
            f"{endpoints[e]['p50_ms']:.1f} / {endpoints[e]['p99_ms']:.1f}"
            for e in ("metadata", "search", "stats")
        ]
        cells += [f"{sum(e['requests_per_s'] for e in endpoints.values()):.0f}", str(run["errors"])]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def samples_per_s(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:.2f}"


def s3dit_rows() -> list[str]:
    rows = []
    for name in ("results-s3dit-cpu.json", "results-s3dit-h200.json", "results-s3dit-h200-L.json"):
        r = results(name)
        meta = r["meta"]
        where = (
            f"CPU, {meta['torch_threads']} threads" if meta["device"] == "cpu" else f"{meta['device']}, bf16"
        )
        for x in r["results"]:
            mfu = f"{x['ours_mfu']:.1%} / {x['diffusers_mfu']:.1%}" if "ours_mfu" in x else ""
            rows.append(
                f"| `{name}` | {where} | {x['preset']}, {x['batch']}, {x['image']} "
                f"| {samples_per_s(x['ours_samples_per_s'])} | {samples_per_s(x['diffusers_samples_per_s'])} "
                f"| {x['ratio']:.2f}x | {mfu} |"
            )
    return rows


def threads_rows() -> list[str]:
    """The trainer's thread benchmark: each setting's median step (fastest-slowest round) and ratios."""
    r = results("results-threads-cpu.json")
    m = r["meta"]
    commit = m["commit"] + ("-dirty" if m["dirty"] else "")
    rows = [
        f"`results-threads-cpu.json` (`{commit}`): {m['cpu_count']} CPUs, {m['allowed_cpus']} allowed "
        f"(the default: {m['threads']['default']} threads), load average {m['loadavg_before'][0]:.2f} "
        f"before and {m['loadavg_after'][0]:.2f} after"
    ]
    for x in r["results"]:
        cells = [f"{x['preset']}, {x['image']}x{x['image']} ({x['tokens']:,} tokens), {x['batch']}"]
        for label in ("1", "2", "all", "default"):
            rounds = x["rounds"][str(m["threads"][label])]
            cells.append(f"{x['seconds'][label]:.2f} ({min(rounds):.2f}-{max(rounds):.2f})")
        cells.append(f"{x['ratio_to_default']['1']:.2f}x")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def global_rows() -> list[str]:
    """The tagging rows of "Global steps on Ray", from bench/results-global.json."""
    r = results("results-global.json")
    assert r["same_output"] and not r["meta"]["commit"].endswith("-dirty")
    rows = []
    for run in r["runs"]:
        cpus = run["mode"].removeprefix("ray-")
        name = (
            "one process (`tag_workspace`)"
            if run["mode"] == "local"
            else f"local Ray, {cpus} CPU{'' if cpus == '1' else 's'} (`run_tag_job`)"
        )
        rows.append(
            f"| {name} | {run['wall_s']:.1f} | {run['max_process_rss_gib']:.2f} | {run['tree_pss_gib']:.2f} "
            f"| {run['tags']:,} | {run['digest'][:12]} |"
        )
    per_shard_ms = r["runs"][0]["wall_s"] / r["shards"] * 1000  # the one-process run
    return [
        *rows,
        f"tags {r['captions']:,} distinct captions",
        f"{r['shards']} shards of 256",
        f"one-process tagging costs {per_shard_ms:.0f} ms a shard, and a local Ray's start plus two actor "
        f"pools (one per pass, each actor loading the {r['matcher_pickle_mib']:.1f} MiB pickled matcher) "
        "cost more than a second core saves.",
        f"where the one-process passes would take ~{1024 * per_shard_ms / 1000:.0f} s on this machine at "
        "that per-shard cost (an extrapolation, not a run).",
    ]


def scale_figures() -> list[str]:
    """The scale section's prose figures (its tables: tests/test_bench_scale.py)."""
    r = results("results-scale.json")
    steps = {s["step"]: s["counts"] for s in r["steps"]}
    ingest, dedup, tag = steps["ingest"], steps["dedup"], steps["tag"]
    reasons = ingest["reject_reasons"]
    return [
        f"{ingest['ok']:,} usable, {ingest['rejected']:,} rejected "
        f"({reasons['duplicate_sample']:,} `duplicate_sample`",
        f"{reasons['empty_caption']:,} `empty_caption`, "
        f"{reasons['decompression_bomb']:,} `decompression_bomb`",
        f"{dedup['communities']:,} near-duplicate communities holding "
        f"{dedup['communities'] + dedup['duplicates']:,} samples ({dedup['duplicates']:,} of them not",
        f"Tags: {tag['tags']:,} on {tag['rows']:,} samples, {tag['mined']:,} concepts mined",
        f"{steps['manifest']['manifest_rows']:,} rows",
        f"add up to {sum(s['wall_s'] for s in r['steps']):,.0f} s",
        f"Generating the pairs took {r['generate']['seconds']:.0f} s "
        f"({r['generate']['bytes']:,} bytes of tars",
    ]


# Page section (its "## " heading) -> the lines the results files give for it.
SECTIONS: dict[str, Callable[[], list[str]]] = {
    "Ingest and profiling: plain loop vs Ray": ingest_rows,
    "OCR: accuracy per backend, and the OCR stage on Ray": lambda: ocr_accuracy_rows() + ocr_stage_rows(),
    "Concept graph build and caption tagging": lambda: tagging_unique_rows() + tagging_rows(),
    "Embedding stage": lambda: embed_rows() + embed_quiet_rows(),
    "The default embedder: held-out retrieval": lambda: embedder_rows() + embedder_search_rows(),
    "Vector index and dedup at 1M vectors": lambda: dedup_rows() + dedup_hard_negative_rows() + search_rows(),
    "Dedup calibration": calibration_rows,
    "Manifest builder": manifest_rows,
    "Explorer page": samples_page_rows,
    "REST service under 64 concurrent clients": api_rows,
    "Scale: 50,000 pairs end to end": scale_figures,
    "Global steps on Ray: tagging": global_rows,
    "S3-DiT training step against diffusers": s3dit_rows,
    "S3-DiT trainer: torch threads": threads_rows,
}


def page_section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"docs/benchmarks.md has no section '## {heading}'"
    return match.group(1)


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_benchmark_figures_are_their_results_files(heading):
    section = page_section(BENCHMARKS_PAGE.read_text(encoding="utf-8"), heading)
    expected = SECTIONS[heading]()
    assert expected
    missing = [line for line in expected if line not in section]
    assert not missing, f"'{heading}' differs from its results file; the file gives:\n" + "\n".join(missing)


def test_the_demo_figures_are_the_ingest_benchmark():
    """Getting started quotes how many of the demo's 2,000 records are usable: the ingest benchmark
    curates the same first 2,000 openclipart records."""
    r = results("results-ingest.json")
    page = (DOCS / "getting-started.md").read_text(encoding="utf-8")
    assert r["n"] == 2000
    assert f"{r['loop']['ok']:,} are usable" in page and f'`"ok": {r["loop"]["ok"]}`' in page


def test_every_results_file_is_quoted_in_the_docs():
    """A committed results file that no page names is a measurement nobody reads (or a stale one)."""
    docs = "\n".join(p.read_text(encoding="utf-8") for p in DOCS.rglob("*.md"))
    unquoted = [p.name for p in sorted(BENCH.glob("results-*.json")) if p.name not in docs]
    assert not unquoted, f"results files no page names: {unquoted}"


def test_every_module_is_in_the_api_reference():
    """Each module of engine, pipelines, api and cli has a ``::: module`` entry on a page of
    docs/reference/ (a new module gets its reference page entry with it)."""
    listed = set()
    for page in (DOCS / "reference").glob("*.md"):
        listed |= set(re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), re.M))
    modules = set()
    for package in ("engine", "pipelines", "api", "cli"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__main__":
                continue
            modules.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    assert sorted(modules - listed) == []


# --- the quality scores' figures (docs/engines/profiling.md) ------------------------------------------

PROFILING_PAGE = DOCS / "engines" / "profiling.md"
QUALITY_DEGRADATIONS = {
    "blur": "blur",
    "jpeg": "JPEG q 10-20",
    "noise": "noise",
    "upscale": "4x upscale",
    "all": "all",
}


def quality_lines() -> list[str]:
    """The rows of the page's quality table and its timing sentence, from bench/results-quality.json."""
    r = results("results-quality.json")
    rows = []
    for group, label in (("photo", "photos"), ("nonphoto", "non-photo")):
        table = r["results"][group]
        for key, name in QUALITY_DEGRADATIONS.items():
            b, p = table["brisque"][key], table["piqe"][key]
            rows.append(
                f"| {label} | {name} | {b['n']} | {b['ranked']} ({b['fraction']:.2f}) "
                f"| {p['ranked']} ({p['fraction']:.2f}) |"
            )
    t = r["timing_ms"]
    rows.append(
        f"Cost per image (`timing_ms`, one thread, {r['meta']['cpus']}-core machine, mean over the "
        f"{t['brisque']['n']} originals): `brisque` {t['brisque']['mean']:.0f} ms, `piqe` "
        f"{t['piqe']['mean']:.0f} ms, `nsfw_nudenet` {t['nsfw_nudenet']['mean']:.0f} ms."
    )
    return rows


def test_the_quality_figures_are_their_results_file():
    r = results("results-quality.json")
    assert r["set"] == "eval" and len(r["originals"]["photo"]) == 19
    page = PROFILING_PAGE.read_text(encoding="utf-8")
    missing = [line for line in quality_lines() if line not in page]
    differs = "docs/engines/profiling.md differs from results-quality.json; the file gives:\n"
    assert not missing, differs + "\n".join(missing)


# --- the zero-shot tag figures (docs/engines/graph.md) -----------------------------------------------

GRAPH_PAGE = DOCS / "engines" / "graph.md"


def zero_shot_line() -> str:
    """The sentence docs/engines/graph.md quotes from bench/results-zero-shot.json."""
    r = results("results-zero-shot.json")
    d, x = r["data"], r["results"]
    return (
        f"On Tux Paint's {d['usable']:,} usable stamps, a source the embedded default never saw "
        f"(`bench/bench_zero_shot.py`, `bench/results-zero-shot.json`): of {x['clip_candidates']:,} "
        f"candidates (top {r['config']['clip_top_k']} per image) the text confirms "
        f"{x['clip_base_precision']:.3f}; the calibrated threshold {x['clip_threshold']:.3f} keeps "
        f"{x['clip_tags']} clip tags (precision {x['clip_precision']:.2f}, recall {x['clip_recall']:.2f} "
        f"on the captions it was calibrated on), and on captions it was not calibrated on its precision "
        f"is {x['clip_precision_unseen']:.2f} over {x['clip_unseen_kept']} tags."
    )


def assert_graph_page_quotes(name: str, line: str) -> None:
    """The results file was written at a clean commit and the graph page holds its sentence."""
    commit = results(name)["meta"]["commit"]
    assert commit != "unknown" and not commit.endswith("-dirty"), f"{name} written at {commit}"
    assert line in GRAPH_PAGE.read_text(encoding="utf-8"), line


def test_the_zero_shot_figures_are_their_results_file():
    assert results("results-zero-shot.json")["data"]["source"] == "tuxpaint-stamps-default"  # unseen
    assert_graph_page_quotes("results-zero-shot.json", zero_shot_line())


def noise_concepts_line() -> str:
    """The sentence docs/engines/graph.md quotes from bench/results-noise-concepts.json."""
    r = results("results-noise-concepts.json")
    d, x, p = r["data"], r["results"], r["planted"]
    shares = sorted(set(p["uniform_share"].values()))
    marked = ", ".join(f"`{o['synset']}`" for o in x["own"] if o["noise"])
    return (
        "Measured on independent data (`bench/bench_noise_concepts.py`, "
        "`bench/results-noise-concepts.json`): "
        f"Tux Paint's {d['usable']:,} usable stamps, with words planted in their captions as a scrape's "
        f"metadata would be. The rule marks {x['uniform_marked']} of {len(x['uniform'])} words planted at "
        f"random on {int(shares[0] * 100)}-{int(shares[-1] * 100)}% of the stamps "
        f"({', '.join(p['uniform_share'])}) and {x['grounded_marked']} of {len(x['grounded'])} "
        "category words "
        f"planted on their own folder's stamps ({', '.join(p['grounded_folder'])}); of the captions' own "
        f"concepts with enough samples to test it marks {x['own_marked']} of {x['own_tested']} ({marked})."
    )


def test_the_noise_concept_figures_are_their_results_file():
    assert_graph_page_quotes("results-noise-concepts.json", noise_concepts_line())


# --- the pay-off page ---------------------------------------------------------------------------------

PAYOFF_PAGE = DOCS / "payoff.md"


def payoff_tables(name: str) -> dict[str, list[str]]:
    """The tables docs/payoff.md quotes from one results file, rendered by bench/payoff/report.py."""
    from bench.payoff import report

    r = results(name)
    tables = {"arms": report.arm_table(r), "comparisons": report.comparison_table(r)}
    if r["curated"].get("ablated"):
        tables["kept by each ablated manifest"] = report.ablation_kept_table(r)
    else:
        tables["defects"] = report.defect_table_md(r)
    return tables


@pytest.mark.parametrize("name", ["results-payoff-cpu.json", "results-payoff-cpu-ablation.json"])
def test_payoff_figures_are_their_results_files(name):
    page = PAYOFF_PAGE.read_text(encoding="utf-8")
    r = results(name)
    assert not r["meta"]["dirty"], f"{name} was written from a checkout with uncommitted changes"
    assert f"`{r['meta']['commit'][:7]}`" in page  # the page names the commit that wrote the file
    for table, rows in payoff_tables(name).items():
        missing = [row for row in rows if row not in page]
        assert not missing, (
            f"docs/payoff.md: the {table} table of {name} differs; the file gives:\n" + "\n".join(missing)
        )
    figures = DOCS / "assets" / "payoff" / r["config"]["name"]
    for figure in ("curves.png", "samples.png"):  # the defect table is on the page as text
        assert (figures / figure).is_file()
        assert f"assets/payoff/{r['config']['name']}/{figure}" in page


# --- the trainer page: every example timed ------------------------------------------------------------

TRAINER_PAGE = DOCS / "trainer.md"
EXAMPLE_LIMIT_S = 660  # issue 23: no trainer example takes more than ~10 minutes on a CPU
# Output lines of an example that the page quotes: those starting with these.
QUOTED_OUTPUT = {
    "quick_start_train": ("lowres: ", "validation at step "),
    "full_size_estimate": ("lowres: ",),
    "whole_loop": ("lowres: ", "omni: ", "sft: "),
}


def test_every_trainer_example_is_timed_beside_it():
    """docs/trainer.md shows each command of bench/bench_trainer_examples.py with the duration its
    results file measured (``# measured: ...`` after the command), the lines of output it quotes
    are that run's, and every run stays under ~10 minutes (the quick start's two commands too)."""
    from bench.bench_trainer_examples import EXAMPLES, duration

    r = results("results-trainer-examples.json")
    page = TRAINER_PAGE.read_text(encoding="utf-8")
    assert list(r["examples"]) == list(EXAMPLES), "rerun bench/bench_trainer_examples.py: examples changed"
    for name, command in EXAMPLES.items():
        run = r["examples"][name]
        assert run["command"] == command and run["exit_code"] == 0, name
        assert f"{command}  # measured: {duration(run['wall_s'])}" in page, (
            f"{name}: {duration(run['wall_s'])}"
        )
        assert run["wall_s"] <= EXAMPLE_LIMIT_S, name
    load = r["meta"]["loadavg_before"][0], r["meta"]["loadavg_after"][0]
    assert f"load average {load[0]:.2f} before the examples and {load[1]:.2f} after" in page
    quick = r["examples"]["quick_start_train"]["wall_s"] + r["examples"]["quick_start_sample"]["wall_s"]
    assert quick <= EXAMPLE_LIMIT_S
    assert f"in {duration(quick)} on 2 CPU cores" in (ROOT / "README.md").read_text(encoding="utf-8")
    for name, prefixes in QUOTED_OUTPUT.items():
        lines = [line for line in r["examples"][name]["output"] if line.startswith(prefixes)]
        assert lines and [line for line in lines if line not in page] == [], name


def test_every_trainer_command_on_the_page_is_a_timed_example():
    """A ``zcurate train`` or ``zcurate sample`` line in a code block of docs/trainer.md is part of
    a timed example (a new example gets its measured duration with it)."""
    from bench.bench_trainer_examples import EXAMPLES

    page = TRAINER_PAGE.read_text(encoding="utf-8")
    blocks = re.findall(r"^```bash\n(.*?)^```", page, flags=re.M | re.S)
    commands = [
        line.split("  # measured:")[0]
        for block in blocks
        for line in block.splitlines()
        if line.startswith(("zcurate train", "zcurate sample"))
    ]
    timed = "\n".join(EXAMPLES.values())
    assert commands and [c for c in commands if c not in timed] == []
