"""The curate job end to end: real Ray, real files, the CLI as a user runs it."""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from engine.catalog import run_sql
from engine.workspace import Workspace
from tests.data import write_noise_folder

pytestmark = pytest.mark.ray

ZCURATE = os.path.join(os.path.dirname(sys.executable), "zcurate")


def zcurate(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run([ZCURATE, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(
            f"zcurate {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
        )
    return result


@pytest.fixture(scope="module")
def curated(case_folder, tmp_path_factory) -> tuple[str, subprocess.CompletedProcess]:
    """The bad-input folder curated by the CLI in shards of 5 on a 2-CPU local Ray."""
    ws = str(tmp_path_factory.mktemp("ws") / "ws")
    result = zcurate("curate", case_folder, "--workspace", ws, "--shard-size", "5", "--num-cpus", "2")
    return ws, result


def test_every_bad_input_is_a_row_with_its_reason(curated, cases):
    ws, result = curated
    rows = {
        r["ref"].rsplit(".", 1)[0]: r
        for r in run_sql(
            Workspace(ws), "SELECT ref, status, reject_reason, warnings FROM samples"
        ).to_pylist()
    }
    assert set(rows) == set(cases)  # nothing lost, nothing twice
    for stem, case in cases.items():
        assert rows[stem]["status"] == case.status, (stem, rows[stem])
        assert rows[stem]["reject_reason"] == case.reason, (stem, rows[stem])
        assert case.warnings <= set(rows[stem]["warnings"]), (stem, rows[stem])
    # the end-of-job summary counts every reason
    for reason in {c.reason for c in cases.values() if c.reason}:
        assert reason in result.stdout
    assert "rejected" in result.stdout and "catalog" in result.stdout


def test_signals_only_for_usable_pairs(curated, cases):
    ws, _ = curated
    counts = run_sql(
        Workspace(ws),
        "SELECT (SELECT count(*) FROM samples WHERE status = 'ok') AS ok, "
        "(SELECT count(*) FROM signals) AS signals, "
        "(SELECT count(*) FROM sample_signals) AS joined",
    ).to_pylist()[0]
    n_ok = sum(c.status == "ok" for c in cases.values())
    assert counts == {"ok": n_ok, "signals": n_ok, "joined": n_ok}
    dup = run_sql(Workspace(ws), "SELECT n_samples FROM image_duplicates").to_pylist()
    assert dup == [{"n_samples": 2}]  # one image with two captions: visible in SQL


def test_sql_command_formats(curated, tmp_path):
    ws, _ = curated
    query = "SELECT reject_reason, n FROM reject_reasons WHERE reject_reason = 'empty_file'"
    as_json = json.loads(zcurate("sql", query, "-w", ws, "--format", "json").stdout)
    assert as_json == [{"reject_reason": "empty_file", "n": 1}]
    assert zcurate("sql", query, "-w", ws, "--format", "csv").stdout.splitlines() == [
        "reject_reason,n",
        "empty_file,1",
    ]
    assert "empty_file" in zcurate("sql", query, "-w", ws).stdout
    out = tmp_path / "r.parquet"
    zcurate("sql", query, "-w", ws, "--format", "parquet", "--output", str(out))
    assert pq.read_table(out).to_pylist() == as_json
    bad = zcurate("sql", "SELEC nonsense", "-w", ws, check=False)
    assert bad.returncode == 2 and bad.stderr.startswith("error: SQL:") and "Traceback" not in bad.stderr


def test_stats_command(curated, cases, tmp_path):
    ws, _ = curated
    stats = json.loads(zcurate("stats", "-w", ws, "--format", "json").stdout)
    assert stats["totals"]["samples"] == len(cases)
    assert stats["totals"]["ok"] == sum(c.status == "ok" for c in cases.values())
    assert "decompression_bomb" in zcurate("stats", "-w", ws).stdout
    long_form = zcurate("stats", "-w", ws, "--format", "csv").stdout.splitlines()
    assert long_form[0] == "section,item,metric,value"
    assert f"totals,,samples,{len(cases)}" in long_form
    assert "reject_reasons,empty_file,n,1" in long_form
    out = tmp_path / "stats.parquet"
    zcurate("stats", "-w", ws, "--format", "parquet", "--output", str(out))
    assert pq.read_table(out).num_rows == len(long_form) - 1


def test_rerun_does_nothing_and_changes_nothing(curated, case_folder):
    ws, _ = curated
    before = {p: Path(p).read_bytes() for p in glob.glob(f"{ws}/*/*.parquet")}
    rerun = zcurate("curate", case_folder, "--workspace", ws, "--shard-size", "5")
    assert "0 / 5" in rerun.stdout  # shards run / total: nothing left to do
    after = {p: Path(p).read_bytes() for p in glob.glob(f"{ws}/*/*.parquet")}
    assert before == after


def test_same_source_twice_is_byte_identical(case_folder, curated, tmp_path):
    ws, _ = curated
    uri = f"file://{tmp_path}/ws2"  # a pyarrow filesystem URI works wherever a path does
    # samples and signals do not depend on the image stages: skip them here to save time
    zcurate(
        "curate",
        case_folder,
        "--workspace",
        uri,
        "--shard-size",
        "5",
        "--num-cpus",
        "1",
        "--stages",
        "profile",
    )
    again = str(tmp_path / "ws2")
    for table in ("samples", "signals"):
        first = sorted(glob.glob(f"{ws}/{table}/*.parquet"))
        second = sorted(glob.glob(f"{again}/{table}/*.parquet"))
        assert [os.path.basename(p) for p in first] == [os.path.basename(p) for p in second]
        for a, b in zip(first, second, strict=True):
            assert Path(a).read_bytes() == Path(b).read_bytes(), a


def test_bad_arguments_give_one_line_errors(tmp_path):
    for args, message in (
        (["curate", str(tmp_path / "missing"), "-w", str(tmp_path / "ws")], "does not exist"),
        (["curate", str(tmp_path), "-w", str(tmp_path / "ws"), "--shard-size", "0"], "must be positive"),
        (["sql", "SELECT 1", "-w", str(tmp_path / "nowhere")], "not a workspace"),
    ):
        result = zcurate(*args, check=False)
        assert result.returncode == 2, result
        assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("stages", ["profile", pytest.param("all", marks=pytest.mark.slow)])
def test_sigkill_mid_job_then_resume_equals_an_uninterrupted_run(tmp_path, stages):
    """Kill the whole job (driver and local Ray) mid-way; the rerun completes with no dups or gaps.

    With every stage (OCR, embeddings, safety, then index, dedup and tags) every file of the
    workspace must come out the same too.
    """
    n = 240 if stages == "profile" else 96
    src = write_noise_folder(str(tmp_path / "src"), n, size=(256, 256))
    killed, clean = str(tmp_path / "killed"), str(tmp_path / "clean")
    args = ["curate", src, "--shard-size", "8", "--num-cpus", "1", "--stages", stages]
    job = subprocess.Popen(
        [ZCURATE, *args, "-w", killed],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while len(glob.glob(f"{killed}/samples/*.parquet")) < 3:
        assert job.poll() is None, "the job ended before it could be killed"
        assert time.time() < deadline, "no shard finished in time"
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    done_at_kill = len(glob.glob(f"{killed}/samples/*.parquet"))
    assert done_at_kill < n // 8, "the kill came too late to test resuming"
    zcurate(*args, "-w", killed)
    zcurate(*args, "-w", clean)
    columns = "ref, sample_id, image_id, status, reject_reason, shard_id, row_index"
    resumed = run_sql(Workspace(killed), f"SELECT {columns} FROM samples ORDER BY ref").to_pylist()
    uninterrupted = run_sql(Workspace(clean), f"SELECT {columns} FROM samples ORDER BY ref").to_pylist()
    assert len(resumed) == n and resumed == uninterrupted
    assert len({r["sample_id"] for r in resumed}) == n
    assert run_sql(Workspace(killed), "SELECT count(*) AS n FROM signals").to_pylist() == [{"n": n}]
    for path in sorted(glob.glob(f"{clean}/*/*.parquet")):
        other = path.replace(clean, killed)
        assert Path(path).read_bytes() == Path(other).read_bytes(), f"{path} differs after resume"
