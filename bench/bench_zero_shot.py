"""Benchmark: CLIP zero-shot tag precision on captions the threshold was not calibrated on.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_zero_shot.py --output bench/results-zero-shot.json

Data: Tux Paint's stamps (Debian ``tuxpaint-stamps-default``: about 800 drawings, each with an
English description written by its author), a source the embedded default never trained on and
that nothing here is tuned on (reserved for independent evaluation). Each stamp is copied into an
image folder with its description's first (English) line as the ``.txt`` caption, then goes the
way a user's folder goes: ``run_curate`` (ingest, profile, embed on a local Ray) and
``tag_workspace`` with the embedded default (caption tags, mined concepts, zero-shot candidates:
each image's ``clip_top_k`` nearest concept texts, the threshold calibrated by the tagging rule).

Reported from the tagging summary (``engine.graph.tagging.TagSummary``), all against the text
tags, so every precision is a lower bound (a caption leaves things out):

* ``clip_threshold`` / ``clip_precision`` / ``clip_recall``: the rule calibrated on all candidates
  (in-sample: what the threshold was chosen to reach, ``TagConfig.clip_min_precision``);
* ``clip_precision_unseen``: calibrated on one half of the captions, measured on the other (halves
  by normalised caption, so a repeated caption is never on both sides), the two averaged;
* ``clip_base_precision``: every candidate, no threshold (the baseline the threshold must beat).

Nothing is chosen here; the script's own environment and commit go into the file.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TUXPAINT_ROOT = "/usr/share/tuxpaint/stamps"


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def write_stamp_folder(folder: str, caption_of=None) -> dict:
    """Copy every stamp that has a description into ``folder`` (same relative path) with its first
    line as the caption sidecar (or ``caption_of(relative path, that line)``); return counts."""
    stamps = 0
    distinct = set()
    for path in sorted(glob.glob(os.path.join(TUXPAINT_ROOT, "**", "*.png"), recursive=True)):
        text_path = os.path.splitext(path)[0] + ".txt"
        if "_shadow" in path or not os.path.exists(text_path):
            continue
        with open(text_path, encoding="utf-8", errors="replace") as handle:
            caption = handle.readline().strip()
        if not caption:
            continue
        relative = os.path.relpath(path, TUXPAINT_ROOT)
        caption = caption_of(relative, caption) if caption_of else caption
        target = os.path.join(folder, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(path, target)
        with open(os.path.splitext(target)[0] + ".txt", "w", encoding="utf-8") as handle:
            handle.write(caption + "\n")
        stamps += 1
        distinct.add(caption.lower())
    return {"stamps": stamps, "distinct_captions": len(distinct)}


def curate_stamps(root: str, num_cpus: int, caption_of=None) -> tuple:
    """(workspace, folder counts, curate summary): the stamps written under ``root/stamps`` and
    curated into ``root/ws`` the user's way (ingest, profile, embed on a local Ray; no tags yet)."""
    from engine.profiling.source import load_source
    from engine.workspace import Workspace
    from pipelines.curate import run_curate
    from pipelines.stages import build_image_stages

    folder, ws = os.path.join(root, "stamps"), Workspace(os.path.join(root, "ws"))
    data = write_stamp_folder(folder, caption_of)
    stages = build_image_stages(["embed"], device="cpu")
    curated = run_curate(
        load_source(folder), ws, num_cpus=num_cpus, progress=False, image_stages=stages, tag=False
    )
    return ws, data, curated


def run_meta(script: str, started: float) -> dict:
    """The results file's ``meta``: command, commit, machine, seconds."""
    return {
        "command": f"bench/{script} " + " ".join(sys.argv[1:]),
        "commit": git_commit(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "seconds": round(time.perf_counter() - started, 1),
    }


def write_report(report: dict, output: str | None) -> None:
    """Print the report; write it to ``output`` (atomically) when given."""
    text = json.dumps(report, indent=1)
    print(text)
    if output:
        with open(output + ".tmp", "w") as handle:
            handle.write(text + "\n")
        os.replace(output + ".tmp", output)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: PYTHONPATH=$PWD .venv/bin/python bench/bench_zero_shot.py --output /tmp/z.json",
    )
    parser.add_argument("--output", default=None, help="write the results here (JSON)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    args = parser.parse_args()
    if not os.path.isdir(TUXPAINT_ROOT):
        raise SystemExit(f"{TUXPAINT_ROOT} is missing: apt-get install tuxpaint-stamps-default")

    from engine.graph.tagging import TagConfig, tag_workspace
    from engine.vectors.model_specs import load_embedder

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="zcurate-bench-zero-shot-") as tmp:
        ws, data, curated = curate_stamps(tmp, args.num_cpus)
        config = TagConfig()  # the embedded default embedder, the default rule
        s = tag_workspace(ws, config=config, progress=False)
    if s.clip_skipped:
        raise SystemExit(f"zero-shot tagging did not run: {s.clip_skipped}")
    report = {
        "data": {"source": "tuxpaint-stamps-default", **data, "usable": curated.ok},
        "model_id": load_embedder(None).model_id,
        "rule": "lowest cosine at which the candidates above it are confirmed by the text tags at "
        "least clip_min_precision of the time",
        "config": {"clip_top_k": config.clip_top_k, "clip_min_precision": config.clip_min_precision},
        "unseen_split": "halves by sha256 of the normalised caption: calibrate on one, measure on the other",
        "results": {
            "clip_candidates": s.clip_candidates,
            "clip_base_precision": round(s.clip_base_precision, 4),
            "clip_threshold": round(s.clip_threshold, 4),
            "clip_precision": round(s.clip_precision, 4),
            "clip_recall": round(s.clip_recall, 4),
            "clip_precision_unseen": None
            if s.clip_precision_unseen is None
            else round(s.clip_precision_unseen, 4),
            "clip_unseen_kept": s.clip_unseen_kept,
            "clip_tags": s.by_source.get("clip", 0),
            "text_tags": s.tags - s.by_source.get("clip", 0),
            "tagged_samples": s.tagged_samples,
            "concepts": s.concepts,
        },
        "meta": run_meta("bench_zero_shot.py", started),
    }
    write_report(report, args.output)


if __name__ == "__main__":
    main()
