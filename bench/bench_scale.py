"""End-to-end curation at scale: >= 50,000 openclipart-derived pairs, step by step, on this machine.

What it does, in order (each step resumable; a finished step is read back from the JSON):

1. **generate** (not a curation step): derive N image-caption pairs from Debian's openclipart
   (8,121 PNGs, SVG title + keywords as caption) as WebDataset tars of ~1,000 pairs. Variant 0 of
   a base image is the original on white (capped at 1,024 px); variants 1.. are random crops
   (75-100 % of the area), flips, light background colours, brightness/contrast/colour jitter,
   a longer side of 256-1,024 px and JPEG quality 80-95. Bases over 20 MP (openclipart has two
   decompression bombs and a few very large sheets) go in once, as the original PNG, so the
   rejection path runs at scale too. Captions repeat across variants of one base, as re-crawled
   web data does; the variants are what the near-duplicate step should find.
2. **ingest**   ``run_curate`` with no image stages: plan, decode, validate, profile, write
   ``samples`` + ``signals``, reject cross-shard duplicates, refresh the catalog.
3. **embed**, **ocr**, **safety**: each image stage alone over every shard
   (``pipelines.backfill.run_image_stage``), so each gets its own time. ``zcurate curate --stages
   all`` runs them in the same pass as ingest and decodes each image once; here every image step
   decodes again (~5 ms an image), which the per-step numbers include.
4. **index**    ``engine.vectors.index.build_index`` for the image and text vectors (FAISS).
5. **dedup**    ``engine.vectors.dedup.dedup_workspace`` (semantic + perceptual-hash communities).
6. **tag**      ``engine.graph.tagging.tag_workspace`` with the embedded CLIP model (caption tags, mined
   concepts, CLIP zero-shot tags), then the catalog is refreshed.
7. **manifest** ``engine.curation.manifest.build_manifest`` with the ``lowres`` recipe, seed 0.

Every step runs in a child process started by this script; while it runs, a sampler thread reads
the child's whole process tree (Ray's GCS, raylet and workers included) every second: peak memory
is the largest sum of PSS (shared pages counted once; at least the child's own peak RSS, which a
step shorter than a second would otherwise miss), CPU seconds the sum over the tree, and
"others" the cores the rest of the machine used meanwhile (this VM is shared: read every number
next to it).

Run by hand (hours on 2 cores; rerun the same command to resume after a stop)::

    nice -n 19 .venv/bin/python bench/bench_scale.py --n 50000 --json bench/results-scale.json

``--extrapolate`` prints the extrapolation table of docs/benchmarks.md from a results file without running.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import os
import resource
import subprocess
import sys
import tarfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

OPENCLIPART = "/usr/share/openclipart"
BIG_PIXELS = 20_000_000  # bases over this go in once, unchanged
PAIRS_PER_TAR = 1000
STEPS = ("ingest", "embed", "ocr", "safety", "index", "dedup", "tag", "manifest")


# --- 1. the derived dataset -----------------------------------------------------------------------


def base_images() -> list[dict]:
    """openclipart's PNGs in the demo source's fixed hash order, with pixel counts from the headers."""
    from PIL import Image

    from engine.profiling.openclipart_source import OpenclipartSource

    rows = OpenclipartSource(OPENCLIPART).list_records().to_pylist()
    for row in rows:
        try:
            with Image.open(row["uri"]) as im:
                row["pixels"] = im.width * im.height
        except Exception:  # an unreadable base is derived as-is: ingest rejects it with its reason
            row["pixels"] = BIG_PIXELS + 1
    return rows


def plan_pairs(bases: list[dict], n: int) -> list[tuple[int, int]]:
    """The first n (base, variant) pairs, base by base: big bases give one pair, others ceil(n/B)+1."""
    per_base = math.ceil(n / len(bases)) + 1
    pairs = []
    for b, base in enumerate(bases):
        for v in range(1 if base["pixels"] > BIG_PIXELS else per_base):
            pairs.append((b, v))
    if len(pairs) < n:
        raise SystemExit(f"cannot derive {n} pairs from {len(bases)} bases")
    # Spread the cut over the bases: round-robin by variant, so every base gets about n/B variants.
    pairs.sort(key=lambda p: (p[1], p[0]))
    return sorted(pairs[:n])


def derive(image, key: str, variant: int):
    """One variant of an RGBA/RGB base image -> (JPEG bytes). Deterministic in (key, variant)."""
    import random

    from PIL import Image, ImageEnhance, ImageOps

    rng = random.Random(hashlib.blake2b(f"{key}:{variant}".encode(), digest_size=8).digest())
    image = image.convert("RGBA")
    if variant == 0:
        background, side, quality = (255, 255, 255), 1024, 92
    else:
        background = tuple(rng.randint(215, 255) for _ in range(3))
        side, quality = rng.randint(256, 1024), rng.randint(80, 95)
        w, h = image.size
        scale = math.sqrt(rng.uniform(0.75, 1.0))
        cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        image = image.crop((x, y, x + cw, y + ch))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
    canvas = Image.new("RGBA", image.size, (*background, 255))
    canvas.alpha_composite(image)
    image = canvas.convert("RGB")
    if variant:
        for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
            image = enhancer(image).enhance(rng.uniform(0.85, 1.15))
    if max(image.size) > side:
        image.thumbnail((side, side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_tar(job: tuple[str, list[dict], list[tuple[int, int]]]) -> int:
    """Write one tar of pairs (base-major, so each base is decoded once). Returns pairs written."""
    from PIL import Image

    from engine.profiling.openclipart_source import openclipart_caption

    path, bases, pairs = job
    Image.MAX_IMAGE_PIXELS = None  # we derive, ingest validates; bases are our own files
    tmp = path + ".part"
    by_base: dict[int, list[int]] = {}
    for b, v in pairs:
        by_base.setdefault(b, []).append(v)
    with tarfile.open(tmp, "w") as tar:
        for b, variants in sorted(by_base.items()):
            base = bases[b]
            caption = b""
            svg = base["caption_ref"]
            if os.path.exists(svg):
                try:
                    with open(svg, "rb") as f:
                        caption = openclipart_caption(f.read()).encode()
                except Exception:
                    caption = b""
            members = []
            if base["pixels"] > BIG_PIXELS:
                with open(base["uri"], "rb") as f:
                    members.append((f"{b:05d}_0.png", f.read()))
            else:
                with Image.open(base["uri"]) as image:
                    image.load()
                    for v in variants:
                        members.append((f"{b:05d}_{v}.jpg", derive(image, base["ref"], v)))
            for name, data in members:
                for member, payload in ((name, data), (name.rsplit(".", 1)[0] + ".txt", caption)):
                    info = tarfile.TarInfo(member)
                    info.size, info.mtime = len(payload), 0
                    tar.addfile(info, io.BytesIO(payload))
    os.replace(tmp, path)
    return len(pairs)


def generate(source_dir: str, n: int, processes: int) -> dict:
    """Write the derived dataset once (tars already there are kept). Returns what it wrote."""
    import multiprocessing

    t0 = time.perf_counter()
    bases = base_images()
    pairs = plan_pairs(bases, n)
    os.makedirs(source_dir, exist_ok=True)
    jobs = []
    for start in range(0, len(pairs), PAIRS_PER_TAR):
        path = os.path.join(source_dir, f"{start // PAIRS_PER_TAR:05d}.tar")
        if not os.path.exists(path):
            jobs.append((path, bases, pairs[start : start + PAIRS_PER_TAR]))
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        written = sum(pool.imap_unordered(write_tar, jobs))
    size = sum(os.path.getsize(os.path.join(source_dir, f)) for f in os.listdir(source_dir))
    return {
        "pairs": len(pairs),
        "bases": len({b for b, _ in pairs}),
        "tars": math.ceil(len(pairs) / PAIRS_PER_TAR),
        "written_now": written,
        "bytes": size,
        "seconds": round(time.perf_counter() - t0, 1),
    }


# --- 2..7. the steps, each in a child process -------------------------------------------------------


def run_step(step: str, root: str, num_cpus: int) -> dict:
    """Run one step on the workspace (in this process); return its counts."""
    from engine.profiling.source import load_source
    from engine.workspace import Workspace

    ws = Workspace(os.path.join(root, "ws"))
    if step == "ingest":
        from pipelines.curate import run_curate

        s = run_curate(
            load_source(os.path.join(root, "source")), ws, num_cpus=num_cpus, progress=False, tag=False
        )
        return {
            "rows": s.samples,
            "ok": s.ok,
            "rejected": s.rejected,
            "reject_reasons": s.reject_reasons,
            "work_span_s": round(s.work_span_s, 1),
        }
    if step in ("embed", "ocr", "safety"):
        from pipelines.backfill import run_image_stage
        from pipelines.stages import build_image_stages

        (stage,) = build_image_stages([step])
        s = run_image_stage(ws, stage, num_cpus=num_cpus, progress=False, refresh=False)
        return {"rows": s.rows, "shards": s.shards_run}
    if step == "index":
        from engine.vectors.index import build_index

        metas = {m: build_index(ws, m) for m in ("image", "text")}
        return {"rows": metas["image"].ntotal, "text_vectors": metas["text"].ntotal}
    if step == "dedup":
        from engine.vectors.dedup import dedup_workspace

        s = dedup_workspace(ws)
        return {"rows": s.samples, "communities": s.communities, "duplicates": s.duplicates}
    if step == "tag":
        from engine.catalog import refresh_catalog
        from engine.graph.tagging import TagConfig, tag_workspace

        s = tag_workspace(ws, config=TagConfig(), progress=False)  # the embedded default's zero-shot pass
        if s.clip_skipped:
            raise SystemExit(f"tag: the zero-shot pass did not run: {s.clip_skipped}")
        refresh_catalog(ws)
        return {"rows": s.samples, "tags": s.tags, "mined": len(s.mined), "concepts": s.concepts}
    if step == "manifest":
        from engine.curation.manifest import build_manifest
        from engine.curation.recipe import load_recipe

        result = build_manifest(ws, load_recipe("lowres"), seed=0, force=True)
        counts = result.sidecar["counts"]
        return {"rows": counts["pool"], "manifest_rows": counts["rows"], "id": result.manifest_id}
    raise SystemExit(f"unknown step {step!r}")


class TreeSampler(threading.Thread):
    """Samples a process tree once a second: peak PSS sum, CPU seconds, the rest of the machine's CPU."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.root = psutil.Process(pid)
        self.stop = threading.Event()
        self.peak_pss = 0
        self.cpu_by_pid: dict[int, float] = {}
        self.machine_start = self._machine_busy()

    @staticmethod
    def _machine_busy() -> float:
        import psutil

        t = psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0)

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            pss = 0
            for p in procs:
                try:
                    pss += p.memory_full_info().pss
                    c = p.cpu_times()
                    self.cpu_by_pid[p.pid] = c.user + c.system + c.children_user + c.children_system
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            self.peak_pss = max(self.peak_pss, pss)
            self.stop.wait(1.0)

    def others_cores(self, seconds: float) -> float:
        busy = self._machine_busy() - self.machine_start
        return max(0.0, busy - sum(self.cpu_by_pid.values())) / max(seconds, 1e-9)


