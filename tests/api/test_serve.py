"""``zcurate serve``: help with an example, one-line errors, and a real start on a free port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from cli.main import app

runner = CliRunner()


def test_help_shows_an_example():
    result = runner.invoke(app, ["serve", "--help"], terminal_width=200)
    assert result.exit_code == 0 and "Example: " in result.output and "--port" in result.output


def test_bad_input_gets_one_line_errors(tmp_path):
    result = runner.invoke(app, ["serve", "--workspace", str(tmp_path / "absent")])
    assert result.exit_code == 2 and "not an existing local directory" in result.output
    result = runner.invoke(app, ["serve", "--workspace", str(tmp_path), "--port", "70000"])
    assert result.exit_code == 2 and "--port" in result.output
    result = runner.invoke(app, ["serve", "--workspace", str(tmp_path)], env={"ZCURATE_API_KEYS": "k:root"})
    assert result.exit_code == 2 and "unknown scopes" in result.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_answers_on_the_port(workspace):
    port = free_port()
    env = {**os.environ, "ZCURATE_API_KEYS": "servekey:read", "PYTHONPATH": os.getcwd()}
    command = [sys.executable, "-m", "cli", "serve", "--workspace", workspace, "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/v1/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "zcurate serve did not start"
            time.sleep(0.2)
        stats = httpx.get(f"{url}/v1/stats", headers={"Authorization": "Bearer servekey"}, timeout=30)
        assert stats.status_code == 200 and stats.json()["totals"]["samples"] > 0
        assert httpx.get(f"{url}/v1/stats", timeout=30).status_code == 401
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
