"""Corpus-noise concepts: format words, concepts whose images do not look like them, and the
recipe keys that stop or keep them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from engine import schema
from engine.curation.pool import stopped_concepts
from engine.curation.recipe import Concepts, RecipeError
from engine.graph.concept_graph import concept_id_of, load_graph
from engine.graph.concept_index import concept_text
from engine.graph.noise import detect_noise
from engine.graph.tagging import TagConfig, tag_workspace
from tests.engine.graph.test_tagging import write_caption_workspace


def write_image_vectors(ws, vectors_by_sample: dict[str, np.ndarray]) -> None:
    """An embeddings shard per samples shard holding the given image vectors."""
    dim = len(next(iter(vectors_by_sample.values())))
    for shard_id in ws.list_shards("samples"):
        ids = ws.read_shard("samples", shard_id)["sample_id"].to_pylist()
        vecs = [vectors_by_sample[s].astype(np.float16).tolist() for s in ids]
        table = pa.table(
            {"sample_id": ids, "image_vec": pa.array(vecs, pa.list_(pa.float16(), dim))},
        )
        full = pa.Table.from_pylist(table.to_pylist(), schema=schema.embeddings_schema(dim))
        ws.write_shard("embeddings", shard_id, full)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_a_concept_whose_images_do_not_look_like_it_is_noise(tmp_path):
    from engine.vectors.model_specs import load_embedder

    embedder = load_embedder(None)
    graph = load_graph()
    cat, hash_ = concept_id_of(graph, "cat.n.01"), concept_id_of(graph, "hash.n.01")
    captions = ["a cat on a mat"] * 40 + ["hash, button"] * 40 + ["a nice picture"] * 80
    ws = write_caption_workspace(str(tmp_path / "ws"), captions, shard_size=80)
    tag_workspace(ws, config=TagConfig(clip=False), progress=False)
    text = {c: embedder.encode_texts([concept_text(graph.nodes[c])])[0] for c in (cat, hash_)}
    rng = np.random.default_rng(0)
    others = unit(rng.normal(size=(len(captions), embedder.embed_dim)))
    vectors = {}
    for i, row in enumerate(ws.read_table("samples", ["sample_id", "caption"]).to_pylist()):
        # cats look like the word "cat"; the "hash" images are as random as everything else
        grounded = row["caption"].startswith("a cat")
        vectors[row["sample_id"]] = unit(text[cat] + 0.6 * others[i]) if grounded else others[i]
    write_image_vectors(ws, vectors)
    noise = detect_noise(ws, graph, ws.list_shards("samples"), embedder)
    assert noise[hash_].startswith("ungrounded:")
    assert cat not in noise
    assert detect_noise(ws, graph, ws.list_shards("samples"), None) == {}  # no embedder: formats only


def test_format_words_are_noise_and_recipes_stop_or_keep_them(tmp_path):
    captions = [f"an svg drawing of a dog {i}" for i in range(8)] + ["a red apple"] * 8
    ws = write_caption_workspace(str(tmp_path / "ws"), captions)
    summary = tag_workspace(ws, config=TagConfig(clip=False), progress=False)
    assert "svg.x.01" in summary.mined and summary.noise == ["svg.x.01"]
    concepts = {r["synset"]: r for r in ws.read_table("concepts").to_pylist()}
    assert concepts["svg.x.01"]["noise"] == "format: svg" and concepts["dog.n.01"]["noise"] is None
    svg, dog = concepts["svg.x.01"]["concept_id"], concepts["dog.n.01"]["concept_id"]
    assert stopped_concepts(ws, Concepts()) == [svg]
    assert stopped_concepts(ws, Concepts(noise="keep")) == []
    assert stopped_concepts(ws, Concepts(keep=("svg.x.01",))) == []
    assert stopped_concepts(ws, Concepts(stop=("dog.n.01",))) == sorted([svg, dog])
    with pytest.raises(RecipeError, match=r"concepts\.stop: unknown concept 'nothing\.n\.09'"):
        stopped_concepts(ws, Concepts(stop=("nothing.n.09",)))
