"""Each arm's training manifest, and what the engine kept of each defect class.

- ``raw``: every file of the pool, weight 1 (what a trainer without curation reads; files that
  are not images are skipped by the loader, as they would be by any trainer that survives them).
- ``random``: a uniform random subset of the pool the size of the curated manifest, weight 1.
- ``curated``: the engine run end to end on the pool as a user runs it, ``zcurate curate POOL``
  then ``zcurate manifest --stage lowres`` (buckets set to the experiment's resolution).
- ``active``: the curated manifest, with the Active Curation loop on: the trainer reports its
  loss per concept and follows the manifest the engine rebuilds from it (``zcurate train`` does).

The curated step runs the command line in a subprocess, so nothing of the experiment leaks into
the engine's process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from bench.payoff.pool import CLEAN, DEFECTS

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def uniform_manifest(paths: list[str], captions: list[str], resolution: int) -> pa.Table:
    """A hand-made manifest: sample_id = file name, weight 1, one square bucket."""
    n = len(paths)
    return pa.table(
        {
            "sample_id": [os.path.basename(p) for p in paths],
            "uri": paths,
            "caption": captions,
            "weight": pa.array(np.ones(n), pa.float64()),
            "bucket_h": pa.array([resolution] * n, pa.int32()),
            "bucket_w": pa.array([resolution] * n, pa.int32()),
        }
    )


def raw_manifest(truth: pa.Table, resolution: int) -> pa.Table:
    return uniform_manifest(truth["path"].to_pylist(), truth["caption"].to_pylist(), resolution)


def random_manifest(raw: pa.Table, rows: int, seed: int) -> pa.Table:
    """``rows`` rows of the raw manifest, uniformly at random without replacement, for ``seed``."""
    pick = np.sort(
        np.random.default_rng(seed).choice(raw.num_rows, size=min(rows, raw.num_rows), replace=False)
    )
    return raw.take(pa.array(pick))


def eval_manifest(evaluation: pa.Table, resolution: int) -> pa.Table:
    return uniform_manifest(evaluation["path"].to_pylist(), evaluation["caption"].to_pylist(), resolution)


def zcurate(*args: str, num_cpus: int | None = None) -> str:
    """Run ``zcurate ARGS`` (``python -m cli``) from the repository root; its output, or raise."""
    command = [sys.executable, "-m", "cli", *args]
    if num_cpus is not None and args[0] == "curate":
        command += ["--num-cpus", str(num_cpus)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command[2:])} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    return done.stdout


# Each ablation turns one step of the lowres recipe off (``zcurate manifest --set``).
ABLATIONS = {
    "no-filters": ("filters={}",),
    "no-dedup": ('dedup.keep="all"',),
    "no-tilts": ("tilts=[]",),
    "no-balance": ('balance.method="none"',),
}


def build_lowres(workspace: str, resolution: int, overrides: tuple[str, ...] = ()) -> str:
    """``zcurate manifest --stage lowres`` at the experiment's resolution; the manifest's path."""
    sets = [f"buckets.sizes=[[{resolution},{resolution}]]", *overrides]
    args = ["manifest", "--workspace", workspace, "--stage", "lowres", "--seed", "0"]
    output = zcurate(*args, *[part for item in sets for part in ("--set", item)])
    last = output.strip().splitlines()[-1]  # "wrote PATH" or "found PATH"
    return last.split(" ", 1)[1]


def curate_and_build(pool_dir: str, workspace: str, resolution: int, num_cpus: int | None) -> str:
    """``zcurate curate`` then ``zcurate manifest --stage lowres``; returns the manifest's path."""
    zcurate("curate", pool_dir, "--workspace", workspace, num_cpus=num_cpus)
    return build_lowres(workspace, resolution)


def copy_manifest(path: str, dest: str) -> str:
    """The manifest's Parquet alone (no sidecar: a trainer reading it does not ask for rebuilds)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    pq.write_table(pq.read_table(path), dest)
    return dest


def defect_table(truth: pa.Table, manifest: pa.Table) -> list[dict]:
    """Per truth class: pool rows, rows the manifest kept, and the share of sampling weight.

    ``kept`` counts pool files with a row of positive weight in the manifest; for near-duplicate
    floods the original stays a clean row, so every kept copy is a defect kept. ``weight_share`` is
    the class's share of the manifest's total weight, beside ``pool_share``, its share of the raw
    pool (what uniform sampling gives it).
    """
    names = [os.path.basename(u) for u in manifest["uri"].to_pylist()]
    weights = manifest["weight"].to_numpy(zero_copy_only=False)
    weight_of: dict[str, float] = {}
    for name, w in zip(names, weights, strict=True):
        weight_of[name] = weight_of.get(name, 0.0) + float(w)
    total = sum(weight_of.values())
    rows = []
    for label in (CLEAN, *DEFECTS):
        files = pc.filter(truth["file"], pc.equal(truth["defect"], label)).to_pylist()
        kept = [f for f in files if weight_of.get(f, 0.0) > 0]
        rows.append(
            {
                "class": label,
                "pool_rows": len(files),
                "kept": len(kept),
                "kept_fraction": len(kept) / len(files) if files else None,
                "pool_share": len(files) / truth.num_rows,
                "weight_share": sum(weight_of[f] for f in kept) / total if total else 0.0,
            }
        )
    return rows


def curation_scores(table: list[dict]) -> dict:
    """Precision and recall of the manifest as a filter: a clean row kept is a true positive."""
    by = {r["class"]: r for r in table}
    kept_clean = by[CLEAN]["kept"]
    kept_all = sum(r["kept"] for r in table)
    return {
        "precision": kept_clean / kept_all if kept_all else 0.0,  # kept rows that are clean
        "clean_recall": kept_clean / by[CLEAN]["pool_rows"],  # clean rows kept
        "defects_removed": {label: 1 - (by[label]["kept_fraction"] or 0.0) for label in DEFECTS},
    }


def write_json(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
