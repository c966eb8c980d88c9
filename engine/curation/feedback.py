"""Trainer feedback -> concept multipliers, and user boosts: the two inputs that reweight a manifest.

The Active Curation Engine (DESIGN.md section 4) closes the loop between training and data:

- The trainer reports its flow-matching loss per concept (``engine.s3dit.concept_loss``, files
  ``feedback/<stage>/<step, 9 digits>.parquet``). :func:`concept_multipliers` turns every report of
  a stage into one multiplier per concept, DoReMi-style (Xie et al. 2023): concepts whose loss
  stays above the others get a larger share of the next manifest, bounded so that no concept
  takes over or disappears.
- A user who found candidates for a gap (``engine.curation.gaps``) up-weights them with
  :func:`write_boost` (files ``boosts/<stage>/<hash>.parquet``); :func:`read_boosts` folds them.

The manifest builder (engine/curation/manifest.py) multiplies a sample's weight by
:func:`sample_multipliers` and its boost, and puts both fingerprints in the manifest id, so a new
report or a new boost gives a new manifest.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import schema
from engine.workspace import Workspace

MAX_BOOST = 100.0  # one sample at most 100x its weight: a boost fills a gap, it must not become the data
EXCESS_CLIP = 3.0  # a z-score beyond 3 is an outlier report, not a stronger signal
EPS = 1e-6  # std of equal losses is 0: the excess is then 0/eps = 0, not 0/0
TOP = 5  # concepts listed at each end in the summary
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")  # a stage is one path component
# A concept id as an older trainer wrote it (a string): non-negative, 18 digits always fit in int64.
_LEGACY_ID = r"^[0-9]{1,18}$"


@dataclass(frozen=True)
class FeedbackConfig:
    """The exponentiated-gradient step of :func:`concept_multipliers`."""

    step_size: float = 0.5  # eta: a concept 1 std above the mean gains e^0.5 = 1.65x per report before
    # normalisation, so a persistent gap reaches the cap in a handful of reports
    smoothing: float = 0.1  # DoReMi's smoothing: 10% of the mass stays uniform, so every concept
    # keeps at least a tenth of its share however low its loss
    cap: float = 4.0  # multipliers stay within [1/4, 4]: one concept at most 16x another, so one noisy
    # report cannot starve or flood the manifest
    min_samples: int = 4  # the loss of fewer draws is noise (one hard image); such rows are not signal


@dataclass(frozen=True)
class FeedbackState:
    """A stage's feedback, ready for the manifest builder."""

    concept_ids: np.ndarray  # int64, sorted: the concepts reports counted for
    multipliers: np.ndarray  # float64, one per concept id; every other concept has 1
    summary: dict  # see concept_multipliers
    fingerprint: str  # sha256 hex of the report files' bytes in step order; "" without reports


# --- concept multipliers ------------------------------------------------------------------------


def _report_losses(ids: np.ndarray, samples: np.ndarray, losses: np.ndarray, min_samples: int):
    """One report's (concept ids, draws, mean loss) per eligible concept, rows of one concept merged
    by draw-weighted mean; eligible: at least ``min_samples`` draws and a finite loss."""
    concepts, inverse = np.unique(ids, return_inverse=True)
    draws = np.bincount(inverse, weights=samples, minlength=len(concepts))
    total = np.bincount(inverse, weights=samples * losses, minlength=len(concepts))
    mean = np.divide(total, draws, out=np.full(len(concepts), np.nan), where=draws > 0)
    keep = (draws >= min_samples) & np.isfinite(mean)
    return concepts[keep], draws[keep], mean[keep]


