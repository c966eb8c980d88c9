"""POST /v1/query: one read-only SELECT, no file access, no settings, a row cap and a time limit."""

from __future__ import annotations

import pytest

from api.sandbox import json_safe
from engine.catalog import run_sql
from engine.workspace import Workspace
from tests.api.conftest import assert_error

HOSTILE = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM '/etc/passwd'",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/hostname')",
    "SELECT * FROM read_json('/etc/passwd')",
    "SELECT * FROM read_parquet('/tmp/*.parquet')",
    "SELECT * FROM glob('/*')",
    "SELECT * FROM glob('../*')",
    "SELECT * FROM parquet_metadata('/etc/passwd')",
    "SELECT * FROM read_text('../../etc/passwd')",
    "SELECT * FROM query('COPY (SELECT 1) TO ''/tmp/zcurate-pwned.csv''')",
    "SELECT * FROM query_table('/etc/passwd')",
    "COPY (SELECT * FROM samples) TO '/tmp/zcurate-pwned.csv'",
    "COPY samples FROM '/etc/passwd'",
    "EXPORT DATABASE '/tmp/zcurate-pwned'",
    "ATTACH '/tmp/zcurate-pwned.db' AS pwned",
    "ATTACH ':memory:' AS m",
    "DETACH catalog",
    "INSTALL httpfs",
    "LOAD httpfs",
    "FORCE INSTALL httpfs FROM 'http://example.com'",
    "PRAGMA enable_profiling",
    "PRAGMA database_list",
    "SET enable_external_access = true",
    "SET lock_configuration = false",
    "RESET enable_external_access",
    "CREATE TABLE t AS SELECT 1",
    "CREATE VIEW v AS SELECT 1",
    "CREATE MACRO m(x) AS x",
    "INSERT INTO samples SELECT * FROM samples",
    "UPDATE samples SET caption = ''",
    "DELETE FROM samples",
    "DROP VIEW samples",
    "ALTER VIEW samples RENAME TO s",
    "USE memory",
    "CALL pragma_version()",
    "CHECKPOINT",
    "VACUUM",
    "BEGIN TRANSACTION",
    "EXPLAIN SELECT 1",
    "SELECT 1; SELECT 2",
    "SELECT 1; DROP VIEW samples",
    "SELECT 1;; COPY samples TO '/tmp/x.csv'",
    "SELECT * FROM samples WHERE",  # a syntax error
    "",  # nothing at all (pydantic: min_length)
    "   ",
    "-- just a comment",
]


@pytest.mark.parametrize("sql", HOSTILE)
def test_hostile_sql_is_refused(client, sql):
    response = client.post("/v1/query", json={"sql": sql})
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert set(response.json()) == {"error"}
    assert "root:" not in response.text  # nothing of /etc/passwd leaked into an error message


def test_file_access_is_limited_to_the_workspace_tables(client, workspace):
    sql = "SELECT unnest(current_setting('allowed_directories')) AS d"
    allowed = [row[0] for row in client.post("/v1/query", json={"sql": sql}).json()["rows"]]
    assert allowed and all(d.startswith(workspace.rstrip("/") + "/") for d in allowed), allowed
    assert f"{workspace.rstrip('/')}/samples/" in allowed


def test_refusals_say_why(client):
    assert_error(client.post("/v1/query", json={"sql": "COPY samples TO '/tmp/x'"}), 400, "read_only")
    assert_error(client.post("/v1/query", json={"sql": "SELECT 1; SELECT 2"}), 400, "invalid_sql")
    error = assert_error(
        client.post("/v1/query", json={"sql": "SELECT * FROM glob('/*')"}), 400, "query_failed"
    )
    assert "disabled" in error["message"]


def test_the_catalog_stays_unchanged_after_the_attempts(client, workspace):
    before = run_sql(Workspace(workspace), "SELECT count(*) AS n FROM samples").to_pylist()
    for sql in ("DROP VIEW samples", "DELETE FROM samples", "CREATE TABLE x AS SELECT 1"):
        client.post("/v1/query", json={"sql": sql})
    assert run_sql(Workspace(workspace), "SELECT count(*) AS n FROM samples").to_pylist() == before


