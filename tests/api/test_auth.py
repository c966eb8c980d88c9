"""API keys and scopes on every route: 401 without or with an unknown key, 403 without the scope."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from api.auth import KeyConfigError, KeyRing, hash_key, load_keyring, parse_scopes
from api.main import create_app
from api.settings import Settings
from tests.api.conftest import KEYS, assert_error, auth

JOB = "0" * 32  # a well-formed job id that does not exist
MANIFEST = "0" * 16  # a well-formed manifest id that does not exist
REPORT = {"stage": "auth-test", "step": 1, "losses": [{"concept_id": 1, "samples": 4, "loss_mean": 0.5}]}
ROUTES = [  # method, path, body, scope
    ("GET", "/v1/manifests", None, "read"),
    ("GET", f"/v1/manifests/{MANIFEST}", None, "read"),
    ("GET", f"/v1/manifests/{MANIFEST}/data", None, "read"),
    ("POST", "/v1/manifests", {"stage": "nosuch"}, "write"),
    ("POST", "/v1/feedback", REPORT, "write"),
    ("GET", "/v1/stats", None, "read"),
    ("GET", "/v1/concepts/entity.n.01", None, "read"),
    ("GET", "/v1/search?text=a%20cat", None, "read"),
    ("POST", "/v1/search", b"not an image", "read"),
    ("POST", "/v1/query", {"sql": "SELECT 1"}, "read"),
    ("GET", "/v1/jobs", None, "read"),
    ("GET", f"/v1/jobs/{JOB}", None, "read"),
    ("POST", "/v1/jobs", {"source": "no-such-folder"}, "write"),
    ("DELETE", f"/v1/jobs/{JOB}", None, "write"),
]


def send(client: httpx.Client, method: str, path: str, body, headers: dict) -> httpx.Response:
    if isinstance(body, bytes):
        return client.request(method, path, content=body, headers={**headers, "Content-Type": "image/png"})
    return client.request(method, path, json=body, headers=headers)


@pytest.mark.parametrize(("method", "path", "body", "scope"), ROUTES)
def test_every_route_needs_a_key_with_its_scope(anon, method, path, body, scope):
    missing = send(anon, method, path, body, {})
    error = assert_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer" and "missing" in error["message"]
    for headers in (
        {"Authorization": "Bearer not-a-key"},
        {"Authorization": f"Bearer {KEYS['reader']}x"},  # a known key plus one character
        {"Authorization": f"Basic {KEYS['reader']}"},  # right key, wrong scheme
        {"Authorization": f"Bearer {hash_key(KEYS['filekey'])}"},  # the stored digest is not the key
        {"Authorization": "Bearer"},
    ):
        assert_error(send(anon, method, path, body, headers), 401, "unauthorized")
    reader = send(anon, method, path, body, auth("reader"))
    if scope == "write":
        assert "write" in assert_error(reader, 403, "forbidden")["message"]
    else:
        assert reader.status_code not in (401, 403), reader.text
    for name in ("writer", "filekey"):  # keys from ZCURATE_API_KEYS and from the key file
        assert send(anon, method, path, body, auth(name)).status_code not in (401, 403)


def test_health_and_openapi_need_no_key(anon):
    health = anon.get("/v1/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    spec = anon.get("/openapi.json").json()
    assert {"/v1/stats", "/v1/query", "/v1/search", "/v1/jobs", "/v1/concepts/{concept}"} <= set(
        spec["paths"]
    )
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert anon.get("/docs").status_code == 200


def test_key_sources_and_scopes(tmp_path):
    key_file = tmp_path / "keys"
    key_file.write_text(f"{hashlib.sha256(b'k2').hexdigest()}:read  # ops\n\n", encoding="utf-8")
    ring = load_keyring(Settings(api_keys="k1:read+write, k3:read", api_key_file=str(key_file)))
    assert ring.scopes_of("k1") == {"read", "write"}
    assert ring.scopes_of("k2") == {"read"} and ring.scopes_of("k3") == {"read"}
    assert ring.scopes_of("k4") is None and ring.scopes_of("") is None
    assert KeyRing().scopes_of("k1") is None  # no keys configured: nothing is accepted
    assert parse_scopes("write+read") == {"read", "write"}


@pytest.mark.parametrize(
    ("keys", "file_text"),
    [("k1:admin", None), ("k1", None), (":read", None), ("", "nothex:read\n"), ("", f"{'a' * 64}:root\n")],
)
def test_malformed_key_configuration_stops_the_service(tmp_path, keys, file_text):
    key_file = None
    if file_text is not None:
        key_file = tmp_path / "keys"
        key_file.write_text(file_text, encoding="utf-8")
    with pytest.raises(KeyConfigError):
        create_app(str(tmp_path), Settings(api_keys=keys, api_key_file=str(key_file) if key_file else None))


def test_missing_key_file_and_workspace_stop_the_service(tmp_path):
    with pytest.raises(KeyConfigError):
        create_app(str(tmp_path), Settings(api_key_file=str(tmp_path / "absent")))
    with pytest.raises(ValueError):
        create_app(str(tmp_path / "absent"), Settings())
