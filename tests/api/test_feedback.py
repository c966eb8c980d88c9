"""POST /v1/feedback over real HTTP: a trainer's report lands where the engine reads it, and the
stage's next manifest is a new one."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from engine import schema
from engine.workspace import Workspace
from tests.api.conftest import assert_error, auth
from tests.api.test_manifests import wait_built


def report(step: int, concept_ids: list[int | None], stage: str = "lowres") -> dict:
    """A report where the first concept's loss stands out, as after a batch of hard images."""
    losses = [
        {"concept_id": c, "samples": 16, "loss_mean": 0.9 if i == 0 else 0.4, "loss_std": 0.1}
        for i, c in enumerate(concept_ids)
    ]
    return {"stage": stage, "step": step, "manifest": "manifests/lowres/x.parquet", "losses": losses}


@pytest.fixture(scope="module")
def concept_ids(client) -> list[int]:
    """Concepts of the session workspace's samples, as the manifest rows carry them (int64)."""
    rows = client.post("/v1/query", json={"sql": "SELECT DISTINCT concept_id FROM tags ORDER BY 1 LIMIT 4"})
    assert rows.status_code == 200, rows.text
    ids = [r[0] for r in rows.json()["rows"]]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) >= 2
    return ids


def test_feedback_is_written_and_changes_the_next_manifest(client, workspace, concept_ids):
    request = {"stage": "lowres", "seed": 21}
    before = client.post("/v1/manifests", json=request).json()["id"]
    assert wait_built(client, before)["status"] == "ready"

    ws = Workspace(workspace)
    step = next_step(workspace)
    response = client.post("/v1/feedback", json=report(step, concept_ids))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["path"] == f"feedback/lowres/{step:09d}.parquet" and body["rows"] == len(concept_ids)
    written = pq.read_table(ws.path(body["path"]))
    assert written.schema == schema.CONCEPT_LOSS
    assert written["concept_id"].to_pylist() == concept_ids and set(written["step"].to_pylist()) == {step}
    summary = body["multipliers"]
    assert step in summary["steps"] and summary["concepts"] >= len(concept_ids)
    assert summary["top"][0][0] == concept_ids[0] and summary["top"][0][1] > 1  # the hard concept gains

    after = client.post("/v1/manifests", json=request).json()
    assert after["id"] != before  # the reports are part of the manifest's identity
    built = wait_built(client, after["id"])
    assert built["status"] == "ready" and built["sidecar"]["feedback"]["reports"] >= 1


def next_step(workspace: str, stage: str = "lowres") -> int:
    """A step after every report already there (a reused ZCURATE_TEST_API_WORKSPACE has some)."""
    names = Workspace(workspace).list_files(f"feedback/{stage}", ".parquet")
    return 1 + max((int(name.split(".")[0]) for name in names), default=0)


def test_a_report_on_a_manifest_of_the_service_names_the_refreshed_one(
    base_url, client, workspace, concept_ids
):
    """The trainer reported on a manifest the service built: the answer names the manifest the
    service rebuilds from the report (same recipe and seed), to follow once ready."""
    before = wait_built(
        client, client.post("/v1/manifests", json={"stage": "lowres", "seed": 23}).json()["id"]
    )
    assert before["status"] == "ready"
    body = report(next_step(workspace), concept_ids) | {
        "manifest": f"{base_url}/v1/manifests/{before['id']}/data"
    }
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == 201, response.text
    refreshed = response.json()["refreshed"]
    assert refreshed["id"] != before["id"] and refreshed["stage"] == "lowres"
    assert response.headers["location"] == f"/v1/manifests/{refreshed['id']}"
    after = wait_built(client, refreshed["id"])
    assert after["status"] == "ready" and after["sidecar"]["seed"] == 23
    assert client.post("/v1/manifests", json={"stage": "lowres", "seed": 23}).json()["id"] == refreshed["id"]

    # A report naming no manifest of the service (a hand-made file, an unknown id) refreshes none.
    for manifest in ("manifests/lowres/x.parquet", "ffffffffffffffff"):
        response = client.post(
            "/v1/feedback", json=report(next_step(workspace), concept_ids) | {"manifest": manifest}
        )
        assert response.status_code == 201 and response.json()["refreshed"] is None
        assert "location" not in response.headers


