"""A noisy pool with known truth, and a clean evaluation set, built from openclipart by a seed.

Only openclipart pairs the embedded default's heads never saw are used: the embedder's test split
(``engine.vectors.embedder_training.unseen_openclipart_ids``, grouped by caption, file name and
pHash), minus every pair whose normalised caption or file name also occurs in the rest of
openclipart. The candidates are deduplicated by caption and by an 8x8 average hash, then
shuffled by the seed: the first ``eval`` go to the evaluation set, the next ``clean`` are the
pool's base images. The two sets share no image, caption, file name or perceptual hash.

The pool is shaped like a web crawl (rates in :class:`PoolConfig`): of the base pairs, a share gets
another pair's caption (``mismatched_caption``), a share is degraded (``low_quality``: heavy blur,
tiny and upscaled, JPEG quality 5, letterbox) and a share gets a stamped word the caption does not
mention (``watermark``); the rest stay ``clean``. Then come extra rows: a few images re-uploaded
with light edits tens of times (``near_duplicate``; the original stays in as a clean row) and
``junk`` (noise, blank canvases, corrupt files) with captions borrowed from the pool.

Written: ``pool/NNNNN.{png,jpg}`` + ``pool/NNNNN.txt`` (a folder source, names in a seeded random
order that says nothing about the defect), ``eval/eNNNN.png`` + ``.txt``, and beside them (not in
the source the engine reads) ``truth.parquet`` (one row per pool file: defect, subtype, base image,
caption given, true caption) and ``eval.parquet``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from bench.payoff import defects

CLEAN, MISMATCHED, LOW_QUALITY, WATERMARK, NEAR_DUPLICATE, JUNK = (
    "clean",
    "mismatched_caption",
    "low_quality",
    "watermark",
    "near_duplicate",
    "junk",
)
DEFECTS = (MISMATCHED, NEAR_DUPLICATE, LOW_QUALITY, WATERMARK, JUNK)
MAX_SIDE = 256  # pool and evaluation images are stored at most this large (the trainer uses 32-64 px)


@dataclass(frozen=True)
class PoolConfig:
    clean: int = 210  # base pairs of the pool (distinct images and captions)
    eval: int = 64  # clean held-out pairs for evaluation, never in the pool
    mismatched: float = 0.25  # share of base pairs given another base pair's caption
    low_quality: float = 0.12  # share of base pairs degraded (the four kinds in turn)
    watermark: float = 0.08  # share of base pairs with a stamped word
    flood_images: int = 3  # base images re-uploaded with light edits ...
    flood_copies: int = 20  # ... this many times each
    junk: float = 0.06  # extra rows, as a share of the base pairs: noise, blank, corrupt in turn
    seed: int = 0
    scan_limit: int | None = None  # openclipart records read (None: all of them)


def normalise(caption: str) -> str:
    return re.sub(r"\s+", " ", caption.lower()).strip()


def average_hash(image: Image.Image) -> int:
    """64-bit average hash: 8x8 grey thumbnail, one bit per pixel above the mean."""
    grey = np.asarray(image.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=np.float32)
    bits = (grey > grey.mean()).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def heldout_candidates(scan_limit: int | None) -> list[dict]:
    """Openclipart pairs the embedder's heads never saw, deduplicated by caption and average hash,
    in a fixed order (by image hash). Each: name, caption, image (RGB, at most MAX_SIDE)."""
    from engine.profiling.ingest import IngestConfig, ingest_record
    from engine.profiling.source import load_source
    from engine.vectors.embedder_training import unseen_openclipart_ids

    source = load_source("openclipart")
    rows = source.list_records()
    if scan_limit is not None:
        rows = rows.slice(0, scan_limit)
    held, train_captions, train_names, config = [], set(), set(), IngestConfig()
    unseen = unseen_openclipart_ids()
    for record in source.read_records(rows):
        result = ingest_record(record, source.key, config)
        if not result.ok:
            continue
        caption, image_id = result.row["caption"], result.row["image_id"]
        if result.row["sample_id"] in unseen:
            image = result.image.convert("RGB")
            image.thumbnail((MAX_SIDE, MAX_SIDE))
            held.append({"name": record.name, "caption": caption, "image_id": image_id, "image": image})
        else:
            train_captions.add(normalise(caption))
            train_names.add(record.name.lower())
    held.sort(key=lambda c: c["image_id"])
    out, seen_captions, seen_hashes = [], set(), set()
    for c in held:
        key, ahash = normalise(c["caption"]), average_hash(c["image"])
        if key in train_captions or c["name"].lower() in train_names:
            continue
        if key in seen_captions or ahash in seen_hashes:
            continue
        seen_captions.add(key)
        seen_hashes.add(ahash)
        out.append(c)
    return out


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(n) that moves every index (n >= 2)."""
    while True:
        perm = rng.permutation(n)
        if not (perm == np.arange(n)).any():
            return perm


def assign_defects(n: int, cfg: PoolConfig, rng: np.random.Generator) -> list[str]:
    """The defect of each base pair: disjoint shares, in a seeded random order."""
    counts = {
        MISMATCHED: round(n * cfg.mismatched),
        LOW_QUALITY: round(n * cfg.low_quality),
        WATERMARK: round(n * cfg.watermark),
    }
    labels = [label for label, k in counts.items() for _ in range(k)]
    if len(labels) > n:
        raise ValueError(f"the defect shares of {n} base pairs add up to more than the pairs")
    labels += [CLEAN] * (n - len(labels))
    return [labels[i] for i in rng.permutation(n)]


