"""Cross-modal search for the service: the embedder and the FAISS indexes loaded once, reused.

``engine.vectors.search.search_samples`` loads the index on every call, right for the CLI; a
server keeps the loaded index and reloads it only when the active model's
``WS/index/<model>/<modality>.json`` (written last by ``build_index``) changes, or the active model
does (``zcurate models use``). The embedder is the active model's (or ``ZCURATE_EMBEDDER``'s),
loaded at the first search (a few seconds) and again only when the active model changes. Hits'
captions and uris come from an in-memory lookup of the samples table, and recent text queries'
vectors are kept.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from engine.curation.pool import PoolIndex, align
from engine.embedding_models import active_model
from engine.vectors.index import VectorIndex, VectorIndexError, index_meta_path, load_index, read_meta
from engine.workspace import Workspace

LOOKUP_MAX_ROWS = 2_000_000  # samples whose id, caption and uri a searcher holds (~300 MB at 100-character
# captions) so a search finds its hits' rows at once; a bigger workspace scans the table per search
TEXT_CACHE = 4096  # text query vectors kept: 4096 x 256 float32 = 4 MB


class SearchUnavailable(RuntimeError):
    """The workspace has no index for the target, or the query model does not match it."""


class Searcher:
    """Text or image -> the nearest samples of one index (``image``: text->image and image->image)."""

    def __init__(self, ws: Workspace, embedder_spec: str | None = None, torch_threads: int | None = None):
        self.ws = ws
        self.embedder_spec = embedder_spec
        self.torch_threads = torch_threads  # set process-wide when the embedder loads (None: torch's default)
        self._embedder: tuple[str | None, object] | None = None  # (spec, Embedder)
        self._indexes: dict[str, tuple[tuple, VectorIndex]] = {}
        self._lock = threading.Lock()  # one load at a time; searches themselves run in parallel
        self._texts: OrderedDict[tuple, np.ndarray] = OrderedDict()  # (model, text) -> vector, LRU
        self._text_lock = threading.Lock()
        self._lookup: tuple[tuple, tuple[PoolIndex, pa.Table] | None] | None = None  # (stamp, lookup)

    def query_spec(self) -> str | None:
        """The spec queries are embedded with: ZCURATE_EMBEDDER's, else the active model's."""
        if self.embedder_spec:
            return self.embedder_spec
        active = active_model(self.ws)
        return active.spec if active else None

    def embedder(self):
        spec = self.query_spec()
        if self._embedder is None or self._embedder[0] != spec:
            with self._lock:
                if self._embedder is None or self._embedder[0] != spec:
                    import torch

                    from engine.vectors.model_specs import load_embedder

                    if self.torch_threads:
                        torch.set_num_threads(self.torch_threads)
                    self._embedder = (spec, load_embedder(spec))
        return self._embedder[1]

    def index(self, modality: str) -> VectorIndex:
        """The active model's index, reloaded when its metadata file is newer than the copy held."""
        meta_path = index_meta_path(self.ws, modality)
        try:
            stamp = (meta_path, os.stat(meta_path).st_mtime_ns if self.ws.is_local else 0.0)
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
        """The text's vector; the last TEXT_CACHE texts' vectors are kept (a search box sees the same
        queries again and again, and encoding one costs ~20 ms of CPU where the search costs ~1 ms)."""
        embedder = self.embedder()
        key = (embedder.model_id, text)
        with self._text_lock:
            vector = self._texts.get(key)
            if vector is not None:
                self._texts.move_to_end(key)
                return vector
        vector = embedder.encode_texts([text])[0]
        vector.setflags(write=False)  # shared between requests
        with self._text_lock:
            self._texts[key] = vector
            while len(self._texts) > TEXT_CACHE:
                self._texts.popitem(last=False)
        return vector

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
        """caption and uri of the given samples: from the in-memory lookup, or a filtered scan of the
        samples table when the workspace is too big to hold one."""
        files = self.ws.shard_files("samples")
        if not files or not sample_ids:
            return {}
        lookup = self.lookup(files)
        if lookup is None:
            dataset = pads.dataset(files, format="parquet", filesystem=self.ws.fs)
            wanted = pc.field("sample_id").isin(pa.array(sample_ids, pa.string()))
            table = dataset.to_table(columns=["sample_id", "caption", "uri"], filter=wanted)
        else:
            index, table = lookup
            rows = align(index, pa.array(sample_ids, pa.string()))
            table = table.take(pa.array(rows[rows >= 0]))
        return {r["sample_id"]: {"caption": r["caption"], "uri": r["uri"]} for r in table.to_pylist()}

    def lookup(self, files: list[str]) -> tuple[PoolIndex, pa.Table] | None:
        """(id index, sample_id/caption/uri table) of every sample, kept until the samples folder
        changes; None above LOOKUP_MAX_ROWS samples. Random hex ids defeat Parquet's min/max
        statistics, so without it every search scans the whole table (47 ms at 100k samples)."""
        try:
            stamp = (len(files), os.stat(self.ws.path("samples")).st_mtime_ns if self.ws.is_local else 0)
        except FileNotFoundError:
            return None
        held = self._lookup
        if held is not None and held[0] == stamp:
            return held[1]
        with self._lock:
            rows = sum(pq.ParquetFile(f, filesystem=self.ws.fs).metadata.num_rows for f in files)
            value = None
            if rows <= LOOKUP_MAX_ROWS:
                dataset = pads.dataset(files, format="parquet", filesystem=self.ws.fs)
                table = dataset.to_table(columns=["sample_id", "caption", "uri"]).combine_chunks()
                value = (PoolIndex.build(table["sample_id"].combine_chunks()), table)
            self._lookup = (stamp, value)
            return value