def test_feedback_needs_the_write_scope(base_url, anon, concept_ids):
    assert_error(anon.post("/v1/feedback", json=report(1, concept_ids)), 401, "unauthorized")
    response = anon.post("/v1/feedback", json=report(1, concept_ids), headers=auth("reader"))
    assert_error(response, 403, "forbidden")


@pytest.mark.parametrize(
    "change",
    [
        {"stage": "../lowres"},
        {"stage": "lowres/../../etc"},
        {"stage": ""},
        {"stage": "-"},  # a stage engine.curation.feedback refuses: refused here, before the write
        {"step": -1},
        {"step": 10**12},
        {"losses": []},
        {"losses": [{"concept_id": "parrot", "samples": 3, "loss_mean": 0.5}]},
        {"losses": [{"concept_id": "", "samples": 3, "loss_mean": 0.5}]},  # no concept is null now
        {"losses": [{"concept_id": -1, "samples": 3, "loss_mean": 0.5}]},
        {"losses": [{"concept_id": 2**63, "samples": 3, "loss_mean": 0.5}]},  # over int64
        {"losses": [{"concept_id": 1.5, "samples": 3, "loss_mean": 0.5}]},
        {"losses": [{"concept_id": 1, "samples": -3, "loss_mean": 0.5}]},
        {"losses": [{"concept_id": 1, "samples": 3, "loss_mean": 1e300}]},  # over float32
        {"losses": [{"concept_id": 1, "samples": 3}]},
        {"extra": 1},
    ],
)
def test_bad_reports_are_422(client, change):
    body = report(7, [1, 2]) | change
    assert_error(client.post("/v1/feedback", json=body), 422, "invalid_request")


def test_a_report_for_a_stage_without_a_recipe_is_kept(client, workspace):
    response = client.post("/v1/feedback", json=report(3, [None, 5, 2**63 - 1], stage="my-stage_2"))
    assert response.status_code == 201, response.text
    written = pq.read_table(Workspace(workspace).path("feedback", "my-stage_2", "000000003.parquet"))
    assert written["concept_id"].to_pylist() == [None, 5, 2**63 - 1]  # null: draws without a concept


def test_a_loss_without_a_concept_id_is_the_null_concept(client, workspace):
    body = report(4, [7], stage="my-stage_3")
    del body["losses"][0]["concept_id"]
    response = client.post("/v1/feedback", json=body)
    assert response.status_code == 201, response.text
    written = pq.read_table(Workspace(workspace).path(response.json()["path"]))
    assert written["concept_id"].to_pylist() == [None]


def test_the_trainer_posts_its_report_when_given_the_service_url(base_url, workspace, monkeypatch, tmp_path):
    from engine.s3dit.concept_loss import concept_losses
    from engine.s3dit.service import report_feedback

    monkeypatch.setenv("ZCURATE_FEEDBACK_URL", base_url)
    monkeypatch.setenv("ZCURATE_API_KEY", "w-0123456789abcdef")
    report = concept_losses("trainer-stage", 77, "m.parquet", [[1, 2], [2], []], [0.5, 0.25, float("nan")])
    # The trainer's own workspace is elsewhere: the report must land in the service's.
    where = report_feedback(Workspace(str(tmp_path / "trainer")), report)
    assert where == "feedback/trainer-stage/000000077.parquet"
    written = pq.read_table(Workspace(workspace).path(where))
    assert written["concept_id"].to_pylist() == [1, 2]  # the NaN row (the null concept) is left out
    assert written["samples"].to_pylist() == [1, 2]
