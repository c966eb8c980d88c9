"""Switching a workspace's active embedding model, and what follows from it.

The active model (``engine.embedding_models``) is what ``clip_score``, dedup, zero-shot tags,
search, the API and the dashboard use. Switching it recomputes exactly what depends on it, in
order, and leaves the rest:

1. both FAISS indexes of the new model (extended, or built when it has none);
2. ``dedup`` from its image index (communities and representatives follow its vectors);
3. tags: the text tags are recomputed as well (they are the same text, one pass writes both) and
   the zero-shot tags now come from the new model's image vectors;
4. the catalog (the ``embeddings`` view and ``clip_score`` now read the new model's table).

Samples, signals, OCR, safety and every model's embeddings stay as they are; manifests built
before keep their bytes (a manifest built after has another id: its inputs changed).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engine.catalog import refresh_catalog
from engine.embedding_models import EmbeddingModel, active_model, find_model, set_active
from engine.workspace import Workspace


class ModelSwitchError(ValueError):
    """A model the workspace does not hold, or one with no vectors to switch to."""


@dataclass
class SwitchSummary:
    """What ``use_model`` did."""

    model: EmbeddingModel
    previous: str | None  # the key of the model active before
    changed: bool  # False: it was already active, nothing was recomputed
    indexed: dict[str, int] = field(default_factory=dict)  # modality -> vectors in its index
    dedup: object | None = None  # engine.vectors.dedup.DedupSummary
    tagging: object | None = None  # engine.graph.tagging.TagSummary (None: graph extra missing)
    seconds: float = 0.0


def use_model(ws: Workspace, which: str, progress=None, force: bool = False) -> SwitchSummary:
    """Make the model named ``which`` (key, model_id or spec) active and recompute what uses it.

    ``force`` recomputes even when it is already active (after its embeddings changed).
    """
    from engine.vectors.dedup import dedup_workspace
    from engine.vectors.index import build_index

    started = time.monotonic()
    model = find_model(ws, which)
    if not ws.list_shards(f"embeddings@{model.key}"):
        raise ModelSwitchError(
            f"model {model.key} has no embeddings yet: run 'zcurate embed --model {model.spec} "
            f"--workspace {ws.root}' first"
        )
    before = active_model(ws)
    previous = before.key if before else None
    summary = SwitchSummary(model, previous, changed=previous != model.key)
    if not summary.changed and not force:
        return summary
    set_active(ws, model.key)
    for modality in ("image", "text"):
        meta = build_index(ws, modality, progress=progress, model=model.key)
        summary.indexed[modality] = meta.ntotal if meta else 0
    summary.dedup = dedup_workspace(ws, model=model.key)
    summary.tagging = retag(ws, progress)
    refresh_catalog(ws)
    summary.seconds = round(time.monotonic() - started, 3)
    return summary


def retag(ws: Workspace, progress=None):
    """Tag every sample again (zero-shot tags from the active model); None without the graph extra."""
    try:
        from engine.graph.tagging import TagConfig
    except ImportError:  # networkx comes with the [all] extra
        return None
    from pipelines.tag_job import run_tag_job

    if not ws.list_shards("samples"):
        return None
    return run_tag_job(ws, TagConfig(), progress=progress)  # on Ray where the tag job would be