def measure_step(step: str, args) -> dict:
    out = os.path.join(args.root, f"step-{step}.json")
    cmd = [sys.executable, __file__, "--root", args.root, "--num-cpus", str(args.num_cpus)]
    cmd += ["--child", step, out]
    load_before = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": REPO})
    sampler = TreeSampler(child.pid)
    sampler.start()
    rc = child.wait()
    wall = time.perf_counter() - t0
    sampler.stop.set()
    sampler.join()
    # What the sampler cannot see between its one-second looks (a short step, a process that ended
    # in between) the kernel counted for the waited child and the descendants it waited for.
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    waited_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cpu_s = max(sum(sampler.cpu_by_pid.values()), waited_cpu)
    if rc != 0:
        raise SystemExit(f"step {step} failed (exit {rc}); rerun to resume")
    with open(out) as f:
        counts = json.load(f)
    rows = counts.get("rows") or 0
    return {
        "step": step,
        "wall_s": round(wall, 1),
        "rows": rows,
        "rows_per_s": round(rows / wall, 2) if wall else None,
        "cpu_s": round(cpu_s, 1),
        "peak_pss_gib": max(round(sampler.peak_pss / 2**30, 2), counts.get("child_max_rss_gib", 0.0)),
        "others_cores": round(sampler.others_cores(wall), 2),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "counts": counts,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --- extrapolation --------------------------------------------------------------------------------

# Assumptions of the extrapolation table (docs/benchmarks.md states them next to it).
NODE_VCPUS = 32  # a cluster node: 32 vCPUs, no GPU
VCPU_HOUR_USD = 0.05  # assumed on-demand price per vCPU-hour (a round public-cloud figure, not a quote)
# How each step spreads in today's code: "cluster" = per shard over every core of every node (Ray);
# "node" = one node, all its cores (FAISS/BLAS threads); "core" = one process on one core.
MODES = {
    "ingest": "cluster",
    "embed": "cluster",
    "ocr": "cluster",
    "safety": "cluster",
    "index": "node",
    "dedup": "node",
    "tag": "core",
    "manifest": "core",
}
# Measured elsewhere (CPU ms per pair, source): a per-shard step this run has not measured, and the
# global steps, whose benchmarks ran at 1M-10M pairs.
REFERENCE = {
    "ocr": (145.0, "bench/results-ocr-1thread.json: the OCR stage in a 1-thread loop, 6.88 images/s"),
    "index": (0.565, "bench/results-dedup.json: IVF-PQ train 308 + add 257 CPU s for 1M vectors"),
    "dedup": (0.067, "bench/results-dedup.json: knn graph 66.0 + communities 1.4 CPU s for 1M"),
    "tag": (0.033, "bench/results-tagging-quiet.json: 30,549 captions/s in one process"),
    "manifest": (0.0064, "bench/results-manifest.json: lowres over 10M pairs in 63.6 s, one process"),
}


def per_pair_costs(results: dict) -> dict[str, dict]:
    """CPU ms per pair of every step: this run's (CPU s / rows) or, when missing, REFERENCE's."""
    measured = {s["step"]: s for s in results["steps"]}
    costs = {}
    for step, mode in MODES.items():
        if mode != "cluster" and step in REFERENCE:
            # A global step's fixed costs (graph load, index training, reading tables) dominate at
            # 50k pairs; its benchmark at 1M-10M pairs is the better slope. This run's figure is shown.
            ms, source = REFERENCE[step]
            if step in measured and measured[step]["rows"]:
                here = 1000 * measured[step]["cpu_s"] / measured[step]["rows"]
                source += f" (this run, 50k incl. fixed costs: {here:.3g} ms)"
            costs[step] = {"mode": mode, "cpu_ms": ms, "source": source}
        elif step in measured and measured[step]["rows"]:
            m = measured[step]
            source = f"this run: {m['cpu_s']:,} CPU s / {m['rows']:,} pairs"
            costs[step] = {"mode": mode, "cpu_ms": 1000 * m["cpu_s"] / m["rows"], "source": source}
        elif step in REFERENCE:
            costs[step] = {"mode": mode, "cpu_ms": REFERENCE[step][0], "source": REFERENCE[step][1]}
        else:
            costs[step] = {"mode": mode, "cpu_ms": None, "source": "not measured"}
    return costs


def extrapolate(results: dict, pairs: list[int], nodes: list[int]) -> list[dict]:
    """Hours and cost of curating ``pairs`` on N-node clusters, linear in pairs from per-pair costs.

    hours = sum over steps of pairs * cpu_ms / 1000 / cores / 3600, where cores is N * NODE_VCPUS
    for "cluster" steps (shards are independent; the Ray overhead of this run is inside its CPU
    seconds), NODE_VCPUS for "node" steps and 1 for "core" steps. Fixed costs (model loads, the
    graph load, Ray start) are inside the per-pair figures, which overstates them at scale; index
    training runs on a sample, so linear scaling of it is pessimistic too. The whole cluster is
    billed for the whole run: usd = N * NODE_VCPUS * hours * VCPU_HOUR_USD.
    """
    costs = per_pair_costs(results)
    table = []
    for n in pairs:
        for k in nodes:
            cores = {"cluster": k * NODE_VCPUS, "node": NODE_VCPUS, "core": 1}
            hours = {"cluster": 0.0, "node": 0.0, "core": 0.0}
            for cost in costs.values():
                if cost["cpu_ms"] is not None:
                    hours[cost["mode"]] += n * cost["cpu_ms"] / 1000 / cores[cost["mode"]] / 3600
            total = sum(hours.values())
            table.append(
                {
                    "pairs": n,
                    "nodes": k,
                    "cluster_h": round(hours["cluster"], 1),
                    "one_node_h": round(hours["node"] + hours["core"], 1),
                    "hours": round(total, 1),
                    "usd": round(k * NODE_VCPUS * total * VCPU_HOUR_USD),
                }
            )
    return table


def print_tables(results: dict) -> None:
    print("| step | pairs | wall s | pairs/s | CPU s | CPU ms/pair | peak memory GiB | other load (cores) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    steps = sorted(results["steps"], key=lambda s: STEPS.index(s["step"]))  # resumed runs append
    for s in steps:
        per_pair = 1000 * s["cpu_s"] / s["rows"] if s["rows"] else float("nan")
        print(
            f"| {s['step']} | {s['rows']:,} | {s['wall_s']:,} | {s['rows_per_s']} | {s['cpu_s']:,} | "
            f"{per_pair:.1f} | {s['peak_pss_gib']} | {s['others_cores']} |"
        )
    total = sum(s["wall_s"] for s in steps)
    print(f"\ntotal {total:,.0f} s over {len(steps)} steps")
    print("\n| step | spreads over | CPU ms per pair | from |")
    print("|---|---|---:|---|")
    for step, cost in per_pair_costs(results).items():
        ms = "n/a" if cost["cpu_ms"] is None else f"{cost['cpu_ms']:.3g}"
        print(f"| {step} | {cost['mode']} | {ms} | {cost['source']} |")
    if "extrapolation" in results:
        print("\n| pairs | nodes (32 vCPU) | per-shard steps h | one-node steps h | total h | cost USD |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in results["extrapolation"]:
            print(
                f"| {r['pairs']:,} | {r['nodes']} | {r['cluster_h']} | {r['one_node_h']} | "
                f"{r['hours']} | {r['usd']:,} |"
            )


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="derived pairs (default 50,000)")
    parser.add_argument("--root", default=None, help="data dir (default: $TMPDIR/zcurate-scale-<n>)")
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count())
    parser.add_argument("--steps", default=",".join(STEPS), help="steps to run, in order")
    parser.add_argument("--json", default=None, help="results file (read to resume, written after each step)")
    parser.add_argument("--extrapolate", action="store_true", help="only print the tables from --json")
    parser.add_argument("--child", nargs=2, metavar=("STEP", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.root = args.root or os.path.join(os.environ.get("TMPDIR", "/tmp"), f"zcurate-scale-{args.n}")

    if args.child:
        step, out = args.child
        counts = run_step(step, args.root, args.num_cpus)
        # The child's own peak RSS (kB on Linux): a step shorter than the sampler's one-second look
        # would otherwise show no memory at all.
        counts["child_max_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        with open(out, "w") as f:
            json.dump(counts, f)
        return

    results = {"n": args.n, "root": args.root, "steps": []}
    if args.json and os.path.exists(args.json):
        with open(args.json) as f:
            results = json.load(f)
    if not args.extrapolate:
        results.setdefault("machine", {"cpus": os.cpu_count(), "num_cpus": args.num_cpus})
        results.setdefault("commits", []).append(git_commit())
        if "generate" not in results:
            results["generate"] = generate(os.path.join(args.root, "source"), args.n, args.num_cpus)
            print("generate:", results["generate"], flush=True)
        done = {s["step"] for s in results["steps"]}
        for step in args.steps.split(","):
            if step in done:
                continue
            result = measure_step(step, args)
            results["steps"].append(result)
            print(json.dumps(result), flush=True)
            if args.json:
                with open(args.json + ".part", "w") as f:
                    json.dump(results, f, indent=1)
                os.replace(args.json + ".part", args.json)
    results["extrapolation"] = extrapolate(results, [100_000_000, 1_000_000_000], [1, 8, 32, 128])
    if args.json and not args.extrapolate:  # --extrapolate only reads (a running bench owns the file)
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print_tables(results)


if __name__ == "__main__":
    main()
