"""pipelines.runtime: how a job starts its local Ray."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

JOB = """
import os, ray
from pipelines.runtime import ray_session
with ray_session(num_cpus=1):
    assert ray.get(ray.remote(lambda: 41 + 1).remote()) == 42
    print("token during the job:", bool(os.environ.get("RAY_AUTH_TOKEN")))
print("token after the job:", bool(os.environ.get("RAY_AUTH_TOKEN")))
"""


@pytest.mark.ray
def test_a_local_job_writes_no_ray_token_to_the_home_directory(tmp_path):
    """Ray 2.60 would write ~/.ray/auth_token for a new local Ray; the job's own Ray gets a token in
    its environment instead (Ray's processes inherit it), gone when the job ends."""
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH") and k != "RAY_ADDRESS"}
    env.update(HOME=str(home), PYTHONPATH=REPO, RAY_USAGE_STATS_ENABLED="0")
    run = subprocess.run([sys.executable, "-c", JOB], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "token during the job: True" in run.stdout
    assert "token after the job: False" in run.stdout
    assert not (home / ".ray" / "auth_token").exists()
    assert "Token authentication is enabled" in run.stderr  # the protection stays on
