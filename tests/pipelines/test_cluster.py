"""The curate job on a real multi-node Ray cluster, and the faults it survives.

The cluster (``tests/ray_cluster.py``) is a head and a worker node started with ``ray start`` on
this machine, one CPU each and a resource of their own; the job reaches it the way a user's does,
through ``RAY_ADDRESS``. Every test checks "exactly once": one row per source record, no
sample_id twice.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pyarrow.compute as pc
import pytest
from typer.testing import CliRunner

from cli.main import app
from engine.profiling.plan import load_plans
from engine.workspace import Workspace
from pipelines.runtime import SHIP_CODE_ENV, WORKER_DIED, ray_session
from tests.data import write_noise_folder
from tests.engine.graph.test_tagging import tag_files
from tests.ray_cluster import LocalCluster, PoisonStage

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ZCURATE = os.path.join(os.path.dirname(sys.executable), "zcurate")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUSY_CPU_S = 0.1  # CPU seconds per second that mark a working actor (an idle one uses ~0; a busy
# one gets 0.2-1 on this shared 2-core machine)


@pytest.fixture(scope="module")
def cluster():
    """A head node (with Ray's job server) and a worker node, torn down (every process, by pid)
    even when a test fails."""
    with LocalCluster() as cluster:
        cluster.start_head(num_cpus=1, dashboard=True)
        cluster.add_worker("worker_node", num_cpus=1)
        yield cluster


def zcurate_on(cluster: LocalCluster, *args: str) -> subprocess.Popen:
    """``zcurate ARGS`` as a user runs it against the cluster: RAY_ADDRESS in the environment.
    Output goes to pipes (read them with ``communicate``)."""
    env = {**cluster.env(), "RAY_ADDRESS": cluster.address}
    pipe = subprocess.PIPE
    return subprocess.Popen([ZCURATE, *args], env=env, text=True, stdout=pipe, stderr=pipe)


def table_rows(ws: str, table: str) -> list[dict]:
    """Every row of a table, sorted by sample_id (the order the shards finished in does not matter)."""
    rows = Workspace(ws).read_table(table).to_pylist()
    return sorted(rows, key=lambda r: r["sample_id"])


def assert_exactly_once(ws: str, n: int) -> None:
    samples = Workspace(ws).read_table("samples", columns=["sample_id", "ref", "status"])
    assert samples.num_rows == n
    assert len(set(samples["ref"].to_pylist())) == n  # every record, none twice
    assert len(set(samples["sample_id"].to_pylist())) == n
    ok = pc.sum(pc.equal(samples["status"], "ok")).as_py()
    assert Workspace(ws).read_table("signals").num_rows == ok


def wait_for_shards(ws: str, n: int, job: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while len(glob.glob(f"{ws}/samples/*.parquet")) < n:
        assert job.poll() is None, "the job ended before the fault could be injected"
        assert time.time() < deadline, "no shard finished in time"
        time.sleep(0.05)


def wait_until_busy(node, job: subprocess.Popen, timeout: float = 180) -> None:
    """Until the node's shard actor (``pipelines.runtime.ShardActor``) uses BUSY_CPU_S of CPU per
    second (it has shards in hand). An actor that goes away meanwhile is looked for again."""
    deadline = time.time() + timeout
    while True:
        assert job.poll() is None and time.time() < deadline, "the node's actor never got to work"
        for p in node.processes():
            with contextlib.suppress(psutil.Error):
                if "ShardActor" in " ".join([p.name(), *p.cmdline()]):
                    before = sum(p.cpu_times()[:2])
                    time.sleep(0.5)
                    if sum(p.cpu_times()[:2]) - before >= BUSY_CPU_S / 2:
                        return
        time.sleep(0.05)


# `zcurate` with the test's poison stage registered, in a process of its own as a user's command
# runs (one Ray per process; the stage reaches the workers through PYTHONPATH).
POISON_CLI = """
import sys
from pipelines.stages import IMAGE_STAGES
from tests.ray_cluster import PoisonStage
armed = sys.argv.pop(1)
IMAGE_STAGES["poison"] = lambda: PoisonStage(armed)
sys.argv[0] = "zcurate"
from cli.main import app
app()
"""


def run_with_poison_stage(armed, args: list[str]) -> subprocess.CompletedProcess:
    """Run the CLI with the poison stage; ``output`` holds stdout and stderr together."""
    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("RAY_ADDRESS", None)
    run = subprocess.run(
        [sys.executable, "-c", POISON_CLI, str(armed), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    run.output = run.stdout
    return run


def test_poisoned_shards_fail_alone_and_a_rerun_retries_only_them(tmp_path):
    """One record kills its worker process, another makes its stage raise: only their two shards
    fail (recorded in _failed/, named on stderr, exit 1); every other shard is written. Once the
    "decoder" is fixed, the same command retries just those two and the result is complete."""
    n, shard_size = 16, 4
    src = write_noise_folder(str(tmp_path / "src"), n)
    for index, word in ((5, PoisonStage.EXIT_WORD), (13, PoisonStage.RAISE_WORD)):  # shards 1 and 3
        with open(f"{src}/{index:05d}.txt", "w") as f:
            f.write(f"picture {index}, {word}")
    armed = tmp_path / "armed"
    armed.write_text("")
    ws = str(tmp_path / "ws")
    args = ["curate", src, "-w", ws, "--shard-size", str(shard_size), "--num-cpus", "1", "--stages", "poison"]

    first = run_with_poison_stage(armed, args)
    assert first.returncode == 1, first.output[-3000:]
    [(_, plan, _)] = load_plans(Workspace(ws))
    poisoned = {plan.shard_id(1), plan.shard_id(3)}
    assert set(Workspace(ws).list_shards("samples")) == {plan.shard_id(i) for i in range(4)} - poisoned
    records = {
        name[: -len(".json")]: json.loads(Workspace(ws).read_text(f"{Workspace.failed}/{name}"))
        for name in Workspace(ws).list_files(Workspace.failed, ".json")
    }
    assert set(records) == poisoned
    assert records[plan.shard_id(1)]["error"] == WORKER_DIED
    assert "poison stage failed on a batch" in records[plan.shard_id(3)]["error"]
    assert "cannot decode" in records[plan.shard_id(3)]["error"]
    assert all(r["attempts"] == 3 and r["table"] == "samples" for r in records.values())
    for shard_id in poisoned:
        assert f"failed: {shard_id}" in first.output
    assert "run the same command again" in first.output
    done = {p: os.stat(p).st_mtime_ns for p in glob.glob(f"{ws}/samples/*.parquet")}

    armed.unlink()  # the decoder is fixed
    second = run_with_poison_stage(armed, args)
    assert second.returncode == 0, second.output[-3000:]
    assert "2 / 4" in second.output  # shards run / total: only the two that failed
    assert {p: os.stat(p).st_mtime_ns for p in done} == done  # finished shards untouched
    assert Workspace(ws).list_files(Workspace.failed, ".json") == []
    assert_exactly_once(ws, n)


def test_cluster_run_equals_the_single_process_run(cluster, case_folder, tmp_path, monkeypatch):
    """The bad-input folder (every reject reason) curated on the two-node cluster through the CLI
    gives the same samples and signals rows as a local one-CPU run in this process."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local, remote = str(tmp_path / "local"), str(tmp_path / "cluster")
    args = ["--shard-size", "3", "--stages", "profile"]
    single = CliRunner().invoke(app, ["curate", case_folder, "-w", local, "--num-cpus", "1", *args])
    assert single.exit_code == 0, single.output
    logs_before = cluster.worker_logs()
    job = zcurate_on(cluster, "curate", case_folder, "-w", remote, *args)
    _, err = job.communicate(timeout=240)
    assert job.returncode == 0, err[-3000:]
    assert cluster.worker_logs() > logs_before  # the cluster's raylets ran it, not a Ray of its own
    for table in ("samples", "signals"):
        assert table_rows(remote, table) == table_rows(local, table), table
    assert Workspace(remote).list_shards("samples") == Workspace(local).list_shards("samples")
    # tagging ran its per-shard passes on the cluster (RAY_ADDRESS set: pipelines.tag_job): same bytes
    tags = tag_files(remote)
    assert tags == tag_files(local) and any(str(p).startswith("tags") for p in tags)


def test_ray_job_submit_runs_the_curate_job_on_the_cluster(cluster, case_folder, tmp_path, monkeypatch):
    """`ray job submit -- zcurate curate ...`: the job's driver runs on the cluster (RAY_ADDRESS set
    by Ray's job server) and the result equals a local one-CPU run of the same command."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local, remote = str(tmp_path / "local"), str(tmp_path / "submitted")
    args = ["--shard-size", "3", "--stages", "profile"]
    single = CliRunner().invoke(app, ["curate", case_folder, "-w", local, "--num-cpus", "1", *args])
    assert single.exit_code == 0, single.output
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    submit = [ray, "job", "submit", "--address", cluster.dashboard_url, "--"]
    job = subprocess.run(
        [*submit, ZCURATE, "curate", case_folder, "-w", remote, *args],
        env=cluster.env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, (job.stdout + job.stderr)[-3000:]
    assert "succeeded" in job.stdout + job.stderr
    for table in ("samples", "signals"):
        assert table_rows(remote, table) == table_rows(local, table), table


def test_a_worker_node_killed_mid_job_loses_nothing(tmp_path):
    """A cluster of three nodes of its own; the third is SIGKILLed (raylet and workers) while its
    actor works through shards: the job finishes on the two nodes left, exit 0, every record
    exactly once. (The shards the node held come back through a retry round, "trying them
    again" on stderr.)"""
    n = 240
    src = write_noise_folder(str(tmp_path / "src"), n, size=(256, 256))
    ws = str(tmp_path / "ws")
    with LocalCluster() as cluster:
        cluster.start_head(num_cpus=1)
        cluster.add_worker("worker_node", num_cpus=1)
        doomed = cluster.add_worker("doomed_node", num_cpus=1)
        job = zcurate_on(cluster, "curate", src, "-w", ws, "--shard-size", "4", "--stages", "profile")
        try:
            wait_for_shards(ws, 2, job)
            wait_until_busy(doomed, job)
            cluster.kill_node(doomed)
            killed_at = len(glob.glob(f"{ws}/samples/*.parquet"))
            _, err = job.communicate(timeout=300)
        finally:
            job.kill()
    assert killed_at < n // 4, "the kill came too late to matter"
    assert job.returncode == 0, err[-3000:]
    assert_exactly_once(ws, n)
    assert Workspace(ws).list_files(Workspace.failed, ".json") == []


def test_driver_sigkilled_on_the_cluster_then_rerun_resumes(cluster, tmp_path):
    """SIGKILL the driver (the cluster lives on, Ray reaps the job's actors): the same command
    resumes, leaves the shards finished before the kill untouched, and completes exactly once."""
    n = 160
    src = write_noise_folder(str(tmp_path / "src"), n, size=(256, 256))
    ws = str(tmp_path / "ws")
    args = ["curate", src, "-w", ws, "--shard-size", "4", "--stages", "profile"]
    job = zcurate_on(cluster, *args)
    try:
        wait_for_shards(ws, 3, job)
        job.send_signal(signal.SIGKILL)
        job.wait()
    finally:
        job.kill()
    time.sleep(2.0)  # the GCS reaps the dead driver's actors; a shard in flight may still land
    done = {p: os.stat(p).st_mtime_ns for p in glob.glob(f"{ws}/samples/*.parquet")}
    assert len(done) < n // 4, "the kill came too late to test resuming"
    rerun = zcurate_on(cluster, *args)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-3000:]
    assert {p: os.stat(p).st_mtime_ns for p in done} == done  # not redone
    assert f"{n // 4 - len(done)} / {n // 4}" in out  # shards run / total
    assert_exactly_once(ws, n)


def test_ship_code_sends_this_checkout_to_the_workers(cluster, monkeypatch, tmp_path):
    """ZCURATE_RAY_SHIP_CODE=1: a node without this checkout on its PYTHONPATH imports engine/
    and pipelines/ from the job's runtime_env (uploaded by the driver)."""
    import ray

    bare = cluster.add_worker("bare_node", num_cpus=1, code=False)
    monkeypatch.setenv("RAY_ADDRESS", cluster.address)
    monkeypatch.setenv(SHIP_CODE_ENV, "1")
    monkeypatch.chdir(tmp_path)  # Ray puts the driver's working directory on the workers' sys.path

    @ray.remote(num_cpus=0, resources={"bare_node": 1})
    def where_from() -> list[str]:
        import engine
        import pipelines

        return [engine.__file__, pipelines.__file__]

    try:
        with ray_session():
            paths = ray.get(where_from.remote(), timeout=120)
    finally:
        cluster.kill_node(bare)
    assert all("runtime_resources/py_modules_files" in p for p in paths), paths


def test_a_worker_node_killed_mid_tagging_loses_nothing(tmp_path):
    """`zcurate tag` on a three-node cluster (RAY_ADDRESS set: the tag job's passes on the actors);
    the third node is SIGKILLed while its actor works: the job finishes on the two left, and the
    tags are the bytes a one-process run writes (each shard's file written whole, once)."""
    from engine.graph.tagging import TagConfig, tag_workspace
    from tests.engine.graph.test_tagging import openclipart_captions, write_caption_workspace

    captions = openclipart_captions(2400)
    local, remote = str(tmp_path / "local"), str(tmp_path / "cluster")
    for root in (local, remote):
        write_caption_workspace(root, captions, shard_size=8)  # 300 shards: seconds of work per pass
    tag_workspace(Workspace(local), config=TagConfig(clip=False), progress=False)
    with LocalCluster() as cluster:
        cluster.start_head(num_cpus=1)
        cluster.add_worker("worker_node", num_cpus=1)
        doomed = cluster.add_worker("doomed_node", num_cpus=1)
        job = zcurate_on(cluster, "tag", "-w", remote, "--no-clip")
        try:
            wait_until_busy(doomed, job)
            cluster.kill_node(doomed)
            _, err = job.communicate(timeout=300)
        finally:
            job.kill()
    assert job.returncode == 0, err[-3000:]
    assert "trying them again" in err  # the dead node's shards came back through a retry round
    assert tag_files(remote) == tag_files(local)
