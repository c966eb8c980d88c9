"""The service over real HTTP: a uvicorn server on 127.0.0.1 in a thread, on a real workspace.

The workspace is built once per session, in-process (no Ray start-up: the curate job's shard
worker called directly, as tests/pipelines do): 32 openclipart images with the embed stage, the
FAISS indexes and dedup, caption tags on the concept graph, and the catalog.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn

from api.main import create_app
from api.settings import Settings

IMAGES = 32  # enough for several concepts with counts and a non-trivial search; ~30 s to build
SHARD_SIZE = 16  # two shards, so the views read a glob of several files
KEYS = {"reader": "r-0123456789abcdef", "writer": "w-0123456789abcdef", "filekey": "f-0123456789abcdef"}


def build_workspace(root: str) -> str:
    """Curate IMAGES openclipart pairs into ``root`` without Ray and return it."""
    from engine.catalog import refresh_catalog
    from engine.graph.tagging import TagConfig, tag_workspace
    from engine.profiling.ingest import IngestConfig
    from engine.profiling.plan import plan_source, save_source_config
    from engine.profiling.source import load_source
    from engine.vectors.dedup import index_and_dedup
    from engine.workspace import Workspace
    from pipelines.stages import EmbedStage
    from tests.data import run_shards_here

    ws = Workspace(root).create()
    source = load_source("openclipart")
    plan = plan_source(ws, source, shard_size=SHARD_SIZE, limit=IMAGES)
    save_source_config(ws, source, IngestConfig())
    run_shards_here(ws, source, plan, [EmbedStage()])
    index_and_dedup(ws)
    # Caption tags only: CLIP zero-shot tagging embeds all ~43k concept names (a minute here)
    # and is covered by tests/pipelines/test_tag_step.py.
    tag_workspace(ws, config=TagConfig(clip=False), progress=False)
    refresh_catalog(ws)
    return root


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> str:
    # To iterate on the tests alone, point this at a workspace build_workspace made earlier.
    reuse = os.environ.get("ZCURATE_TEST_API_WORKSPACE")
    if reuse and os.path.isdir(reuse):
        return reuse
    return build_workspace(str(tmp_path_factory.mktemp("api") / "ws"))


@pytest.fixture(scope="session")
def key_file(tmp_path_factory) -> str:
    """A key file as an operator writes it: a comment, then sha256hex(KEY):SCOPES."""
    path = tmp_path_factory.mktemp("keys") / "keys.txt"
    digest = hashlib.sha256(KEYS["filekey"].encode()).hexdigest()
    path.write_text(f"# service keys\n{digest}:read+write\n", encoding="utf-8")
    return str(path)


def service_settings(key_file: str, **overrides) -> Settings:
    values = {
        "api_keys": f"{KEYS['reader']}:read,{KEYS['writer']}:read+write",
        "api_key_file": key_file,
        "query_timeout_s": 2.0,
        "max_body_bytes": 64 << 10,
        "max_upload_bytes": 4 << 20,
    }
    return Settings(**{**values, **overrides})


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    """Run ``app`` under uvicorn on a free port of 127.0.0.1; yields the base URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture(scope="session")
def base_url(workspace, key_file) -> Iterator[str]:
    os.environ.pop("ZCURATE_API_KEYS", None)  # only the keys the tests give
    with serve(create_app(workspace, service_settings(key_file))) as url:
        yield url


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="session")
def client(base_url) -> Iterator[httpx.Client]:
    """A client with the read+write key."""
    with httpx.Client(base_url=base_url, headers=auth("writer"), timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def anon(base_url) -> Iterator[httpx.Client]:
    """A client without a key."""
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    """The response is the JSON error shape with this status (and code)."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]
