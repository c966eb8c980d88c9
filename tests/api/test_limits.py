"""Request limits, the error shape, and paths that try to leave the workspace."""

from __future__ import annotations

import socket

import pytest

from tests.api.conftest import assert_error


def test_a_json_body_over_the_limit_is_413(client):
    sql = "SELECT '" + "x" * (80 << 10) + "'"  # the tests' max_body_bytes is 64 KiB
    assert_error(client.post("/v1/query", json={"sql": sql}), 413, "too_large")

    def chunks():  # no Content-Length: counted while it streams
        yield b'{"sql": "SELECT \''
        for _ in range(10):
            yield b"x" * (16 << 10)
        yield b"'\"}"

    response = client.post("/v1/query", content=chunks(), headers={"Content-Type": "application/json"})
    assert_error(response, 413, "too_large")


@pytest.mark.parametrize("length", ["-5", "abc", "99999999999999999999"])
def test_a_bad_content_length_is_4xx(base_url, length):
    # httpx refuses to send these: a raw socket does
    host, port = base_url.removeprefix("http://").split(":")
    request = f"POST /v1/query HTTP/1.1\r\nHost: {host}\r\nContent-Length: {length}\r\n\r\n{{}}"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request.encode())
        status_line = sock.recv(4096).split(b"\r\n", 1)[0].decode()
    assert status_line.split()[1].startswith("4"), status_line


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v1/nothing", 404),
        ("GET", "/v2/stats", 404),
        ("PUT", "/v1/stats", 405),
        ("DELETE", "/v1/query", 405),
        ("GET", "/v1/jobs/not-a-job-id", 422),
        ("GET", "/v1/jobs/" + "0" * 32, 404),
    ],
)
def test_unknown_routes_and_methods_get_json_errors(client, method, path, status):
    assert_error(client.request(method, path), status)


TRAVERSALS = [
    "/v1/concepts/..%2F..%2F..%2Fetc%2Fpasswd",
    "/v1/concepts/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/v1/concepts/..%5C..%5Cwindows",
    "/v1/../../etc/passwd",
    "/v1/%2e%2e/%2e%2e/etc/passwd",
    "/v1/jobs/..%2F..%2Fcatalog.duckdb",
    "/v1/jobs/%2e%2e",
    "/v1/search/../../../etc/passwd",
    "/static/../../etc/passwd",
    "//etc/passwd",
    "/v1/stats/../../catalog.duckdb",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_url_path_traversal_reaches_no_file(client, path):
    # httpx would normalise the dots away: send the raw target
    response = client.request("GET", httpx_raw(client, path))
    assert 400 <= response.status_code < 500, response.text[:200]
    assert "root:" not in response.text and "DUCK" not in response.text
    assert set(response.json()) == {"error"}


def httpx_raw(client, path: str):
    import httpx

    url = httpx.URL(str(client.base_url).rstrip("/"))
    return url.copy_with(raw_path=path.encode())