def concept_multipliers(
    reports: pa.Table, config: FeedbackConfig = FeedbackConfig()
) -> tuple[np.ndarray, np.ndarray, dict]:
    """One multiplier per reported concept from every report of a stage, applied in step order.

    A bounded exponentiated-gradient ascent on the per-concept loss, like DoReMi's domain weights
    (Xie et al. 2023) but without a reference model, so the "excess loss" is relative to the mean.
    For each report r (the rows of one step), over the concepts c with at least ``min_samples``
    draws and a finite loss L_c (n_c draws)::

        Lbar     = sum_c n_c L_c / sum_c n_c                      draw-weighted mean loss of r
        excess_c = clip((L_c - Lbar) / (std_c' L_c' + eps), -3, 3)   std over those concepts, unweighted
        log a_c += eta * excess_c                                 a concept first counted starts at 0
        a        = (1 - smoothing) * a / mean(a) + smoothing      over every concept counted so far
        a        = clip(a, 1 / cap, cap)

    and log a is carried to the next report. A report with one eligible concept has no signal
    (excess 0). Rows with a null concept_id (draws without a concept) are skipped and counted.
    Concepts never counted keep multiplier 1 and are not returned.

    Args:
        reports: rows of schema.CONCEPT_LOSS (int64 concept ids).

    Returns:
        (concept_ids int64 sorted, multipliers float64, summary) where summary is
        {"reports", "steps", "concepts", "config", "top": [(id, multiplier)] the 5 highest,
        "bottom": the 5 lowest, "skipped_ids"}; plain Python values, ready for JSON.
    """
    if reports.num_rows:
        reports = reports.sort_by([("step", "ascending")])  # stable: rows keep their order within a step
    valid = np.asarray(reports["concept_id"].is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    ids = reports["concept_id"].fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    steps = reports["step"].to_numpy(zero_copy_only=False).astype(np.int64)
    samples = reports["samples"].fill_null(0).to_numpy(zero_copy_only=False).astype(np.float64)
    losses = reports["loss_mean"].fill_null(np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
    log_a: dict[int, float] = {}
    report_steps = sorted(set(steps.tolist()))
    for step in report_steps:
        rows = (steps == step) & valid
        concepts, draws, loss = _report_losses(ids[rows], samples[rows], losses[rows], config.min_samples)
        if len(concepts) == 0:
            continue
        mean = float(np.sum(draws * loss) / np.sum(draws))
        excess = np.clip((loss - mean) / (float(np.std(loss)) + EPS), -EXCESS_CLIP, EXCESS_CLIP)
        for concept, e in zip(concepts.tolist(), excess.tolist(), strict=True):
            log_a[concept] = log_a.get(concept, 0.0) + config.step_size * e
        known = np.array(sorted(log_a), dtype=np.int64)
        a = np.exp(np.array([log_a[c] for c in known.tolist()]))
        a = (1 - config.smoothing) * a / a.mean() + config.smoothing
        a = np.clip(a, 1 / config.cap, config.cap)
        log_a = dict(zip(known.tolist(), np.log(a).tolist(), strict=True))
    concept_ids = np.array(sorted(log_a), dtype=np.int64)
    multipliers = np.exp(np.array([log_a[c] for c in concept_ids.tolist()], dtype=np.float64))
    ranked = sorted(zip(concept_ids.tolist(), multipliers.tolist(), strict=True), key=lambda p: (-p[1], p[0]))
    summary = {
        "reports": len(report_steps),
        "steps": report_steps,
        "concepts": len(concept_ids),
        "config": asdict(config),
        "top": ranked[:TOP],
        "bottom": sorted(ranked, key=lambda p: (p[1], p[0]))[:TOP],
        "skipped_ids": int((~valid).sum()),
    }
    return concept_ids, multipliers, summary


def _check_stage(stage: str) -> str:
    if not _NAME.match(stage or ""):
        raise ValueError(f"bad stage name {stage!r}: use letters, digits, '_', '-' and '.'")
    return stage


def _read_files(ws: Workspace, rel_dir: str, names: list[str]) -> tuple[list[pa.Table], str]:
    """The files as tables, and the sha256 of their names and bytes in the given order ("" if none).

    The bytes are read once and parsed from memory, so the fingerprint is of exactly what was read.
    """
    digest, tables = hashlib.sha256(), []
    for name in names:
        with ws.fs.open_input_stream(ws.path(rel_dir, name)) as f:
            data = f.read()
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
        tables.append(pq.read_table(pa.BufferReader(data)))
    return tables, (digest.hexdigest() if names else "")


def _as_report(table: pa.Table) -> pa.Table:
    """A report file as schema.CONCEPT_LOSS. An older trainer wrote string concept ids ("" for draws
    without a concept): digits become the int64 id, anything else null, so old workspaces still work."""
    ids = table["concept_id"]
    if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
        digits = pc.match_substring_regex(ids, _LEGACY_ID)
        ids = pc.if_else(digits, ids, pa.scalar(None, ids.type)).cast(pa.int64())
        table = table.set_column(table.schema.get_field_index("concept_id"), "concept_id", ids)
    return table.cast(schema.CONCEPT_LOSS)


def stage_feedback(ws: Workspace, stage: str, config: FeedbackConfig = FeedbackConfig()) -> FeedbackState:
    """Every trainer report of ``stage`` folded into concept multipliers (:func:`concept_multipliers`);
    reports written with string concept ids by an older trainer are read too (:func:`_as_report`)."""
    rel_dir = f"{ws.feedback}/{_check_stage(stage)}"
    # File names are the step, zero-padded: sort by number so a step past 10**9 still comes last.
    names = sorted(ws.list_files(rel_dir, ".parquet"), key=lambda n: (int(n.split(".")[0]), n))
    tables, fingerprint = _read_files(ws, rel_dir, names)
    reports = (
        pa.concat_tables([_as_report(t) for t in tables]) if tables else schema.CONCEPT_LOSS.empty_table()
    )
    concept_ids, multipliers, summary = concept_multipliers(reports, config)
    return FeedbackState(concept_ids, multipliers, summary, fingerprint)


def sample_multipliers(
    offsets: np.ndarray, concept_ids_flat: np.ndarray, concept_ids: np.ndarray, multipliers: np.ndarray
) -> np.ndarray:
    """Per-sample factor: the mean multiplier of the sample's concepts.

    The samples' concept lists come as CSR arrays: sample i has
    ``concept_ids_flat[offsets[i]:offsets[i + 1]]`` (``offsets``: n + 1 int64, from 0 to the flat
    length). A concept missing from ``concept_ids`` (sorted int64, never reported) counts as 1; a
    sample without concepts gets 1::

        factor_i = mean_{c in concepts(i)} m_c,   m_c = multipliers[c] if reported else 1

    Returns:
        float64 array of n factors.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    flat = np.asarray(concept_ids_flat, dtype=np.int64)
    concept_ids = np.asarray(concept_ids, dtype=np.int64)
    multipliers = np.asarray(multipliers, dtype=np.float64)
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(flat) or np.any(np.diff(offsets) < 0):
        raise ValueError("offsets must rise from 0 to the length of concept_ids_flat")
    if len(concept_ids) != len(multipliers) or np.any(np.diff(concept_ids) <= 0):
        raise ValueError("concept_ids must be sorted, unique, and as long as multipliers")
    n, counts = len(offsets) - 1, np.diff(offsets)
    m = np.ones(len(flat), dtype=np.float64)
    if len(concept_ids):  # a hash lookup: 4x faster than np.searchsorted on unsorted ids (25M in 0.7 s)
        pos = pc.index_in(pa.array(flat), value_set=pa.array(concept_ids)).fill_null(-1).to_numpy()
        found = pos >= 0
        m[found] = multipliers[pos[found]]
    sums = np.bincount(np.repeat(np.arange(n), counts), weights=m, minlength=n)
    return np.divide(sums, counts, out=np.ones(n, dtype=np.float64), where=counts > 0)


# --- user boosts --------------------------------------------------------------------------------


def write_boost(ws: Workspace, stage: str, sample_ids: list[str], factor: float, reason: str) -> str:
    """Boost samples of a stage's next manifests by ``factor``; returns the file written.

    Written atomically to ``boosts/<stage>/<sha256 of the content>[:16].parquet`` (sample_id,
    factor, reason; sample ids de-duplicated and sorted), so the same boost given twice is one
    file and does not compound. ``factor`` must be finite and in (0, 100].
    """
    rel_dir = f"{ws.boosts}/{_check_stage(stage)}"
    factor = float(factor)
    if not (math.isfinite(factor) and 0 < factor <= MAX_BOOST):
        raise ValueError(f"boost factor must be > 0 and <= {MAX_BOOST:g}, got {factor!r}")
    ids = sorted({str(s) for s in sample_ids})
    if not ids:
        raise ValueError("no sample ids to boost")
    content = json.dumps({"sample_ids": ids, "factor": factor, "reason": str(reason)}, sort_keys=True)
    name = hashlib.sha256(content.encode()).hexdigest()[:16]
    table = pa.table(
        {"sample_id": ids, "factor": [factor] * len(ids), "reason": [str(reason)] * len(ids)},
        schema=schema.BOOSTS,
    )
    rel = f"{rel_dir}/{name}.parquet"
    ws.write_parquet(rel, table)
    return ws.path(rel)


def read_boosts(ws: Workspace, stage: str) -> tuple[pa.Table, str]:
    """Every boost of a stage folded into one factor per sample; returns (table, fingerprint).

    factor = min(100, product of the sample's factors over every boost file). The table
    (sample_id, factor) is sorted by sample_id; the fingerprint is the sha256 of the files' names
    and bytes in name order ("" when there are none).
    """
    rel_dir = f"{ws.boosts}/{_check_stage(stage)}"
    tables, fingerprint = _read_files(ws, rel_dir, ws.list_files(rel_dir, ".parquet"))
    out_schema = pa.schema([schema.BOOSTS.field("sample_id"), schema.BOOSTS.field("factor")])
    if not tables:
        return out_schema.empty_table(), fingerprint
    boosts = pa.concat_tables([t.select(out_schema.names).cast(out_schema) for t in tables])
    if boosts.num_rows == 0:
        return out_schema.empty_table(), fingerprint
    # A stable sort keeps file order within a sample, so the product is the same on every run.
    boosts = boosts.take(pc.sort_indices(boosts, [("sample_id", "ascending")]))
    ids = boosts["sample_id"].to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    factors = np.multiply.reduceat(boosts["factor"].to_numpy(), starts)
    table = pa.table(
        {"sample_id": pa.array(ids[starts], pa.string()), "factor": np.minimum(factors, MAX_BOOST)},
        schema=out_schema,
    )
    return table, fingerprint
