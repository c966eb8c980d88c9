"""GET /v1/stats and GET /v1/concepts/{concept} on the real workspace."""

from __future__ import annotations

import pytest

from api.histogram import score_histograms
from engine.catalog import run_sql
from engine.workspace import Workspace
from tests.api.conftest import assert_error


def test_stats_match_the_catalog(client, workspace):
    response = client.get("/v1/stats")
    assert response.status_code == 200, response.text
    body = response.json()
    ws = Workspace(workspace)
    expected = run_sql(ws, "SELECT count(*) AS n, count(*) FILTER (WHERE status = 'ok') AS ok FROM samples")
    expected = expected.to_pylist()[0]
    assert body["totals"]["samples"] == expected["n"] and body["totals"]["ok"] == expected["ok"]
    assert {s["signal"] for s in body["signals"]} >= {"width", "height", "blur"}
    assert body["reject_reasons"] == run_sql(ws, "SELECT * FROM reject_reasons").to_pylist()


def test_score_histograms_count_every_scored_sample(client, workspace):
    histograms = {h["score"]: h for h in client.get("/v1/stats").json()["score_histograms"]}
    clip = histograms["clip_score"]
    scores = run_sql(Workspace(workspace), "SELECT clip_score FROM signals WHERE clip_score IS NOT NULL")
    scores = scores["clip_score"].to_pylist()
    assert clip["count"] == len(scores) == sum(clip["counts"]) > 0
    assert len(clip["edges"]) == len(clip["counts"]) + 1 == 21
    assert clip["edges"][0] == pytest.approx(min(scores)) and clip["edges"][-1] == pytest.approx(max(scores))
    for lo, hi, n in zip(clip["edges"], clip["edges"][1:], clip["counts"], strict=False):
        inside = [s for s in scores if lo - 1e-9 <= s < hi or (hi == clip["edges"][-1] and s == hi)]
        assert n == len(inside)
    assert histograms["ocr_conf_mean"] == {"score": "ocr_conf_mean", "count": 0, "edges": [], "counts": []}


def test_an_empty_workspace_has_empty_histograms(tmp_path):
    ws = Workspace(str(tmp_path / "empty")).create()
    assert score_histograms(ws)[0] == {"score": "clip_score", "count": 0, "edges": [], "counts": []}


def test_a_concept_neighbourhood_by_id_and_by_name(client, workspace):
    ws = Workspace(workspace)
    sql = "SELECT concept_id, synset FROM concept_counts WHERE n_direct > 0 ORDER BY n_direct DESC, synset"
    top = run_sql(ws, sql + " LIMIT 1").to_pylist()[0]
    by_name = client.get(f"/v1/concepts/{top['synset']}")
    assert by_name.status_code == 200, by_name.text
    body = by_name.json()
    assert body["concept"]["concept_id"] == top["concept_id"] and body["concept"]["n_direct"] > 0
    assert body["parents"] and all(p["n_rollup"] >= body["concept"]["n_rollup"] for p in body["parents"])
    assert client.get(f"/v1/concepts/{top['concept_id']}").json() == body
    root = client.get("/v1/concepts/entity.n.01").json()
    assert root["parents"] == [] and root["concept"]["n_rollup"] >= body["concept"]["n_rollup"]


@pytest.mark.parametrize(
    "concept",
    ["no_such.n.01", "0", "99999999999999999999999999", "9223372036854775807", "1440764x"],
)
def test_unknown_concepts_are_404(client, concept):
    for _ in range(2):  # the second answer is the remembered miss
        error = assert_error(client.get(f"/v1/concepts/{concept}"), 404, "not_found")
        assert "not in this workspace's graph" in error["message"]


@pytest.mark.parametrize("concept", ["a b", "dog;DROP", "x" * 201, "%27%20OR%201=1", "dog.n.01%00"])
def test_malformed_concept_names_are_422(client, concept):
    assert_error(client.get(f"/v1/concepts/{concept}"), 422, "invalid_request")
