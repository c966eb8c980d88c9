"""A validation slice held out of the training manifests by sample id (``--val-fraction F``).

A row is held out when the hash of its ``sample_id`` falls in the first ``F`` of the hash range:
the same rows for every seed, stage, run and manifest version (a rebuilt manifest keeps its ids),
so two runs with the same fraction are scored on the same images, and a held-out row is never
drawn for training in any stage. The held-out text-to-image rows of every stage's manifest (each
``sample_id`` once, from its first stage) are the validation set of
:mod:`engine.s3dit.validation`; held-out image-to-image rows are only kept out of training.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HASH_BYTES = 8  # 64-bit hash: the fraction is resolved to 1 part in 1.8e19


def holdout_mask(sample_ids: list[str], fraction: float) -> np.ndarray:
    """(N,) bool: which ``sample_ids`` are held out at ``fraction`` (in [0, 1))."""
    if not 0 <= fraction < 1:
        raise ValueError(f"--val-fraction must be in [0, 1), not {fraction}")
    limit = fraction * 2 ** (8 * HASH_BYTES)
    return np.array(
        [
            int.from_bytes(hashlib.blake2b(s.encode(), digest_size=HASH_BYTES).digest(), "big") < limit
            for s in sample_ids
        ],
        dtype=bool,
    )


def training_rows(table: pa.Table, fraction: float | None) -> pa.Table:
    """The manifest without its held-out rows (``fraction`` None or 0: every row)."""
    if not fraction:
        return table
    return table.filter(pa.array(~holdout_mask(table["sample_id"].to_pylist(), fraction)))


def held_out_rows(tables: list[pa.Table], fraction: float) -> pa.Table:
    """The held-out text-to-image rows of the stage manifests, each ``sample_id`` once (its
    first stage's row: its bucket and caption)."""
    parts, seen = [], set()
    for table in tables:
        held = table.filter(pa.array(holdout_mask(table["sample_id"].to_pylist(), fraction)))
        held = held.filter(pc.is_null(held["source_uri"]))  # text-to-image rows only
        new = []
        for sample_id in held["sample_id"].to_pylist():
            new.append(sample_id not in seen)
            seen.add(sample_id)
        held = held.filter(pa.array(new, type=pa.bool_()))
        parts.append(held.select(["sample_id", "uri", "caption", "bucket_h", "bucket_w"]))
    return pa.concat_tables(parts, promote_options="permissive")
