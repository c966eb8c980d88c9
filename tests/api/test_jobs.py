"""/v1/jobs: sources confined to the workspace, one job at a time, cancel, and a real run on Ray."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest

from api.main import create_app
from engine.catalog import run_sql
from engine.workspace import Workspace
from tests.api.conftest import assert_error, auth, serve, service_settings

PAIRS = 4  # images in the job's source folder


@pytest.fixture(scope="module")
def job_workspace(workspace, tmp_path_factory) -> str:
    """An empty workspace whose incoming/ folder holds PAIRS images with captions (from the
    session workspace's sources) and a link that points outside it."""
    root = tmp_path_factory.mktemp("jobs") / "ws"
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    rows = run_sql(Workspace(workspace), "SELECT uri, caption FROM samples WHERE status = 'ok' ORDER BY uri")
    for i, row in enumerate(rows.to_pylist()[:PAIRS]):
        shutil.copyfile(row["uri"], incoming / f"{i:03d}.png")
        (incoming / f"{i:03d}.txt").write_text(row["caption"], encoding="utf-8")
    os.symlink("/usr/share", root / "escape")
    for own in ("_plans", "samples"):
        (root / own).mkdir()
    return str(root)


@pytest.fixture(scope="module")
def jobs(job_workspace, key_file) -> Iterator[httpx.Client]:
    app = create_app(job_workspace, service_settings(key_file, job_num_cpus=1))
    with serve(app) as url, httpx.Client(base_url=url, headers=auth("writer"), timeout=60) as client:
        yield client


def wait_for(client: httpx.Client, job_id: str, statuses: set[str], timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.get(f"/v1/jobs/{job_id}").json()
        if body["status"] in statuses or time.monotonic() > deadline:
            return body
        time.sleep(0.5)


@pytest.mark.parametrize(
    ("source", "status"),
    [
        ("../", 400),
        ("..", 400),
        ("../../../../etc", 400),
        ("/etc", 400),
        ("/usr/share/openclipart", 400),
        ("incoming/../../", 400),
        ("incoming/../../../../etc/passwd", 400),
        ("escape", 400),  # a link inside the workspace that points out of it
        ("escape/openclipart", 400),
        ("file:///etc", 400),
        ("s3://bucket/pairs", 400),
        ("https://example.com/pairs.tar", 400),
        ("incoming\x00/../..", 400),
        ("no-such-folder", 404),
        (".", 400),  # the workspace itself
        ("incoming/..", 400),
        ("_plans", 400),  # the workspace's own folders
        ("samples", 400),
    ],
)
def test_job_sources_cannot_leave_the_workspace(jobs, source, status):
    error = assert_error(jobs.post("/v1/jobs", json={"source": source}), status)
    assert error["code"] in ("path_outside_root", "invalid_source", "source_not_found")
    assert jobs.get("/v1/jobs").json() == []  # nothing was started


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"source": ""},
        {"source": "incoming", "steps": ["rm -rf"]},
        {"source": "incoming", "steps": "embed"},
        {"source": "incoming", "limit": 0},
        {"source": "incoming", "shard_size": 0},
        {"source": "incoming", "workspace": "/tmp/elsewhere"},
    ],
)
def test_bad_job_requests_are_422(jobs, body):
    assert_error(jobs.post("/v1/jobs", json=body), 422)


def test_one_job_at_a_time_and_cancel(jobs, job_workspace):
    started = jobs.post("/v1/jobs", json={"source": "openclipart", "limit": 512, "steps": ["embed"]})
    assert started.status_code == 202, started.text
    job = started.json()
    assert job["status"] in ("pending", "running") and job["steps"] == ["embed"]
    assert_error(jobs.post("/v1/jobs", json={"source": "incoming"}), 409, "job_running")
    listed = jobs.get("/v1/jobs").json()
    assert [j["id"] for j in listed] == [job["id"]]
    assert wait_for(jobs, job["id"], {"running"}, timeout_s=30)["status"] == "running"  # a live process
    cancelled = jobs.delete(f"/v1/jobs/{job['id']}")
    assert cancelled.status_code == 202
    final = wait_for(jobs, job["id"], {"cancelled", "failed", "succeeded"}, timeout_s=60)
    assert final["status"] == "cancelled" and final["finished"] is not None
    assert {s["step"] for s in final["progress"]["steps"]} == {"ingest", "profile", "embed"}
    again = jobs.delete(f"/v1/jobs/{job['id']}")  # cancelling a finished job changes nothing
    assert again.status_code == 202 and again.json()["status"] == "cancelled"
    # Its last state is recorded beside its log (tests/api/test_restart.py restarts the service).
    ws, deadline = Workspace(job_workspace), time.monotonic() + 5  # written just after the state changes
    while (record := json.loads(ws.read_text(f"_jobs/{job['id']}.json")))["status"] != "cancelled":
        assert time.monotonic() < deadline, record
        time.sleep(0.05)
    assert record["finished"] == final["finished"]


@pytest.mark.ray
@pytest.mark.slow
def test_a_job_curates_the_folder_and_reports_progress(jobs, job_workspace):
    response = jobs.post("/v1/jobs", json={"source": "incoming", "shard_size": 2})
    assert response.status_code == 202, response.text
    job = wait_for(jobs, response.json()["id"], {"succeeded", "failed", "cancelled"}, timeout_s=400)
    assert job["status"] == "succeeded", job
    progress = job["progress"]
    assert progress["rows_done"] == progress["rows_total"] == PAIRS
    by_step = {s["step"]: s for s in progress["steps"]}
    assert by_step["ingest"]["shards_done"] == by_step["ingest"]["shards_total"] == 2
    assert by_step["profile"]["rows_done"] == PAIRS
    stats = jobs.get("/v1/stats").json()
    assert stats["totals"]["samples"] == PAIRS == stats["totals"]["ok"]
