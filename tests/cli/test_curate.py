"""``zcurate demo`` as a user sees it on a terminal-less run (a CI log): the summary, one line per
step, and no notice from Ray (its token-auth warning, deprecation warnings, core-worker lines,
Ray Data's INFO lines): the issue's "quiet, friendly output"."""

from __future__ import annotations

import os
import re
import subprocess
import sys

ZCURATE = os.path.join(os.path.dirname(sys.executable), "zcurate")
# What Ray prints when it is not kept quiet: logging lines with a level, C++ log lines
# ("[2026-... E 123 123] core_worker.cc"), forwarded worker output ("(ShardActor pid=1)"), warnings.
RAY_NOISE = re.compile(
    r"\b(WARNING|INFO|DEBUG)\b|\] [EWI] |core_worker|\(\w+ pid=\d+\)|Warning:|Token authentication"
)


def test_the_demo_prints_its_steps_and_no_ray_notice(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    run = subprocess.run(
        [ZCURATE, "demo", "--workspace", str(tmp_path / "demo"), "--limit", "24", "--num-cpus", "2"],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    noise = [line for line in (run.stdout + run.stderr).splitlines() if RAY_NOISE.search(line)]
    assert noise == []
    steps = [line.split(":")[0] for line in run.stderr.splitlines() if re.search(r" in \d+\.\d s$", line)]
    assert steps == ["curate", "index and dedup", "tag", "catalog"]
    assert "manifest: " in run.stdout and "curated /usr/share/openclipart" in run.stdout
