"""State that survives a restart, over real HTTP: jobs and manifest builds are recorded in the
workspace, so a new service on it answers for them; what a killed service left pending or
running is failed (a job, its orphan process stopped) or built again (a manifest); and a trainer
fed over REST follows the manifest the service rebuilt from its feedback."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from api.jobs import RECORD_FIELDS, Job, process_start
from api.main import create_app
from engine.catalog import run_sql
from engine.curation.manifest_identity import gather_inputs
from engine.curation.recipe import load_recipe
from engine.workspace import Workspace
from tests.api.conftest import KEYS, auth, serve, service_settings
from tests.api.test_jobs import wait_for
from tests.api.test_manifests import wait_built

PAIRS = 4  # images in a job's source folder


@contextlib.contextmanager
def service(root: str, key_file: str) -> Iterator[httpx.Client]:
    """A service on the workspace ``root`` and a client with the write key; stopped on exit."""
    app = create_app(str(root), service_settings(key_file, job_num_cpus=1))
    with serve(app) as url, httpx.Client(base_url=url, headers=auth("writer"), timeout=60) as client:
        yield client


@pytest.fixture
def copied(workspace, tmp_path) -> str:
    """A copy of the session workspace, so each test restarts services on its own."""
    skip = shutil.ignore_patterns("_tmp", "_builds", "_jobs")
    return str(shutil.copytree(workspace, tmp_path / "ws", ignore=skip))


@pytest.fixture
def job_root(workspace, tmp_path) -> str:
    """An empty workspace whose incoming/ folder holds PAIRS images with captions."""
    incoming = tmp_path / "jobs" / "incoming"
    incoming.mkdir(parents=True)
    rows = run_sql(Workspace(workspace), "SELECT uri, caption FROM samples WHERE status = 'ok' ORDER BY uri")
    for i, row in enumerate(rows.to_pylist()[:PAIRS]):
        shutil.copyfile(row["uri"], incoming / f"{i:03d}.png")
        (incoming / f"{i:03d}.txt").write_text(row["caption"], encoding="utf-8")
    return str(tmp_path / "jobs")


# --- jobs ------------------------------------------------------------------------------------


@pytest.mark.ray
def test_jobs_are_known_after_a_restart(job_root, key_file):
    with service(job_root, key_file) as jobs:
        response = jobs.post("/v1/jobs", json={"source": "incoming", "shard_size": 2})
        assert response.status_code == 202, response.text
        done = wait_for(jobs, response.json()["id"], {"succeeded", "failed", "cancelled"}, timeout_s=300)
        assert done["status"] == "succeeded", done
        # A job still running when the service stops is cancelled, and recorded so.
        running = jobs.post(
            "/v1/jobs", json={"source": "openclipart", "limit": 512, "steps": ["embed"]}
        ).json()
        assert wait_for(jobs, running["id"], {"running"}, timeout_s=30)["status"] == "running"

    with service(job_root, key_file) as jobs:
        again = jobs.get(f"/v1/jobs/{done['id']}").json()
        assert again == done  # status, times and progress (read from the workspace) as before
        assert again["progress"]["rows_done"] == PAIRS
        stopped = jobs.get(f"/v1/jobs/{running['id']}").json()
        assert stopped["status"] == "cancelled" and stopped["finished"] is not None
        assert [j["id"] for j in jobs.get("/v1/jobs").json()] == [done["id"], running["id"]]  # oldest first


def hand_record(ws: Workspace, job: Job) -> None:
    """A job record as a service writes it, left behind by one that was killed."""
    record = {name: getattr(job, name) for name in RECORD_FIELDS}
    ws.write_text(f"{ws.jobs}/{job.id}.json", json.dumps(record))


def orphan(seconds: int = 120) -> subprocess.Popen:
    """A process in its own session, as a job's child outlives a killed service."""
    return subprocess.Popen(["sleep", str(seconds)], start_new_session=True)


def test_a_job_left_running_by_a_killed_service_is_failed_and_its_process_stopped(tmp_path, key_file):
    ws = Workspace(str(tmp_path / "ws")).create()
    left, stranger = orphan(), orphan()
    try:
        common = {"source": "incoming", "location": ws.path("incoming"), "steps": [], "limit": None}
        common |= {"shard_size": 2, "plan_path": "_plans/x.parquet", "prefix": "x"}
        now = time.time()
        running = Job(id="a" * 32, status="running", created=now - 30, started=now - 29, **common)
        running.pid, running.pid_start = left.pid, process_start(left.pid)
        pending = Job(id="b" * 32, status="pending", created=now - 20, **common)
        # A record whose pid now names another process (its start time differs): left alone.
        reused = Job(
            id="c" * 32, status="running", created=now - 10, pid=stranger.pid, pid_start="1", **common
        )
        for job in (running, pending, reused):
            hand_record(ws, job)

        with service(ws.root, key_file) as jobs:
            assert left.wait(timeout=10) is not None  # the orphan job process was stopped
            assert stranger.poll() is None
            listed = jobs.get("/v1/jobs").json()
            assert [j["id"] for j in listed] == [running.id, pending.id, reused.id]
            for job in listed:
                assert job["status"] == "failed" and job["finished"] is not None, job
                assert "service restarted" in job["error"] and "submit it again" in job["error"]
            assert jobs.get(f"/v1/jobs/{running.id}").json()["error"] == listed[0]["error"]
            record = json.loads(ws.read_text(f"{ws.jobs}/{running.id}.json"))
            assert record["status"] == "failed"  # recorded, so the next start does not look again
    finally:
        for process in (left, stranger):
            process.kill()
            process.wait()


