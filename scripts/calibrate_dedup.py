"""Calibrate the dedup thresholds on real near-duplicates: edited copies of openclipart images.

    PYTHONPATH=$PWD .venv/bin/python scripts/calibrate_dedup.py [--model SPEC] [--output FILE]

Takes ``--originals`` openclipart images, makes the six edits of ``tests/neardup.py`` of each
(resized, re-encoded, cropped, flipped, recoloured, watermarked), and ``--distractors`` other
openclipart images. Embeds everything with the embedder (default: the embedded default model)
and hashes it with the profile's pHash, then reports:

* per edit: the cosine of copy and original (quantiles) and the share of copies at or above each
  candidate threshold; the pHash Hamming distance (quantiles) and the share within each d;
* unrelated pairs (two different openclipart files, originals and distractors): how many pairs
  and what share of images reach each threshold / distance. openclipart has near-duplicates of
  its own (a star with 13 or 17 points, one arrow in four colours, one file in two folders), so
  these counts are an upper bound on false positives; the top pairs are printed for a look.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from engine.profiling.profile import analysis_copy, phash64
from engine.vectors.model_specs import load_embedder
from tests.neardup import EDITS, decode, edit, load_original, openclipart_files

THRESHOLDS = (0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96)
DISTANCES = (0, 2, 4, 6, 8, 10)


def phash_of(image) -> int:
    return phash64(analysis_copy(image).convert("L"))


def embed(embedder, images, batch=64) -> np.ndarray:
    return np.concatenate(
        [embedder.encode_images(images[s : s + batch]) for s in range(0, len(images), batch)]
    )


def quantiles(x: np.ndarray) -> dict:
    return {
        q: round(float(np.quantile(x, p)), 4)
        for q, p in (("min", 0), ("p05", 0.05), ("p50", 0.5), ("max", 1))
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="embedder spec (default: the embedded default)")
    parser.add_argument("--originals", type=int, default=200)
    parser.add_argument("--distractors", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    started = time.perf_counter()
    embedder = load_embedder(args.model)
    files = openclipart_files(args.originals + args.distractors, args.seed)
    originals = [load_original(f) for f in files]
    copies = {name: [decode(edit(im, name)[0]) for im in originals[: args.originals]] for name in EDITS}
    base_vec = embed(embedder, originals)
    base_hash = np.array([phash_of(im) for im in originals], np.uint64)
    report = {"model_id": embedder.model_id, "originals": args.originals, "distractors": args.distractors}
    report["edits"] = {}
    for name, images in copies.items():
        vec = embed(embedder, images)
        cos = np.einsum("ij,ij->i", vec, base_vec[: args.originals])
        hashes = np.array([phash_of(im) for im in images], np.uint64)
        dist = np.bitwise_count(hashes ^ base_hash[: args.originals])
        # is the original the copy's nearest neighbour among all originals and distractors?
        top1 = (np.argmax(vec @ base_vec.T, axis=1) == np.arange(args.originals)).mean()
        report["edits"][name] = {
            "cosine": quantiles(cos),
            "share_at_or_above": {str(t): round(float((cos >= t).mean()), 3) for t in THRESHOLDS},
            "original_is_top1": round(float(top1), 3),
            "phash_distance": quantiles(dist.astype(float)),
            "share_within_d": {str(d): round(float((dist <= d).mean()), 3) for d in DISTANCES},
        }
    sims = base_vec @ base_vec.T
    n = len(originals)
    upper = np.triu(np.ones((n, n), bool), 1)
    hd = np.bitwise_count(base_hash[:, None] ^ base_hash[None, :])
    np.fill_diagonal(sims, -1)
    report["unrelated"] = {
        "pairs": int(upper.sum()),
        "nearest_cosine": quantiles(sims.max(axis=1)),
        "pairs_at_or_above": {str(t): int((sims[upper] >= t).sum()) for t in THRESHOLDS},
        "images_with_a_pair_at_or_above": {
            str(t): round(float((sims.max(1) >= t).mean()), 4) for t in THRESHOLDS
        },
        "pairs_within_d": {str(d): int((hd[upper] <= d).sum()) for d in DISTANCES},
    }
    i, j = np.nonzero(upper & (sims >= THRESHOLDS[2]))
    top = np.argsort(-sims[i, j])[:12]
    report["unrelated"]["top_pairs"] = [
        [
            round(float(sims[i[t], j[t]]), 3),
            os.path.relpath(files[i[t]], "/usr/share/openclipart/png"),
            os.path.relpath(files[j[t]], "/usr/share/openclipart/png"),
        ]
        for t in top
    ]
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=1)
    print(text)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
