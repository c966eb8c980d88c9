"""Cross-modal search for the service: the embedder and the FAISS indexes loaded once, reused.

``engine.index.search_samples`` loads the index on every call, right for the CLI; a server
keeps the loaded index and reloads it only when ``WS/index/<modality>.json`` (written last by
``build_index``) changes. The embedder is loaded at the first search (a few seconds), once.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from engine.index import INDEX_DIR, VectorIndex, VectorIndexError, load_index, read_meta
from engine.workspace import Workspace


class SearchUnavailable(RuntimeError):
    """The workspace has no index for the target, or the query model does not match it."""


class Searcher:
    """Text or image -> the nearest samples of one index (``image``: text->image and image->image)."""

    def __init__(self, ws: Workspace, embedder_spec: str | None = None, torch_threads: int | None = None):
        self.ws = ws
        self.embedder_spec = embedder_spec
        self.torch_threads = torch_threads  # set process-wide when the embedder loads (None: torch's default)
        self._embedder = None
        self._indexes: dict[str, tuple[float, VectorIndex]] = {}
        self._lock = threading.Lock()  # one load at a time; searches themselves run in parallel

    def embedder(self):
        if self._embedder is None:
            with self._lock:
                if self._embedder is None:
                    import torch

                    from engine.embed import load_embedder

                    if self.torch_threads:
                        torch.set_num_threads(self.torch_threads)
                    self._embedder = load_embedder(self.embedder_spec)
        return self._embedder

    def index(self, modality: str) -> VectorIndex:
        """The loaded index, reloaded when its metadata file is newer than the copy held."""
        meta_path = self.ws.path(INDEX_DIR, f"{modality}.json")
        try:
            stamp = os.stat(meta_path).st_mtime_ns if self.ws.is_local else 0.0
        except FileNotFoundError:
            stamp = None
        held = self._indexes.get(modality)
        if held is not None and stamp is not None and held[0] == stamp:
            return held[1]
        with self._lock:
            if read_meta(self.ws, modality) is None:
                raise SearchUnavailable(f"no {modality} index in this workspace: run 'zcurate index'")
            try:
                vindex = load_index(self.ws, modality)
            except VectorIndexError as e:
                raise SearchUnavailable(str(e)) from None
            self._indexes[modality] = (stamp, vindex)
            return vindex

    def query_text(self, text: str) -> np.ndarray:
        return self.embedder().encode_texts([text])[0]

    def query_image(self, image) -> np.ndarray:
        return self.embedder().encode_images([image])[0]

    def search(self, query: np.ndarray, modality: str, k: int) -> list[dict]:
        """Rows of rank, sample_id, score (cosine), caption, uri, best first."""
        vindex = self.index(modality)
        model_id = self.embedder().model_id
        if vindex.meta.model_id and vindex.meta.model_id != model_id:
            raise SearchUnavailable(
                f"the {modality} index holds {vindex.meta.model_id} vectors, the service embeds with "
                f"{model_id}: set ZCURATE_EMBEDDER"
            )
        hits = vindex.search_ids(np.asarray(query, np.float32).reshape(1, -1), k)[0]
        by_id = self.sample_rows([sample_id for sample_id, _ in hits])
        return [
            {"rank": rank, "sample_id": sample_id, "score": score, **by_id.get(sample_id, {})}
            for rank, (sample_id, score) in enumerate(hits, start=1)
        ]

    def sample_rows(self, sample_ids: list[str]) -> dict[str, dict]:
        """caption and uri of the given samples (a filtered scan: Parquet statistics skip row groups)."""
        files = self.ws.shard_files("samples")
        if not files or not sample_ids:
            return {}
        dataset = pads.dataset(files, format="parquet", filesystem=self.ws.fs)
        wanted = pc.field("sample_id").isin(pa.array(sample_ids, pa.string()))
        table = dataset.to_table(columns=["sample_id", "caption", "uri"], filter=wanted)
        return {r["sample_id"]: {"caption": r["caption"], "uri": r["uri"]} for r in table.to_pylist()}
