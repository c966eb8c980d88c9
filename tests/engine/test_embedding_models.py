"""The record of a workspace's embedding models (engine.embedding_models) and how tables resolve."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from engine import schema
from engine.embedding_models import (
    ModelRegistryError,
    active_model,
    find_model,
    list_models,
    model_key,
    register_model,
    set_active,
)
from engine.workspace import Workspace


def embeddings_rows(model_id: str, dim: int, n: int = 3) -> pa.Table:
    rng = np.random.default_rng(dim)
    vectors = rng.normal(size=(n, dim)).astype(np.float16)
    vector = pa.list_(pa.float16(), dim)
    return pa.table(
        {
            "sample_id": [f"s{i}" for i in range(n)],
            "image_id": [f"i{i}" for i in range(n)],
            "model_id": [model_id] * n,
            "image_vec": pa.array(list(vectors), vector),
            "text_vec": pa.array(list(vectors), vector),
            "clip_score": pa.array([0.1] * n, pa.float32()),
        }
    )


def test_model_keys_are_short_path_safe_and_name_the_weights():
    assert model_key("ViT-B-32@b32.pt#3f2a1c4d5e6f") == "vit-b-32-3f2a1c4d5e6f"
    assert model_key("ViT-B-32@laion2b_s34b_b79k") == "vit-b-32-laion2b-s34b-b79k"
    assert model_key("local-dir:/models/my clip#0123abcd") == "my-clip-0123abcd"


def test_the_first_model_is_active_and_each_has_its_own_table(tmp_path):
    ws = Workspace(str(tmp_path)).create()
    assert active_model(ws) is None and ws.table_rel("embeddings") == "embeddings"
    first = register_model(ws, "ViT-B-32@b32.pt#aaaaaaaaaaaa", "ViT-B-32@/w/b32.pt", 512)
    second = register_model(ws, "ViT-S-32@s32.pt#bbbbbbbbbbbb", "ViT-S-32@/w/s32.pt", 384)
    assert active_model(ws).key == first.key  # registering does not switch
    assert ws.table_rel("embeddings") == f"embeddings/{first.key}" == first.table_dir
    assert ws.table_rel(f"embeddings@{second.key}") == f"embeddings/{second.key}"
    assert ws.index_rel() == f"index/{first.key}" and ws.index_rel(second.key) == f"index/{second.key}"
    ws.write_shard(f"embeddings@{second.key}", "s-000000", embeddings_rows(second.model_id, 384))
    assert ws.list_shards("embeddings") == [] and ws.list_shards(f"embeddings@{second.key}") == ["s-000000"]
    assert ws.read_table(f"embeddings@{second.key}").schema.field("image_vec").type.list_size == 384
    assert ws.table_schema("embeddings").field("image_vec").type.list_size == 512
    set_active(ws, second.key)
    assert ws.list_shards("embeddings") == ["s-000000"]
    assert ws.table_names()[-2:] == [f"embeddings@{first.key}", f"embeddings@{second.key}"]
    assert "embeddings" not in ws.table_names()
    assert find_model(ws, "ViT-S-32@/w/s32.pt").key == second.key  # by spec, model id or key


def test_registering_again_changes_nothing_on_disk(tmp_path):
    ws = Workspace(str(tmp_path)).create()
    register_model(ws, "ViT-B-32@b32.pt#aaaaaaaaaaaa", "ViT-B-32@/w/b32.pt", 512)
    path = ws.path("models.json")
    before = os.stat(path).st_mtime_ns
    register_model(ws, "ViT-B-32@b32.pt#aaaaaaaaaaaa", "ViT-B-32@/w/b32.pt", 512)
    assert os.stat(path).st_mtime_ns == before  # tagging reads its time stamp as "the active model moved"
    with pytest.raises(ModelRegistryError, match="512-d, now 768-d"):
        register_model(ws, "ViT-B-32@b32.pt#aaaaaaaaaaaa", "ViT-B-32@/w/b32.pt", 768)


def test_unknown_models_are_one_line_errors(tmp_path):
    ws = Workspace(str(tmp_path)).create()
    register_model(ws, "ViT-B-32@b32.pt#aaaaaaaaaaaa", None, 512)
    with pytest.raises(
        ModelRegistryError, match=r"no model 'nope' in this workspace \(models: vit-b-32-aaaaaaaaaaaa"
    ):
        set_active(ws, "nope")


def test_a_workspace_from_before_models_were_recorded_is_adopted_in_place(tmp_path):
    """Vectors written straight into WS/embeddings/ (no models.json): that folder and index/ are
    recorded as the model's, read from the shard; nothing moves."""
    ws = Workspace(str(tmp_path)).create()
    model_id = "EffLite0-MiniLM-L6@heads#cccccccccccc"
    ws.write_parquet("embeddings/s-000000.parquet", embeddings_rows(model_id, schema.EMBED_DIM))
    (model,) = list_models(ws)
    assert (model.model_id, model.dim, model.table_dir, model.index_dir) == (
        model_id,
        schema.EMBED_DIM,
        "embeddings",
        "index",
    )
    assert active_model(ws).key == model.key and ws.list_shards("embeddings") == ["s-000000"]
    assert ws.exists("models.json")
