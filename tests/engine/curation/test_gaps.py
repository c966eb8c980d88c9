"""Gap candidates: retrieval plus tagged samples outside a manifest, on a small real workspace."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from engine.catalog import refresh_catalog, run_sql
from engine.curation.gaps import gap_candidates
from engine.graph.concept_queries import subtree_samples
from engine.vectors.index import build_index
from engine.vectors.search import search_samples
from engine.workspace import Workspace
from tests.engine.vectors.test_index import unit, write_embeddings

POOL = 48  # held-out openclipart pairs: ingest + embed + tag + index in ~2 min on 2 shared cores


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """(workspace, embedder): the pairs curated with the embed stage, tagged, indexed."""
    from engine.graph.tagging import tag_workspace
    from engine.vectors.model_specs import load_embedder
    from pipelines.stages import EmbedStage
    from tests.openclipart import heldout_pairs, write_pair_folder
    from tests.pipelines.test_image_stage import curate_folder

    tmp = tmp_path_factory.mktemp("gaps")
    folder = write_pair_folder(str(tmp / "pairs"), heldout_pairs(POOL))
    ws, _ = curate_folder(tmp, folder, shard_size=POOL // 2, stages=[EmbedStage()])
    tag_workspace(ws, progress=False)
    build_index(ws, "image")
    refresh_catalog(ws)
    return ws, load_embedder(None)


def ok_ids(ws: Workspace) -> list[str]:
    rows = run_sql(ws, "SELECT sample_id FROM samples WHERE status = 'ok' ORDER BY sample_id")
    return rows["sample_id"].to_pylist()


def busiest_concept(ws: Workspace) -> str:
    """The concept with the most tagged samples (ties by name)."""
    rows = run_sql(ws, "SELECT synset FROM concept_counts WHERE n_direct > 0 ORDER BY n_rollup DESC, synset")
    return rows["synset"][0].as_py()


def assert_ordered(result: pa.Table) -> None:
    sims = result["similarity"].to_numpy()
    assert np.all(np.diff(sims) <= 0) and result["rank"].to_pylist() == list(range(1, result.num_rows + 1))


@pytest.mark.slow
def test_text_query_returns_k_by_similarity_and_widens_past_the_manifest(pool):
    ws, embedder = pool
    text = "a star shape"
    result = gap_candidates(ws, set(), text=text, k=8, embedder=embedder)
    assert result.num_rows == 8 and not any(result["tagged"].to_pylist())
    assert_ordered(result)
    query = embedder.encode_texts([text])[0]
    direct = search_samples(ws, query, k=28)
    assert set(result["sample_id"].to_pylist()) == set(direct["sample_id"].to_pylist()[:8])
    np.testing.assert_allclose(result["similarity"].to_numpy(), direct["score"].to_numpy()[:8], atol=1e-5)
    # the 20 nearest are in the manifest: the search widens and returns the next 8
    manifest = pa.array(direct["sample_id"].to_pylist()[:20])
    widened = gap_candidates(ws, manifest, text=text, k=8, embedder=embedder)
    assert set(widened["sample_id"].to_pylist()) == set(direct["sample_id"].to_pylist()[20:28])
    # asking for more than the pool holds: every usable sample outside the manifest, once
    everything = gap_candidates(ws, manifest, text=text, k=1000, embedder=embedder)
    assert sorted(everything["sample_id"].to_pylist()) == sorted(set(ok_ids(ws)) - set(manifest.to_pylist()))


@pytest.mark.slow
def test_excluded_ids_never_appear_and_results_are_usable(pool):
    ws, embedder = pool
    usable = ok_ids(ws)
    manifest = set(usable[::2])
    for query in ({"text": "a flag"}, {"concept": busiest_concept(ws)}):
        result = gap_candidates(ws, manifest, k=10, embedder=embedder, **query)
        ids = result["sample_id"].to_pylist()
        assert ids and not manifest & set(ids), query
        assert set(ids) <= set(usable) and len(ids) == len(set(ids))
        assert_ordered(result)


@pytest.mark.slow
def test_concept_candidates_carry_the_concept(pool):
    ws, embedder = pool
    concept = busiest_concept(ws)
    subtree = set(subtree_samples(ws, concept, limit=None)["sample_id"].to_pylist())
    manifest = set(sorted(subtree)[:2])
    k = 3
    result = gap_candidates(ws, manifest, concept=concept, k=k, embedder=embedder)
    tagged = result.filter(result["tagged"])["sample_id"].to_pylist()
    untagged = result.filter(pc.invert(result["tagged"]))["sample_id"].to_pylist()
    assert set(tagged) <= subtree - manifest and not set(untagged) & subtree
    assert len(tagged) >= min(k, len(subtree - manifest))  # the k most similar tagged ones, at least
    assert k <= result.num_rows <= 2 * k
    concept_id = run_sql(ws, f"SELECT concept_id FROM concepts WHERE synset = '{concept}'")[0][0].as_py()
    by_id = gap_candidates(ws, manifest, concept=concept_id, k=k, embedder=embedder)
    assert by_id.equals(result)


@pytest.mark.slow
def test_unknown_concept_and_another_model_are_errors(pool, tmp_path):
    ws, embedder = pool
    with pytest.raises(ValueError, match="not in this workspace's graph"):
        gap_candidates(ws, set(), concept="no_such_thing.n.01", embedder=embedder)
    other = Workspace(str(tmp_path / "other")).create()
    write_embeddings(other, "x-0", unit(np.random.default_rng(0).standard_normal((4, 8))), "s", model="m@1")
    build_index(other, "image")
    with pytest.raises(ValueError, match="the index holds m@1 vectors"):
        gap_candidates(other, set(), text="a cat", embedder=embedder)


def test_no_query_or_no_index_is_an_error(tmp_path):
    ws = Workspace(str(tmp_path / "ws")).create()
    with pytest.raises(ValueError, match="give a concept or a text"):
        gap_candidates(ws, set())
    with pytest.raises(ValueError, match="give a concept or a text"):
        gap_candidates(ws, set(), text="  ")
    with pytest.raises(ValueError, match="no image index"):
        gap_candidates(ws, set(), text="a cat")
    with pytest.raises(ValueError, match="no image index"):
        gap_candidates(ws, set(), concept="bird.n.01")
