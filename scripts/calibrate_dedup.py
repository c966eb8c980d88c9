"""Calibrate dedup on edited copies of images the embedder never saw, then evaluate the fixed method.

    PYTHONPATH=$PWD .venv/bin/python scripts/calibrate_dedup.py \
        --output bench/results-dedup-calibration.json
    PYTHONPATH=$PWD .venv/bin/python scripts/calibrate_dedup.py --evaluate \
        --output bench/results-neardup-eval.json

Each image set is a list of originals, the ``CRAWL_EDITS`` of ``tests/neardup.py`` planted on the
first ``--originals`` of them (resized, JPEG 30, crops of 10/20/30% of each side's length at a seeded
offset, a solid border, a letterbox, a watermark, a caption bar, a mirror image, colour jitter) and
the rest as distractors: different images that look alike (icons of one theme, stamps of one
class), so precision can fail. Originals are taken once per perceptual hash (a file repeated under
two names, a wallpaper at two resolutions: within ``SAME_PICTURE_BITS``, is one original).

* **Calibration** (default): the Oxygen icon theme's 256 px icons and the MATE wallpapers (Debian
  ``oxygen-icon-theme``, ``mate-backgrounds``; not openclipart, which the default embedder was
  trained on). Every combination of ``THRESHOLDS`` x ``DISTANCES`` x ``CONFIRMS`` x
  ``MIN_COSINES`` runs the dedup path (``engine.vectors.dedup``: exact k-NN pairs, pHash pairs,
  pHash-confirmed pairs, star communities, representatives); the chosen one has the best F1, and
  the best recall at each precision of ``--floors`` is reported beside it.
* **Evaluation** (``--evaluate``): the fixed method (``DedupConfig()``'s defaults) on Tux Paint's
  stamps (``tuxpaint-stamps-default``) and scikit-image's bundled photos, with the same edits, and
  imagehash's pHash within 4 bits (components of that graph) measured in the same run. Nothing is
  chosen here. An original whose file name or pHash (within 4 bits) is a calibration image's is
  left out.

Recall of an edit: the share of its copies in their original's community. Precision: of the images
dedup removes (not representatives), the share whose representative is their own original or a
copy of it (what a trainer would lose otherwise); pair precision (of the pairs of images sharing a
community, the share that are one original's) is reported beside it.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, replace

import imagehash
import numpy as np
import pyarrow as pa
from PIL import Image

from engine.profiling.ingest import to_rgb
from engine.profiling.profile import analysis_copy, laplacian_variance, phash64
from engine.vectors.dedup import (
    DedupConfig,
    edge_threshold,
    find_communities,
    phash_pairs,
    representative_order,
    semantic_pairs,
)
from engine.vectors.index import IndexMeta, VectorIndex
from engine.vectors.model_specs import load_embedder
from engine.vectors.phash_pairs import confirmed
from tests.neardup import CRAWL_EDITS, MAX_SIDE, crawl_edit

THRESHOLDS = tuple(round(x, 2) for x in np.arange(0.74, 0.975, 0.01))
DISTANCES = (-1, 2, 4, 6)  # pHash bits; -1: no pHash pass
CONFIRMS = ((0.8, -1), (0.75, 8), (0.8, 8), (0.8, 12), (0.85, 8), (0.85, 12))  # (cosine, bits);
# -1 bits: no confirmed pairs
MIN_COSINES = (0.5, 0.6, 0.7)  # star rule's diameter bound
KNOBS = ("threshold", "phash_distance", "confirm_threshold", "confirm_distance", "min_cosine")
CALIBRATION_GLOBS = ("/usr/share/icons/oxygen/base/256x256/*/*.png", "/usr/share/backgrounds/mate/*/*.*")
TUXPAINT_GLOB = "/usr/share/tuxpaint/stamps/**/*.png"
SAME_PICTURE_BITS = 2  # two files within 2 bits of pHash are one picture (a wallpaper at two
# resolutions, an icon repeated with another badge pixel), so one original: not a hard negative


def load_image(path: str) -> Image.Image:
    """A file as ingest sees it (alpha flattened over white), at most MAX_SIDE px."""
    with Image.open(path) as im:
        im.load()
        image, _ = to_rgb(im)
    image = image.copy()
    image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    return image


def profile_phash(image: Image.Image) -> int:
    return phash64(analysis_copy(image).convert("L"))


def image_files(globs, seed: int) -> list[str]:
    files = sorted({os.path.realpath(f) for g in globs for f in glob.glob(g, recursive=True)})
    files = [f for f in files if f.lower().endswith((".png", ".jpg", ".jpeg")) and "_shadow" not in f]
    return [files[i] for i in np.random.default_rng(seed).permutation(len(files))]


def pick_originals(files, limit, exclude_names=(), exclude_hashes=np.zeros(0, np.uint64)):
    """Up to ``limit`` (path, image) whose pHash is over ``SAME_PICTURE_BITS`` from every earlier
    pick's (and over 4 bits from every ``exclude_hashes``) and whose file name is not in
    ``exclude_names``."""
    picked, hashes = [], []
    for path in files:
        if os.path.basename(path) in exclude_names:
            continue
        image = load_image(path)
        h = np.uint64(profile_phash(image))
        if hashes and np.bitwise_count(np.array(hashes, np.uint64) ^ h).min() <= SAME_PICTURE_BITS:
            continue
        if len(exclude_hashes) and np.bitwise_count(exclude_hashes ^ h).min() <= 4:
            continue
        picked.append((path, image))
        hashes.append(h)
        if len(picked) == limit:
            break
    return picked


def calibration_originals(limit: int, seed: int):
    return pick_originals(image_files(CALIBRATION_GLOBS, seed), limit)


def evaluation_originals(limit: int, seed: int):
    calib = calibration_originals(10**9, seed)
    names = {os.path.basename(p) for p, _ in calib}
    hashes = np.array([profile_phash(im) for _, im in calib], np.uint64)
    import skimage

    photo_dir = os.path.join(os.path.dirname(skimage.__file__), "data")
    photos = sorted(glob.glob(os.path.join(photo_dir, "*.png")) + glob.glob(os.path.join(photo_dir, "*.jpg")))
    photos = pick_originals(photos, 10**9, names, hashes)
    stamps = pick_originals(image_files((TUXPAINT_GLOB,), seed), limit - len(photos), names, hashes)
    return photos + stamps


def build_set(originals, edited: int):
    """Images, their group (the original's index) and edit name ('original' / 'distractor')."""
    images, group, kind = [], [], []
    for g, (_, image) in enumerate(originals):
        images.append(image)
        group.append(g)
        kind.append("original" if g < edited else "distractor")
    for e, name in enumerate(CRAWL_EDITS):
        for g in range(edited):
            images.append(crawl_edit(originals[g][1], name, seed=1000 * g + e))
            group.append(g)
            kind.append(name)
    return images, np.array(group), np.array(kind)


def features(images, embedder, batch: int = 64) -> dict:
    """Everything dedup reads of an image: vector, the profile's pHash, width/height/blur; and
    imagehash's pHash of the image as the baseline sees it."""
    vec = np.concatenate(
        [embedder.encode_images(images[s : s + batch]) for s in range(0, len(images), batch)]
    )
    grey = [analysis_copy(im).convert("L") for im in images]
    return {
        "vec": vec.astype(np.float16),
        "phash": np.array([phash64(g) for g in grey], np.uint64),
        "baseline": np.array([int(str(imagehash.phash(im)), 16) for im in images], np.uint64),
        "width": np.array([im.width for im in images]),
        "height": np.array([im.height for im in images]),
        "blur": np.array([laplacian_variance(np.asarray(g, np.float64)) for g in grey]),
    }


def run_dedup(f: dict, config: DedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """Community label and quality rank per image by dedup's path: exact k-NN pairs of a flat
    index, pHash pairs, communities (``engine.vectors.dedup.dedup_workspace`` on arrays)."""
    import faiss

    n, dim = f["vec"].shape
    flat = faiss.IndexFlatIP(dim)
    flat.add(f["vec"].astype(np.float32))
    vindex = VectorIndex(
        flat, np.arange(n).astype(str).astype(object), IndexMeta("image", "m", "flat", dim, n, {})
    )
    si, sj, sw, _, _ = semantic_pairs(vindex, f["vec"], edge_threshold(config), config.k)
    distance = np.bitwise_count(f["phash"][si] ^ f["phash"][sj]).astype(np.int64)
    keep = confirmed(sw, distance, config.threshold, config.confirm_threshold, config.confirm_distance)
    pi, pj, d = phash_pairs(f["phash"], config.phash_distance)
    i, j = np.concatenate([si[keep], pi]), np.concatenate([sj[keep], pj])
    w = np.concatenate([sw[keep], 1.0 - d / 64.0])
    quality = pa.table(
        {
            "sample_id": [f"{r:06d}" for r in range(n)],
            "width": f["width"],
            "height": f["height"],
            "blur": f["blur"],
        }
    )
    rank = representative_order(quality)
    labels, _ = find_communities(n, i, j, w, config, rank, f["vec"])
    return labels, rank


def pairs_in(labels: np.ndarray) -> int:
    counts = np.unique(labels, return_counts=True)[1]
    return int((counts * (counts - 1) // 2).sum())


def scores(labels: np.ndarray, rank: np.ndarray, group: np.ndarray, kind: np.ndarray) -> dict:
    """Removal and pair precision, recall over all copies and per edit (module docstring)."""
    truth = np.where(kind == "distractor", group.max() + 1 + np.arange(len(group)), group)
    both = labels * (truth.max() + 1) + truth
    found, true = pairs_in(labels), pairs_in(both)
    original_label = {
        g: labels[r] for r, (g, k) in enumerate(zip(group, kind, strict=True)) if k == "original"
    }
    copy = np.isin(kind, CRAWL_EDITS)
    joined = np.array([labels[r] == original_label[group[r]] for r in np.flatnonzero(copy)])
    per_edit = {name: round(float(joined[kind[copy] == name].mean()), 3) for name in CRAWL_EDITS}
    best = np.full(labels.max() + 1, np.iinfo(np.int64).max)
    np.minimum.at(best, labels, rank)
    rep_of = np.full(labels.max() + 1, -1)
    rep_of[labels[rank == best[labels]]] = np.flatnonzero(rank == best[labels])
    removed = np.flatnonzero(rank != best[labels])  # the duplicates dedup drops
    right = truth[rep_of[labels[removed]]] == truth[removed]
    return {
        "precision": round(float(right.mean()) if len(removed) else 1.0, 3),
        "pair_precision": round(true / max(found, 1), 3),
        "removed": len(removed),
        "recall": round(float(joined.mean()), 3),
        "recall_per_edit": per_edit,
        "found_pairs": found,
        "true_pairs": true,
    }


def baseline_labels(hashes: np.ndarray, rank: np.ndarray, distance: int = 4):
    """imagehash's pHash within ``distance`` bits, joined into connected components."""
    i, j, _ = phash_pairs(hashes, distance)
    config = DedupConfig(method="louvain", louvain_min_size=10**9)
    return find_communities(len(hashes), i, j, np.ones(len(i)), config)[0], rank


def f1(g: dict) -> float:
    return 2 * g["precision"] * g["recall"] / max(g["precision"] + g["recall"], 1e-9)


def calibrate(f, group, kind, floors) -> dict:
    """Every combination of the knobs through ``run_dedup``; the chosen one has the best F1 of
    (removal) precision and recall. Per precision floor, the best recall that reaches it."""
    grid = []
    for t in THRESHOLDS:
        for d in DISTANCES:
            for ct, cd in CONFIRMS:
                for mc in MIN_COSINES:
                    config = DedupConfig(
                        threshold=float(t),
                        phash_distance=d,
                        confirm_threshold=ct,
                        confirm_distance=cd,
                        min_cosine=mc,
                    )
                    knobs = {k: getattr(config, k) for k in KNOBS}
                    grid.append(knobs | scores(*run_dedup(f, config), group, kind))
    best = max(grid, key=lambda g: (round(f1(g), 3), g["precision"]))
    chosen = DedupConfig(**{k: best[k] for k in KNOBS})
    at_floor = {}
    for floor in floors:
        ok = [g for g in grid if g["precision"] >= floor]
        top = max(ok, key=lambda g: (g["recall"], g["precision"])) if ok else None
        at_floor[str(floor)] = top and {k: top[k] for k in (*KNOBS, "precision", "recall")}
    keys = (*KNOBS, "precision", "pair_precision", "recall")
    return {
        "rule": "best F1 of removal precision and copy recall",
        "chosen": best | {"f1": round(f1(best), 3)},
        "louvain_same_edges": scores(*run_dedup(f, replace(chosen, method="louvain")), group, kind),
        "best_recall_at_precision": at_floor,
        "grid": [{k: g[k] for k in keys} for g in grid],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Example: PYTHONPATH=$PWD .venv/bin/python scripts/calibrate_dedup.py --evaluate",
    )
    parser.add_argument(
        "--evaluate", action="store_true", help="evaluate the fixed defaults on the held-out sets"
    )
    parser.add_argument("--model", default=None, help="embedder spec (default: the embedded default)")
    parser.add_argument("--originals", type=int, default=200, help="originals that get the edits")
    parser.add_argument("--distractors", type=int, default=300)
    parser.add_argument(
        "--floors", default="0.95,0.9,0.85", help="calibration: report the best recall at these precisions"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    parser.add_argument(
        "--cache", default=None, help="an .npz of the features: read when it exists, else written"
    )
    args = parser.parse_args()
    started = time.perf_counter()
    embedder = load_embedder(args.model)
    limit = args.originals + args.distractors
    originals = (
        evaluation_originals(limit, args.seed) if args.evaluate else calibration_originals(limit, args.seed)
    )
    images, group, kind = build_set(originals, min(args.originals, len(originals)))
    if args.cache and os.path.exists(args.cache):
        f = dict(np.load(args.cache))
    else:
        f = features(images, embedder)
        if args.cache:
            np.savez(args.cache, **f)
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True, text=True
    )
    report = {
        "commit": commit.stdout.strip() or "unknown",
        "command": "python scripts/calibrate_dedup.py " + " ".join(sys.argv[1:]),
        "mode": "evaluate" if args.evaluate else "calibrate",
        "model_id": embedder.model_id,
        "originals_edited": int((kind == "original").sum()),
        "distractors": int((kind == "distractor").sum()),
        "images": len(images),
        "edits": list(CRAWL_EDITS),
        "sources": sorted({"skimage.data" if "skimage" in p else p.split("/")[3] for p, _ in originals}),
    }
    if args.evaluate:
        config = DedupConfig()
        report["config"] = {k: v for k, v in asdict(config).items() if k in (*KNOBS, "k", "method")}
        report["method"] = scores(*run_dedup(f, config), group, kind)
        report["imagehash_phash_le_4"] = scores(
            *baseline_labels(f["baseline"], run_dedup(f, config)[1]), group, kind
        )
        photo = np.isin(group, [g for g, (p, _) in enumerate(originals) if "skimage" in p])
        report["photos_only"] = scores(
            *run_dedup({k: v[photo] for k, v in f.items()}, config), group[photo], kind[photo]
        )
    else:
        report["calibration"] = calibrate(f, group, kind, [float(x) for x in args.floors.split(",")])
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=1)
    print(text if args.evaluate else json.dumps(report["calibration"]["chosen"], indent=1))
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