def test_an_unreadable_job_record_is_skipped(tmp_path, key_file):
    ws = Workspace(str(tmp_path / "ws")).create()
    ws.write_text(f"{ws.jobs}/{'d' * 32}.json", "{not json")
    with service(ws.root, key_file) as jobs:
        assert jobs.get("/v1/jobs").json() == []
        error = jobs.get(f"/v1/jobs/{'d' * 32}").json()["error"]
        assert error["code"] == "not_found" and "GET /v1/jobs" in error["message"]


# --- manifest builds -------------------------------------------------------------------------


def test_builds_are_known_after_a_restart(copied, key_file):
    with service(copied, key_file) as client:
        ready = wait_built(
            client, client.post("/v1/manifests", json={"stage": "lowres", "seed": 61}).json()["id"]
        )
        assert ready["status"] == "ready"
        keeps_none = {"stage": "lowres", "seed": 61, "overrides": {"filters.min_side.min": 100000}}
        failed = wait_built(client, client.post("/v1/manifests", json=keeps_none).json()["id"])
        assert failed["status"] == "failed" and "keeps no sample" in failed["error"]

    with service(copied, key_file) as client:
        assert client.get(f"/v1/manifests/{ready['id']}").json() == ready  # the same record: times too
        assert client.get(f"/v1/manifests/{failed['id']}").json() == failed
        listed = {row["id"]: row["status"] for row in client.get("/v1/manifests").json()}
        assert listed[ready["id"]] == "ready" and listed[failed["id"]] == "failed"
        # The same request answers the recorded failure rather than building again.
        assert client.post("/v1/manifests", json=keeps_none).json()["finished"] == failed["finished"]


def hand_build(ws: Workspace, manifest_id: str, status: str, seed: int) -> None:
    """A build record as a service writes it, left behind by one that was killed mid-build."""
    recipe = load_recipe("lowres")
    record = {"id": manifest_id, "stage": "lowres", "status": status, "created": time.time()}
    record |= {"started": time.time() if status == "running" else None, "finished": None, "error": ""}
    record |= {"retry": False, "recipe": recipe.to_dict(), "recipe_file": recipe.source, "seed": seed}
    ws.write_text(f"{ws.builds}/{manifest_id}.json", json.dumps(record | {"size": None}))


def test_an_interrupted_build_is_built_again_after_a_restart(copied, key_file):
    ws = Workspace(copied)
    interrupted = gather_inputs(ws, load_recipe("lowres"), seed=71).manifest_id
    hand_build(ws, interrupted, "running", seed=71)
    stale = "0123456789abcdef"  # asked of a workspace that has changed since: not its id any more
    hand_build(ws, stale, "pending", seed=72)
    with service(copied, key_file) as client:
        built = wait_built(client, interrupted)
        assert built["status"] == "ready" and built["sidecar"]["seed"] == 71, built
        assert ws.exists("manifests", "lowres", f"{interrupted}.parquet")
        failed = client.get(f"/v1/manifests/{stale}").json()
        assert failed["status"] == "failed" and "POST /v1/manifests" in failed["error"], failed
    record = json.loads(ws.read_text(f"{ws.builds}/{interrupted}.json"))
    assert record["status"] == "ready"


# --- a trainer over REST follows the manifest rebuilt from its feedback -------------------------


def test_the_trainer_follows_the_manifest_rebuilt_from_its_feedback(copied, key_file, monkeypatch):
    """What ``zcurate train --manifest lowres=URL`` with ``ZCURATE_FEEDBACK_URL`` does after each
    report (engine.s3dit.service): post it, then read the manifest the service rebuilt from it."""
    from engine.curation.manifest_store import sidecar_recipe
    from engine.s3dit.concept_loss import concept_losses
    from engine.s3dit.data import read_manifest
    from engine.s3dit.service import refreshed_manifest, report_feedback

    with service(copied, key_file) as client:
        base = str(client.base_url).rstrip("/")
        first = wait_built(
            client, client.post("/v1/manifests", json={"stage": "lowres", "seed": 81}).json()["id"]
        )
        assert first["status"] == "ready", first
        monkeypatch.setenv("ZCURATE_API_KEY", KEYS["writer"])
        monkeypatch.setenv("ZCURATE_FEEDBACK_URL", base)
        url = f"{base}/v1/manifests/{first['id']}/data"
        table = read_manifest(url)
        concepts = [ids or [] for ids in table["concept_ids"].to_pylist()] * 8  # 8 epochs of draws
        hard = next(ids[0] for ids in concepts if ids)
        losses = [0.9 if hard in ids else 0.3 for ids in concepts]  # the draws of one concept lag
        path = report_feedback(Workspace(copied), concept_losses("lowres", 5, url, concepts, losses))
        assert path == "feedback/lowres/000000005.parquet"  # the service's answer: it went over HTTP

        followed = refreshed_manifest(url)
        assert followed is not None and followed != url and followed.endswith("/data")
        refreshed_id = followed.split("/")[-2]
        # The id the local trainer's refresh gets: the sidecar's recipe, seed and size over the new report.
        sidecar = client.get(f"/v1/manifests/{first['id']}").json()["sidecar"]
        local = gather_inputs(Workspace(copied), sidecar_recipe(sidecar, "lowres"), 81, None).manifest_id
        assert refreshed_id == local
        new = read_manifest(followed)
        old_weights = dict(zip(table["sample_id"].to_pylist(), table["weight"].to_pylist(), strict=True))
        new_weights = dict(zip(new["sample_id"].to_pylist(), new["weight"].to_pylist(), strict=True))
        assert new_weights.keys() == old_weights.keys() and new_weights != old_weights
        assert refreshed_manifest(url) is None  # followed once; nothing reported on it since
