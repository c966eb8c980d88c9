"""The trainer's report to the engine: flow-matching loss per concept over recent batches.

The Active Curation Engine (DESIGN.md section 4, engine/curation/feedback.py) reweights a stage's
next manifest from these reports: concepts the model still fails on (high loss) get a larger share.
Concept ids are the graph's int64 ids of the manifest's ``concept_ids``; draws whose row names no
concept are reported under a null id. :func:`send_feedback` writes a report to
``feedback/<stage>/<step>.parquet`` in the workspace (schema.CONCEPT_LOSS);
``engine.s3dit.service.report_feedback`` sends it to a running service instead when one is named.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pyarrow as pa

from engine import schema
from engine.workspace import Workspace

NO_CONCEPT = None  # the concept_id of draws whose manifest row names no concept (null in the report)


def concept_losses(
    stage: str,
    step: int,
    manifest: str,
    concept_ids: list[list[int]],
    losses: list[float],
) -> pa.Table:
    """Aggregate per-draw losses by concept (a draw counts once for each of its concepts).

    Args:
        concept_ids: for each draw, the int64 concept_ids of its manifest row (may be empty).
        losses: for each draw, its flow-matching loss.

    Returns:
        One row per concept, the null concept (draws without one) first, then by concept_id
        (schema.CONCEPT_LOSS).
    """
    by_concept: dict[int | None, list[float]] = defaultdict(list)
    for concepts, loss in zip(concept_ids, losses, strict=True):
        for concept in {int(c) for c in concepts} or {NO_CONCEPT}:
            by_concept[concept].append(float(loss))
    rows = []
    for concept in sorted(by_concept, key=lambda c: (c is not None, c or 0)):
        values = np.asarray(by_concept[concept], dtype=np.float64)
        rows.append(
            {
                "stage": stage,
                "step": step,
                "manifest": manifest,
                "concept_id": concept,
                "samples": len(values),
                "loss_mean": float(values.mean()),
                "loss_std": float(values.std()),
            }
        )
    return pa.Table.from_pylist(rows, schema=schema.CONCEPT_LOSS)


def send_feedback(ws: Workspace, report: pa.Table) -> str:
    """Hand a concept-loss report to the engine; returns where it went.

    Written atomically to ``feedback/<stage>/<step, 9 digits>.parquet``, so the engine's feedback
    step (and ``zcurate sql``) reads whole reports only, in step order.
    """
    if report.num_rows == 0:
        raise ValueError("an empty concept-loss report")
    stage, step = report["stage"][0].as_py(), report["step"][0].as_py()
    rel = ws.feedback_rel(stage, step)
    ws.write_parquet(rel, report.cast(schema.CONCEPT_LOSS))
    return ws.path(rel)


def read_feedback(ws: Workspace, stage: str) -> pa.Table:
    """Every report of a stage, in step order (empty with the schema when none)."""
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    selector = pafs.FileSelector(ws.path(ws.feedback, stage), allow_not_found=True)
    files = sorted(i.path for i in ws.fs.get_file_info(selector) if i.is_file and i.path.endswith(".parquet"))
    if not files:
        return schema.CONCEPT_LOSS.empty_table()
    return pa.concat_tables(pq.read_table(f, filesystem=ws.fs) for f in files)