def base_rows(base: list[dict], cfg: PoolConfig, rng: np.random.Generator) -> list[dict]:
    """One pool row per base pair, with its defect applied."""
    labels = assign_defects(len(base), cfg, rng)
    swapped = [i for i, label in enumerate(labels) if label == MISMATCHED]
    wrong = {
        i: base[swapped[j]]["caption"] for i, j in zip(swapped, derangement(len(swapped), rng), strict=True)
    }
    low_kinds = list(defects.LOW_QUALITY)
    rows, low_seen = [], 0
    for i, (pair, label) in enumerate(zip(base, labels, strict=True)):
        subtype, image = "", pair["image"]
        if label == LOW_QUALITY:
            subtype = low_kinds[low_seen % len(low_kinds)]
            low_seen += 1
            data, ext = defects.LOW_QUALITY[subtype](image, rng)
        elif label == WATERMARK:
            subtype = "stamped_word"
            data, ext = defects.watermark(image, rng)
        else:
            data, ext = defects.encode(image)
        caption = wrong.get(i, pair["caption"])
        rows.append(truth_row(data, ext, label, subtype, i, caption, pair["caption"]))
    return rows


def truth_row(data: bytes, ext: str, defect: str, subtype: str, base: int, caption: str, true: str) -> dict:
    return {
        "data": data,
        "ext": ext,
        "defect": defect,
        "subtype": subtype,
        "base_index": base,
        "caption": caption,
        "true_caption": true,
    }


def extra_rows(base: list[dict], rows: list[dict], cfg: PoolConfig, rng: np.random.Generator) -> list[dict]:
    """Near-duplicate floods of clean base images, and junk with borrowed captions."""
    clean = [r["base_index"] for r in rows if r["defect"] == CLEAN]
    out = []
    for i in rng.choice(clean, size=min(cfg.flood_images, len(clean)), replace=False).tolist():
        for _ in range(cfg.flood_copies):
            data, ext = defects.light_edit(base[i]["image"], rng)
            out.append(
                truth_row(data, ext, NEAR_DUPLICATE, "light_edit", i, base[i]["caption"], base[i]["caption"])
            )
    valid = rows[0]["data"]
    for k in range(round(len(base) * cfg.junk)):
        subtype = ("noise", "blank", "corrupt")[k % 3]
        size = int(rng.integers(96, MAX_SIDE + 1))
        if subtype == "noise":
            data, ext = defects.noise(rng, size)
        elif subtype == "blank":
            data, ext = defects.blank(rng, size)
        else:
            data, ext = defects.corrupt(rng, valid)
        caption = rows[int(rng.integers(len(rows)))]["caption"]
        out.append(truth_row(data, ext, JUNK, subtype, -1, caption, ""))
    return out


def write_pair(folder: str, stem: str, data: bytes, ext: str, caption: str) -> str:
    path = os.path.join(folder, stem + ext)
    with open(path, "wb") as f:
        f.write(data)
    with open(os.path.join(folder, stem + ".txt"), "w", encoding="utf-8") as f:
        f.write(caption)
    return path


def build_pool(out_dir: str, cfg: PoolConfig = PoolConfig()) -> dict:
    """Write the pool, the evaluation set and their truth under ``out_dir``; returns a summary.

    Raises ValueError when openclipart has too few held-out candidates for the config.
    """
    candidates = heldout_candidates(cfg.scan_limit)
    need = cfg.eval + cfg.clean
    if len(candidates) < need:
        raise ValueError(f"{len(candidates)} held-out openclipart pairs; the config needs {need}")
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(candidates))
    evaluation = [candidates[i] for i in order[: cfg.eval]]
    base = [candidates[i] for i in order[cfg.eval : need]]
    rows = base_rows(base, cfg, rng)
    rows += extra_rows(base, rows, cfg, rng)
    pool_dir, eval_dir = os.path.join(out_dir, "pool"), os.path.join(out_dir, "eval")
    os.makedirs(pool_dir, exist_ok=True)
    os.makedirs(eval_dir, exist_ok=True)
    truth = []
    for position, i in enumerate(rng.permutation(len(rows)).tolist()):
        row = rows[i]
        path = write_pair(pool_dir, f"{position:05d}", row["data"], row["ext"], row["caption"])
        sha = hashlib.sha256(row["data"]).hexdigest()
        truth.append(
            {
                **{k: v for k, v in row.items() if k not in ("data", "ext")},
                "file": os.path.basename(path),
                "path": path,
                "sha256": sha,
            }
        )
    truth.sort(key=lambda r: r["file"])
    pq.write_table(pa.Table.from_pylist(truth), os.path.join(out_dir, "truth.parquet"))
    eval_rows = []
    for k, pair in enumerate(evaluation):
        data, ext = defects.encode(pair["image"])
        path = write_pair(eval_dir, f"e{k:04d}", data, ext, pair["caption"])
        eval_rows.append({"file": os.path.basename(path), "path": path, "caption": pair["caption"]})
    pq.write_table(pa.Table.from_pylist(eval_rows), os.path.join(out_dir, "eval.parquet"))
    counts = {label: sum(r["defect"] == label for r in truth) for label in (CLEAN, *DEFECTS)}
    return {
        "config": asdict(cfg),
        "candidates": len(candidates),
        "pool_rows": len(truth),
        "eval_rows": len(eval_rows),
        "defects": counts,
    }
