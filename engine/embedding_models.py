"""The embedding models of a workspace: whose vectors it holds, and which model is active.

A workspace can hold the vectors of several CLIP models side by side (the embedded default at 256-d,
a ViT-B-32 at 512-d, a ViT-L-14 at 768-d...), each in its own ``embeddings`` directory with its own
FAISS indexes. One of them is **active**: the table name ``embeddings`` (the catalog view, the
manifest's ``clip_score``, dedup, zero-shot tags, search, the API) means the active model's table.
``zcurate models use KEY`` switches it (``engine.vectors.switch``). The record is ``WS/models.json``::

    {"active": "vit-b-32-3f2a1c4d5e6f",
     "models": {"vit-b-32-3f2a1c4d5e6f": {"model_id": "ViT-B-32@b32.pt#3f2a1c4d5e6f",
                                          "spec": "ViT-B-32@/abs/b32.pt", "dim": 512,
                                          "table_dir": "embeddings/vit-b-32-3f2a1c4d5e6f",
                                          "index_dir": "index/vit-b-32-3f2a1c4d5e6f"}}}

A model's table is also addressable by name as ``embeddings@KEY``. A workspace written before
models were recorded keeps its vectors in ``embeddings/`` and its indexes in ``index/``: the first
read adopts them as a model with those directories (nothing moves).

This module reads and writes the record through the workspace's own file methods, so it imports
no workspace code (``engine.workspace`` imports it).
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import asdict, dataclass

import pyarrow.compute as pc
import pyarrow.parquet as pq

from engine import schema

MODELS_FILE = "models.json"
EMBEDDINGS = "embeddings"  # the table name; "embeddings@KEY" names one model's table
LEGACY_TABLE_DIR, LEGACY_INDEX_DIR = "embeddings", "index"  # before models were recorded


class ModelRegistryError(ValueError):
    """An unknown model key, or a record that does not parse; the message is one line."""


@dataclass
class EmbeddingModel:
    """One model whose vectors a workspace holds."""

    key: str  # short, path-safe name: the architecture and the weights' hash
    model_id: str  # Embedder.model_id, stored in every embeddings row
    spec: str | None  # what loads it again (engine.vectors.model_specs); None: not recorded
    dim: int
    table_dir: str  # relative to the workspace root
    index_dir: str


def model_key(model_id: str) -> str:
    """``ViT-B-32@b32.pt#3f2a1c4d5e6f`` -> ``vit-b-32-3f2a1c4d5e6f``: the architecture and the weights'
    hash (the tag when there is no hash), lower case, safe in a path."""
    arch, _, rest = model_id.partition("@")
    weights, _, digest = rest.partition("#")
    arch = arch.removeprefix("local-dir:").rsplit("/", 1)[-1] if arch.startswith("local-dir:") else arch
    tail = digest or weights
    return re.sub(r"[^a-z0-9]+", "-", f"{arch}-{tail}".lower()).strip("-")[:80]


def split_table_name(name: str) -> tuple[str, str | None]:
    """``embeddings@KEY`` -> (``embeddings``, KEY); any other name -> (name, None)."""
    base, _, key = name.partition("@")
    return base, (key or None)


def _read(ws) -> dict:
    if ws.exists(MODELS_FILE):
        try:
            return json.loads(ws.read_text(MODELS_FILE))
        except (ValueError, OSError) as e:
            raise ModelRegistryError(f"{ws.path(MODELS_FILE)} cannot be read: {e}") from e
    return _adopt_legacy(ws)


def _write(ws, record: dict) -> None:
    ws.write_text(MODELS_FILE, json.dumps(record, indent=1, sort_keys=True))


def _adopt_legacy(ws) -> dict:
    """The record of a workspace whose vectors sit in ``embeddings/`` with no record: that model,
    read from its first shard, with the old directories (written, so later reads are one file)."""
    shards = ws.list_files(LEGACY_TABLE_DIR, ".parquet")
    if not shards:
        return {"active": None, "models": {}}
    path = ws.path(LEGACY_TABLE_DIR, shards[0])
    table = pq.read_table(path, columns=["model_id", "image_vec", "text_vec"], filesystem=ws.fs)
    ids = [m for m in table["model_id"].to_pylist() if m]
    model_id = ids[0] if ids else "unknown"
    key = model_key(model_id)
    dim = vector_width(table)
    entry = EmbeddingModel(key, model_id, None, dim, LEGACY_TABLE_DIR, LEGACY_INDEX_DIR)
    record = {"active": key, "models": {key: _entry_dict(entry)}}
    with contextlib.suppress(OSError):  # a read-only workspace: adopt in memory on every read
        _write(ws, record)
    return record


def vector_width(table) -> int:
    """The width of an embeddings table's vectors (a fixed-size list, or the first vector's length)."""
    for name in ("image_vec", "text_vec"):
        kind = table.schema.field(name).type if name in table.schema.names else None
        if kind is not None and getattr(kind, "list_size", -1) > 0:
            return kind.list_size
        if kind is not None:
            lengths = pc.list_value_length(table[name]).drop_null()
            if len(lengths):
                return int(lengths[0].as_py())
    return schema.EMBED_DIM


def _entry_dict(model: EmbeddingModel) -> dict:
    data = asdict(model)
    data.pop("key")
    return data


def list_models(ws) -> list[EmbeddingModel]:
    """Every model the workspace holds vectors of (or is set up to), in key order."""
    models = _read(ws)["models"]
    return [EmbeddingModel(key, **models[key]) for key in sorted(models)]


def active_model(ws) -> EmbeddingModel | None:
    """The model that ``embeddings`` means, or None before anything was embedded."""
    record = _read(ws)
    key = record.get("active")
    return EmbeddingModel(key, **record["models"][key]) if key else None


def get_model(ws, key: str | None = None) -> EmbeddingModel | None:
    """The model of ``key`` (None: the active one); an unknown key raises ModelRegistryError."""
    if key is None:
        return active_model(ws)
    models = _read(ws)["models"]
    if key not in models:
        known = ", ".join(sorted(models)) or "none yet"
        raise ModelRegistryError(
            f"no model {key!r} in this workspace (models: {known}; 'zcurate models' lists them)"
        )
    return EmbeddingModel(key, **models[key])


def find_model(ws, text: str) -> EmbeddingModel:
    """A model by key, model_id or spec (what a user types after ``zcurate models use``)."""
    for model in list_models(ws):
        if text in (model.key, model.model_id, model.spec):
            return model
    return get_model(ws, text)  # raises with the list of keys


def register_model(ws, model_id: str, spec: str | None, dim: int, activate: bool = False) -> EmbeddingModel:
    """Record a model (idempotent); the first model of a workspace becomes active.

    A model already recorded keeps its directories; its spec is updated when given (the same
    weights can move on disk).
    """
    record = _read(ws)
    key = model_key(model_id)
    known = record["models"].get(key)
    if known and known["dim"] != dim:
        raise ModelRegistryError(f"model {key} is recorded at {known['dim']}-d, now {dim}-d")
    entry = EmbeddingModel(
        key,
        model_id,
        spec or (known or {}).get("spec"),
        dim,
        (known or {}).get("table_dir", f"{EMBEDDINGS}/{key}"),
        (known or {}).get("index_dir", f"{LEGACY_INDEX_DIR}/{key}"),
    )
    before = json.dumps(record, sort_keys=True)
    record["models"][key] = _entry_dict(entry)
    if activate or not record.get("active"):
        record["active"] = key
    if json.dumps(record, sort_keys=True) != before or not ws.exists(MODELS_FILE):
        _write(ws, record)  # only on a change: its time stamp tells tagging the active model moved
    return entry


def set_active(ws, key: str) -> EmbeddingModel:
    """Make ``key`` the active model (recorded atomically); returns it."""
    record = _read(ws)
    model = get_model(ws, key)
    if record.get("active") != key:
        record["active"] = key
        _write(ws, record)
    return model


def table_dir(ws, name: str) -> str:
    """The directory of ``embeddings`` (the active model's) or ``embeddings@KEY``."""
    _, key = split_table_name(name)
    model = get_model(ws, key)
    return model.table_dir if model else LEGACY_TABLE_DIR


def index_dir(ws, key: str | None = None) -> str:
    """The index directory of model ``key`` (None: the active model's)."""
    model = get_model(ws, key)
    return model.index_dir if model else LEGACY_INDEX_DIR


def model_dim(ws, name: str) -> int | None:
    """The vector width of ``embeddings`` or ``embeddings@KEY``; None before anything was embedded."""
    model = get_model(ws, split_table_name(name)[1])
    return model.dim if model else None
