"""Finding, reading and comparing the manifests a workspace holds (``WS/manifests/<stage>/<id>``),
and the recipe a manifest's sidecar holds (:func:`sidecar_recipe`). Writes nothing."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.curation.manifest import ManifestError
from engine.curation.manifest_assembly import summarize_values
from engine.curation.recipe import Recipe, parse_recipe
from engine.workspace import Workspace


def list_manifests(ws: Workspace, stage: str | None = None) -> list[dict]:
    """Every complete manifest (sidecar present): id, stage, rows, seed, path; sorted by stage, id."""
    result = []
    stages = [stage] if stage else [d for d in _subdirs(ws, ws.manifests)]
    for s in sorted(stages):
        for name in ws.list_files(f"{ws.manifests}/{s}", ".json"):
            manifest_id = name[:-5]
            if not ws.exists(ws.manifests, s, f"{manifest_id}.parquet"):
                continue
            sidecar = json.loads(ws.read_text(f"{ws.manifests}/{s}/{name}"))
            result.append(
                {
                    "manifest_id": manifest_id,
                    "stage": s,
                    "rows": sidecar["counts"]["rows"],
                    "seed": sidecar["seed"],
                    "size": sidecar["size"],
                    "path": ws.path(ws.manifests, s, f"{manifest_id}.parquet"),
                }
            )
    return result


def _subdirs(ws: Workspace, rel: str) -> list[str]:
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(ws.path(rel), allow_not_found=True)
    return sorted(i.base_name for i in ws.fs.get_file_info(selector) if i.type == pafs.FileType.Directory)


def find_manifest(ws: Workspace, manifest_id: str) -> tuple[str, dict]:
    """(Parquet path, sidecar) of a manifest id (or a unique prefix of one)."""
    matches = [m for m in list_manifests(ws) if m["manifest_id"].startswith(manifest_id)]
    if not manifest_id or not matches:
        raise ManifestError(f"no manifest {manifest_id!r} in {ws.path(ws.manifests)}")
    if len(matches) > 1:
        raise ManifestError(
            f"manifest id {manifest_id!r} is ambiguous: {', '.join(m['manifest_id'] for m in matches)}"
        )
    m = matches[0]
    return m["path"], json.loads(ws.read_text(f"{ws.manifests}/{m['stage']}/{m['manifest_id']}.json"))


def sidecar_recipe(sidecar: dict, where: str) -> Recipe:
    """The recipe a sidecar holds, its filters in the order the build applied them.

    The sidecar's JSON sorts its keys, so its recipe lists the filters by name; the filters' order
    decides the per-filter counts and the order of the score columns, and ``counts.filters`` kept
    it. A rebuild from the sidecar (the trainer's refresh) thus writes the same bytes as a build
    from the recipe file.
    """
    data = dict(sidecar["recipe"])
    applied = [c["filter"] for c in sidecar.get("counts", {}).get("filters", [])]
    if sorted(applied) == sorted(data.get("filters", {})):
        data["filters"] = {name: data["filters"][name] for name in applied}
    return parse_recipe(data, where)


def read_manifest_table(ws: Workspace, manifest_id: str) -> pa.Table:
    path, _ = find_manifest(ws, manifest_id)
    return pq.read_table(path, filesystem=ws.fs)


def _flatten(data, prefix: str = "") -> dict[str, object]:
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def diff_manifests(ws: Workspace, a: str, b: str, top: int = 10) -> dict:
    """What changed from manifest a to b: rows added/removed, weight changes, concept shares, recipe keys."""
    path_a, side_a = find_manifest(ws, a)
    path_b, side_b = find_manifest(ws, b)
    cols = ["sample_id", "weight", "kind", "source_sample_id"]
    ta = pq.read_table(path_a, columns=cols, filesystem=ws.fs)
    tb = pq.read_table(path_b, columns=cols, filesystem=ws.fs)

    def weights(t: pa.Table) -> dict[tuple, float]:
        keys = zip(t["sample_id"].to_pylist(), t["source_sample_id"].to_pylist(), strict=True)
        out: dict[tuple, float] = {}
        for key, w in zip(keys, t["weight"].to_pylist(), strict=True):
            out[key] = out.get(key, 0.0) + w  # draws of an expanded manifest add up
        return out

    wa, wb = weights(ta), weights(tb)
    sa, sb = sum(wa.values()), sum(wb.values())
    common = wa.keys() & wb.keys()
    ratios = np.array([(wb[k] / sb) / (wa[k] / sa) for k in common]) if common else np.zeros(0)
    recipe_a, recipe_b = _flatten(side_a["recipe"]), _flatten(side_b["recipe"])
    recipe_changes = [
        {"key": k, "a": recipe_a.get(k), "b": recipe_b.get(k)}
        for k in sorted(recipe_a.keys() | recipe_b.keys())
        if recipe_a.get(k) != recipe_b.get(k)
    ]
    shares_a = {c["concept_id"]: c for c in side_a["concept_marginal"]["after"]["top"]}
    shares_b = {c["concept_id"]: c for c in side_b["concept_marginal"]["after"]["top"]}
    return {
        "a": side_a["manifest_id"],
        "b": side_b["manifest_id"],
        "rows": {
            "a": len(wa),
            "b": len(wb),
            "only_a": len(wa.keys() - wb.keys()),
            "only_b": len(wb.keys() - wa.keys()),
            "common": len(common),
        },
        "share_ratio_b_over_a": summarize_values(ratios),
        "concept_marginal": {
            side: {
                k: side_x["concept_marginal"]["after"][k]
                for k in ("concepts", "entropy", "normalized_entropy", "gini")
            }
            for side, side_x in (("a", side_a), ("b", side_b))
        },
        "top_concepts": {"a": list(shares_a.values())[:top], "b": list(shares_b.values())[:top]},
        "recipe_changes": recipe_changes,
        "seed": {"a": side_a["seed"], "b": side_b["seed"]},
        "feedback_changed": side_a.get("feedback_fingerprint") != side_b.get("feedback_fingerprint"),
    }
