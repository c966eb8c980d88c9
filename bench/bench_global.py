"""Benchmark: the global steps in one process vs on Ray actors (so far: tagging).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_global.py --json bench/results-global.json

Data: ``--n`` distinct captions (openclipart's titles and keywords, then WordNet's glosses and
examples: ``bench_tagging.load_captions``) written as a workspace's ``samples`` shards of 256, no
images (tagging reads captions; without embeddings the zero-shot pass is off). Each way of running
the step gets its own copy of the workspace and its own Python process (``--one``):

* ``local``: ``engine.graph.tagging.tag_workspace`` in one process (today's single-process path);
* ``ray-K``: ``pipelines.tag_job.run_tag_job`` on a local Ray of K CPUs (K actors, the matcher
  sent to each once).

The pickled size of the concept matcher (what each actor receives) is recorded beside them.
Per run: wall seconds, the peak resident memory of the largest process and the peak PSS summed
over the run's process tree (sampled each 0.5 s), and a digest of every ``tags`` and concept file,
which must be the same for every run (the results file says whether it is). On this 2-core
machine ``ray-2`` can at best halve the wall time of the per-shard passes; the reduces between
them (mining, the graph) stay in the driver.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

SHARD = 256  # records per shard, as the curate job's default


def write_workspace(root: str, captions: list[str]):
    """A workspace whose ``samples`` shards hold the captions (usable, no images)."""
    import pyarrow as pa

    from engine import schema
    from engine.workspace import Workspace

    ws = Workspace(root).create()
    for start in range(0, len(captions), SHARD):
        shard_id = f"table-bench-{start // SHARD:05d}"
        rows = []
        for i, caption in enumerate(captions[start : start + SHARD]):
            sample_id = hashlib.blake2b(f"{start + i}:{caption}".encode(), digest_size=16).hexdigest()
            rows.append(
                {
                    "sample_id": sample_id,
                    "image_id": sample_id,
                    "source": "bench",
                    "source_kind": "table",
                    "shard_id": shard_id,
                    "row_index": i,
                    "ref": str(start + i),
                    "uri": f"/nowhere/{start + i}.png",
                    "caption": caption,
                    "status": schema.STATUS_OK,
                    "warnings": [],
                }
            )
        ws.write_shard("samples", shard_id, pa.Table.from_pylist(rows, schema=schema.SAMPLES))
    return ws


def output_digest(root: str) -> str:
    """One digest of every tags and concept-table file (names and bytes)."""
    h = hashlib.sha256()
    for table in ("tags", "concepts", "concept_edges", "concept_ancestors"):
        for path in sorted(Path(root, table).glob("*.parquet")):
            h.update(str(path.relative_to(root)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()


class Peaks(threading.Thread):
    """Peak RSS of the largest process and peak PSS of the whole tree under this process."""

    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.root, self.stop = psutil.Process(), threading.Event()
        self.max_rss = self.tree_pss = 0

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            rss, pss = [], 0
            for p in [self.root, *self.root.children(recursive=True)]:
                try:
                    info = p.memory_full_info()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss.append(info.rss)
                pss += info.pss
            self.max_rss = max(self.max_rss, *rss) if rss else self.max_rss
            self.tree_pss = max(self.tree_pss, pss)
            self.stop.wait(0.5)


def run_one(mode: str, root: str) -> dict:
    """Tag the workspace at ``root`` one way; the run's figures (this process)."""
    from engine.graph.tagging import TagConfig, tag_workspace
    from engine.workspace import Workspace
    from pipelines.tag_job import run_tag_job

    ws, config = Workspace(root), TagConfig(clip=False)
    peaks = Peaks()
    peaks.start()
    began = time.perf_counter()
    if mode == "local":
        summary = tag_workspace(ws, config=config, progress=False)
    else:
        summary = run_tag_job(ws, config, progress=False, num_cpus=int(mode.split("-")[1]), on_ray=True)
    seconds = time.perf_counter() - began
    peaks.stop.set()
    peaks.join()
    return {
        "mode": mode,
        "wall_s": round(seconds, 1),
        "max_process_rss_gib": round(peaks.max_rss / 2**30, 2),
        "tree_pss_gib": round(peaks.tree_pss / 2**30, 2),
        "samples": summary.samples,
        "tags": summary.tags,
        "mined": len(summary.mined),
        "digest": output_digest(root),
    }


def git_commit() -> str:
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: PYTHONPATH=$PWD .venv/bin/python bench/bench_global.py --n 5000 --json /tmp/g.json",
    )
    parser.add_argument("--n", type=int, default=50_000, help="captions (distinct)")
    parser.add_argument("--modes", default="local,ray-1,ray-2", help="local and/or ray-K, comma-separated")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--one", nargs=2, metavar=("MODE", "WORKSPACE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:  # a child: one run, its figures as JSON on stdout
        print(json.dumps(run_one(*args.one)))
        return
    from bench_tagging import load_captions

    from engine.graph.concept_graph import GraphConfig, load_graph, prune_graph
    from engine.graph.matching import build_matcher

    started = time.perf_counter()
    graph = load_graph()
    captions = load_captions(graph)[: args.n]
    matcher = build_matcher(graph, set(prune_graph(graph, GraphConfig()).kept))
    matcher_mib = len(pickle.dumps(matcher, protocol=pickle.HIGHEST_PROTOCOL)) / 2**20  # what Ray ships
    runs = []
    with tempfile.TemporaryDirectory(prefix="zcurate-bench-global-") as tmp:
        write_workspace(os.path.join(tmp, "base"), captions)
        for mode in args.modes.split(","):
            root = os.path.join(tmp, mode)
            shutil.copytree(os.path.join(tmp, "base"), root)
            child = subprocess.run(
                [sys.executable, __file__, "--one", mode, root], capture_output=True, text=True, check=False
            )
            if child.returncode != 0:
                raise SystemExit(f"{mode} failed:\n{child.stderr[-3000:]}")
            runs.append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    report = {
        "step": "tag",
        "captions": len(captions),
        "shards": -(-len(captions) // SHARD),
        "matcher_pickle_mib": round(matcher_mib, 1),
        "runs": runs,
        "same_output": len({r["digest"] for r in runs}) == 1,
        "meta": {
            "command": "bench/bench_global.py " + " ".join(sys.argv[1:]),
            "commit": git_commit(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    print(json.dumps({k: v for k, v in report.items() if k != "runs"}))
    if args.json:
        with open(args.json + ".tmp", "w") as handle:
            handle.write(json.dumps(report, indent=1) + "\n")
        os.replace(args.json + ".tmp", args.json)


if __name__ == "__main__":
    main()