def test_a_select_over_the_catalog(client, workspace):
    sql = "SELECT sample_id, caption, clip_score FROM sample_signals ORDER BY sample_id"
    response = client.post("/v1/query", json={"sql": sql})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [c["name"] for c in body["columns"]] == ["sample_id", "caption", "clip_score"]
    expected = run_sql(Workspace(workspace), sql).to_pylist()
    assert body["row_count"] == len(expected) > 0 and not body["truncated"]
    assert [r[0] for r in body["rows"]] == [e["sample_id"] for e in expected]
    assert body["rows"][0][2] == pytest.approx(expected[0]["clip_score"])


def test_every_view_is_queryable(client):
    for view in ("samples", "signals", "sample_signals", "reject_reasons", "tags", "concept_counts", "dedup"):
        response = client.post("/v1/query", json={"sql": f"SELECT count(*) FROM {view}"})
        assert response.status_code == 200, (view, response.text)


def test_row_cap_truncates(client):
    response = client.post("/v1/query", json={"sql": "SELECT * FROM range(100)", "max_rows": 7})
    body = response.json()
    assert body["row_count"] == 7 and body["truncated"] and body["rows"][6] == [6]
    big = client.post("/v1/query", json={"sql": "SELECT * FROM range(20000)"}).json()
    assert big["row_count"] == 10_000 and big["truncated"]  # the service's cap (Settings.query_max_rows)
    exact = client.post("/v1/query", json={"sql": "SELECT * FROM range(5)", "max_rows": 5}).json()
    assert exact["row_count"] == 5 and not exact["truncated"]


def test_a_slow_query_is_interrupted(client):
    sql = "SELECT count(*) FROM range(100000000000) a WHERE a.range % 7 = 3"
    response = client.post("/v1/query", json={"sql": sql})
    error = assert_error(response, 400, "query_timeout")
    assert "2 s" in error["message"]
    assert response.elapsed.total_seconds() < 20
    assert client.post("/v1/query", json={"sql": "SELECT 42"}).json()["rows"] == [[42]]  # still serving


def test_values_json_cannot_carry_become_json(client):
    sql = (
        "SELECT 'nan'::DOUBLE AS a, 'inf'::DOUBLE AS b, '\\x00\\xff'::BLOB AS c, DATE '2026-11-26' AS d, "
        "1.5::DECIMAL(4,2) AS e, {'x': 1} AS f, MAP {'k': 2} AS g, [1, NULL] AS h, INTERVAL 2 SECOND AS i, "
        "'6ba7b810-9dad-11d1-80b4-00c04fd430c8'::UUID AS j, 2::HUGEINT AS k"
    )
    response = client.post("/v1/query", json={"sql": sql})
    assert response.status_code == 200, response.text
    row = response.json()["rows"][0]
    assert row[0] is None and row[1] is None and row[3] == "2026-11-26" and row[4] == 1.5
    assert row[5] == {"x": 1} and row[7] == [1, None] and row[9].startswith("6ba7b810") and row[10] == 2
    assert json_safe(float("-inf")) is None


@pytest.mark.parametrize(
    "body",
    [
        {"sql": 1},
        {"sql": None},
        {"query": "SELECT 1"},
        {"sql": "SELECT 1", "extra": 1},
        {"sql": "SELECT 1", "max_rows": 0},
    ],
)
def test_malformed_bodies_are_422(client, body):
    assert_error(client.post("/v1/query", json=body), 422, "invalid_request")


def test_non_json_bodies_are_4xx(client):
    for content, ctype in (
        (b"{not json", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b"sql=1", "text/plain"),
    ):
        response = client.post("/v1/query", content=content, headers={"Content-Type": ctype})
        assert 400 <= response.status_code < 500 and "error" in response.json()
