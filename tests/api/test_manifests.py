"""/v1/manifests over real HTTP: ids on request, one build per id, sidecars, Range downloads."""

from __future__ import annotations

import json
import os
import time

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from api.main import create_app
from api.ranges import MAX_RANGES, parse_range
from engine.workspace import Workspace
from tests.api.conftest import assert_error, auth, serve, service_settings

PARQUET_MAGIC = b"PAR1"  # first and last 4 bytes of every Parquet file


def wait_built(client: httpx.Client, manifest_id: str, timeout: float = 120.0) -> dict:
    """GET the manifest until its build is over (ready or failed)."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/v1/manifests/{manifest_id}")
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] in ("ready", "failed") or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


@pytest.fixture(scope="module")
def built(client) -> dict:
    """A lowres manifest (seed 11) built by the service: its GET body."""
    response = client.post("/v1/manifests", json={"stage": "lowres", "seed": 11})
    assert response.status_code == 202, response.text
    assert response.json()["status"] in ("pending", "running", "ready")
    body = wait_built(client, response.json()["id"])
    assert body["status"] == "ready", body
    return body


def test_ready_manifest_has_its_sidecar(built, workspace):
    sidecar = built["sidecar"]
    assert sidecar["manifest_id"] == built["id"] and len(built["id"]) == 16
    assert sidecar["stage"] == built["stage"] == "lowres"
    assert sidecar["seed"] == 11 and sidecar["size"] is None
    assert sidecar["counts"]["rows"] > 0
    assert Workspace(workspace).exists("manifests", "lowres", f"{built['id']}.parquet")
    # The build is recorded in the workspace (tests/api/test_restart.py restarts the service on it).
    record = json.loads(Workspace(workspace).read_text(f"_builds/{built['id']}.json"))
    assert record["status"] == "ready" and record["seed"] == 11 and record["recipe"]["stage"] == "lowres"


def test_identical_request_returns_the_same_id_without_a_second_build(client, built, workspace):
    path = Workspace(workspace).path("manifests", "lowres", f"{built['id']}.parquet")
    mtime = os.stat(path).st_mtime_ns
    again = client.post("/v1/manifests", json={"stage": "lowres", "seed": 11, "overrides": {}})
    assert again.status_code == 202
    body = again.json()
    assert body["id"] == built["id"] and body["status"] == "ready"
    assert body["started"] == built["started"]  # the same build record: nothing ran again
    assert os.stat(path).st_mtime_ns == mtime


def test_concurrent_identical_requests_share_one_build(client):
    request = {"stage": "lowres", "seed": 12, "size": 40}
    first, second = (client.post("/v1/manifests", json=request) for _ in range(2))
    assert first.status_code == second.status_code == 202
    assert first.json()["id"] == second.json()["id"]
    assert first.json()["created"] == second.json()["created"]  # one record, so one build
    body = wait_built(client, first.json()["id"])
    assert body["status"] == "ready" and body["sidecar"]["draws"]["requested"] == 40


def test_a_different_seed_or_override_is_a_different_manifest(client, built):
    seed = client.post("/v1/manifests", json={"stage": "lowres", "seed": 13}).json()["id"]
    override = client.post(
        "/v1/manifests", json={"stage": "lowres", "seed": 11, "overrides": {"dedup.keep": "all"}}
    ).json()["id"]
    assert len({built["id"], seed, override}) == 3
    body = wait_built(client, override)
    assert body["status"] == "ready" and body["sidecar"]["recipe"]["dedup"] == {"keep": "all"}


@pytest.mark.parametrize(
    ("request_body", "names"),
    [
        ({"stage": "nosuch"}, "nosuch"),
        ({"stage": "lowres", "overrides": {"filters.clip_score.min": "high"}}, "filters.clip_score.min"),
        ({"stage": "lowres", "overrides": {"balance.method": "magic"}}, "balance.method"),
        ({"stage": "lowres", "overrides": {"no_such_section.x": 1}}, "no_such_section"),
        ({"stage": "lowres", "overrides": {"stage": "../../etc"}}, "stage"),
    ],
)
def test_a_bad_stage_or_override_is_a_422_naming_the_key(client, request_body, names):
    error = assert_error(client.post("/v1/manifests", json=request_body), 422, "invalid_recipe")
    assert names in error["message"]


@pytest.mark.parametrize(
    "request_body",
    [
        {"stage": "../lowres"},
        {"stage": "/etc/passwd"},
        {"stage": "lowres", "seed": -1},
        {"stage": "lowres", "size": 0},
        {"stage": "lowres", "size": 10**9},  # over the service's cap
        {"stage": "lowres", "unknown": 1},
        {"seed": 1},
    ],
)
def test_bad_requests_are_422(client, request_body):
    assert_error(client.post("/v1/manifests", json=request_body), 422)


def test_scopes(base_url, built):
    with httpx.Client(base_url=base_url, timeout=60) as c:
        body = {"stage": "lowres", "seed": 11}
        assert_error(c.post("/v1/manifests", json=body), 401, "unauthorized")
        assert_error(c.post("/v1/manifests", json=body, headers=auth("reader")), 403, "forbidden")
        assert_error(c.get(f"/v1/manifests/{built['id']}"), 401)
        assert_error(c.get(f"/v1/manifests/{built['id']}/data"), 401)
        assert_error(c.get("/v1/manifests"), 401)
        assert c.get(f"/v1/manifests/{built['id']}", headers=auth("reader")).status_code == 200
        assert c.post("/v1/manifests", json=body, headers=auth("filekey")).json()["id"] == built["id"]


def test_list_filters_by_stage(client, built):
    listed = client.get("/v1/manifests").json()
    row = next(r for r in listed if r["id"] == built["id"])
    assert (
        row["status"] == "ready" and row["rows"] == built["sidecar"]["counts"]["rows"] and row["seed"] == 11
    )
    assert built["id"] in {r["id"] for r in client.get("/v1/manifests", params={"stage": "lowres"}).json()}
    assert client.get("/v1/manifests", params={"stage": "sft"}).json() == [
        r for r in listed if r["stage"] == "sft"
    ]
    assert_error(client.get("/v1/manifests", params={"stage": "../lowres"}), 422)


def test_data_streams_the_parquet(client, built):
    response = client.get(f"/v1/manifests/{built['id']}/data")
    assert response.status_code == 200
    assert response.headers["accept-ranges"] == "bytes"
    data = response.content
    assert data[:4] == data[-4:] == PARQUET_MAGIC
    table = pq.read_table(pa.BufferReader(data))
    assert table.num_rows == built["sidecar"]["counts"]["rows"]
    assert set(table["stage"].to_pylist()) == {"lowres"}


def test_range_requests(client, built):
    url = f"/v1/manifests/{built['id']}/data"
    whole = client.get(url).content
    size = len(whole)
    head = client.get(url, headers={"Range": "bytes=0-3"})
    assert head.status_code == 206 and head.content == PARQUET_MAGIC
    assert head.headers["content-range"] == f"bytes 0-3/{size}"
    middle = client.get(url, headers={"Range": f"bytes=10-{size // 2}"})
    assert middle.status_code == 206 and middle.content == whole[10 : size // 2 + 1]
    tail = client.get(url, headers={"Range": "bytes=-8"})  # the footer length and magic: how a reader starts
    assert tail.status_code == 206 and tail.content == whole[-8:]
    rest = client.get(url, headers={"Range": f"bytes={size - 100}-"})  # a resumed download
    assert rest.status_code == 206 and rest.content == whole[-100:]
    several = client.get(url, headers={"Range": "bytes=0-3,20-29"})
    assert several.status_code == 206 and "multipart/byteranges" in several.headers["content-type"]

    beyond = client.get(url, headers={"Range": f"bytes={size}-{size + 10}"})
    assert_error(beyond, 416, "range_not_satisfiable")
    assert beyond.headers["content-range"] == f"bytes */{size}"
    for bad in ("items=0-3", "bytes", "bytes=9-3"):
        assert_error(client.get(url, headers={"Range": bad}), 400, "bad_range")


# Headers api.ranges.parse_range accepts (a single range each): the parts FileResponse serves.
SERVED = ["bytes=0-3", "BYTES=5-9", "bytes=-1", "bytes=3-", "bytes=0-99999999999999999999", "bytes= 2-4 ,"]


@pytest.mark.parametrize("header", SERVED)
def test_a_range_is_served_as_the_parser_reads_it(client, built, header):
    url = f"/v1/manifests/{built['id']}/data"
    whole = client.get(url).content
    [(start, stop)] = parse_range(header, len(whole))
    part = client.get(url, headers={"Range": header})
    assert part.status_code == 206 and part.content == whole[start:stop]
    assert part.headers["content-range"] == f"bytes {start}-{stop - 1}/{len(whole)}"


@pytest.mark.parametrize(
    "header, status, code",
    [
        ("bytes=-0", 416, "range_not_satisfiable"),
        ("bytes=0-3,99999999-", 416, "range_not_satisfiable"),  # one range past the end: all refused
        ("bytes=0-3,abc", 400, "bad_range"),  # FileResponse would skip the part; we refuse the header
        ("bytes=0 - 3", 400, "bad_range"),
        ("bytes=-", 400, "bad_range"),
        ("bytes=,", 400, "bad_range"),
        ("bytes=0-" + "9" * 5000, 400, "bad_range"),  # a number int() refuses
    ],
)
def test_a_bad_range_is_our_json_error(client, built, header, status, code):
    response = client.get(f"/v1/manifests/{built['id']}/data", headers={"Range": header})
    assert_error(response, status, code)


def test_several_ranges_come_as_multipart_parts(client, built):
    url = f"/v1/manifests/{built['id']}/data"
    whole = client.get(url).content
    header = "bytes=0-3, 20-29, -4"
    response = client.get(url, headers={"Range": header})
    assert response.status_code == 206
    boundary = response.headers["content-type"].split("boundary=")[1]
    parts = response.content.split(f"--{boundary}".encode())[1:-1]  # the last one is the closing "--"
    expected = parse_range(header, len(whole))
    assert len(parts) == len(expected)
    for part, (start, stop) in zip(parts, expected, strict=True):
        head, body = part.split(b"\r\n\r\n", 1)
        assert f"Content-Range: bytes {start}-{stop - 1}/{len(whole)}".encode() in head
        assert body == whole[start:stop] + b"\r\n"
    many = ",".join(f"{i}-{i}" for i in range(MAX_RANGES + 1))
    assert_error(client.get(url, headers={"Range": f"bytes={many}"}), 400, "bad_range")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/manifests/0123456789abcdef",  # well formed, unknown
        "/v1/manifests/0123456789abcdef/data",
        "/v1/manifests/..%2F..%2Fcatalog.duckdb",
        "/v1/manifests/..%2F..%2Fcatalog.duckdb/data",
        "/v1/manifests/%2e%2e/data",
        "/v1/manifests/0123456789ABCDEF",  # ids are lower-case hex
        "/v1/manifests/lowres",
        "/v1/manifests/0123456789abcdef0",
        "/v1/manifests/..%5C..%5Cetc",
    ],
)
def test_bad_and_unknown_ids_are_4xx(client, path):
    response = client.get(path)
    assert response.status_code in (404, 422), (path, response.status_code, response.text[:200])
    assert set(response.json()) == {"error"}


def test_an_empty_workspace_fails_with_the_reason(tmp_path, key_file):
    """A workspace without usable samples: the build is accepted, then fails saying why."""
    ws = Workspace(str(tmp_path / "empty")).create()
    app = create_app(ws.root, service_settings(key_file))
    with serve(app) as url, httpx.Client(base_url=url, headers=auth("writer"), timeout=60) as c:
        response = c.post("/v1/manifests", json={"stage": "sft"})
        assert response.status_code == 202
        body = wait_built(c, response.json()["id"])
        assert body["status"] == "failed" and "no usable sample" in body["error"], body
        assert body["sidecar"] is None
        assert_error(c.get(f"/v1/manifests/{body['id']}/data"), 409, "not_ready")
        listed = c.get("/v1/manifests").json()
        assert [(r["id"], r["status"]) for r in listed] == [(body["id"], "failed")]
        # The same request answers the recorded failure rather than building again.
        again = c.post("/v1/manifests", json={"stage": "sft"}).json()
        assert again["status"] == "failed" and again["finished"] == body["finished"]


def test_a_removed_manifest_is_gone_and_built_again(client, workspace):
    request = {"stage": "lowres", "seed": 31}
    first = client.post("/v1/manifests", json=request).json()
    manifest_id = first["id"]
    assert wait_built(client, manifest_id)["status"] == "ready"
    ws = Workspace(workspace)
    for suffix in (".parquet", ".json"):
        os.remove(ws.path("manifests", "lowres", manifest_id + suffix))
    assert_error(client.get(f"/v1/manifests/{manifest_id}"), 404, "not_found")
    again = client.post("/v1/manifests", json=request).json()
    assert (
        again["id"] == manifest_id and again["created"] > first["created"]
    )  # a new build, not the old record
    assert wait_built(client, manifest_id)["status"] == "ready"
    assert ws.exists("manifests", "lowres", f"{manifest_id}.parquet")


def test_the_trainer_reads_a_manifest_from_the_service(base_url, built, monkeypatch):
    """engine.s3dit's loader takes the data URL as a manifest location (`zcurate train --manifest
    lowres=http://.../v1/manifests/ID/data`), with the key from ZCURATE_API_KEY."""
    from engine.s3dit.data import ManifestError, read_manifest
    from tests.api.conftest import KEYS

    url = f"{base_url}/v1/manifests/{built['id']}/data"
    monkeypatch.setenv("ZCURATE_API_KEY", KEYS["reader"])
    table = read_manifest(url)
    assert table.num_rows == built["sidecar"]["counts"]["rows"]
    assert table.schema.field("concept_ids").type == pa.list_(pa.int64())  # ids as the loss reports use
    monkeypatch.delenv("ZCURATE_API_KEY")
    with pytest.raises(ManifestError, match="401"):
        read_manifest(url)
