"""The trainer's loss report: grouped by int64 concept id (null for draws without one), written to
the workspace, or POSTed to a service with the Bearer key (engine.s3dit.service)."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pyarrow as pa
import pytest

from engine import schema
from engine.s3dit.concept_loss import concept_losses, read_feedback, send_feedback
from engine.s3dit.service import auth_headers, report_feedback
from engine.workspace import Workspace


def test_losses_are_grouped_by_int_concept_ids_with_null_for_none():
    report = concept_losses("sft", 7, "m.parquet", [[5, 2], [2], [], [2, 2]], [1.0, 3.0, 0.5, 2.0])
    assert report.schema == schema.CONCEPT_LOSS
    assert report["concept_id"].to_pylist() == [None, 2, 5]  # draws without a concept first
    assert report["samples"].to_pylist() == [1, 3, 1]  # a draw counts once per concept
    assert report["loss_mean"].to_pylist() == [0.5, 2.0, 1.0]


def test_a_report_is_written_with_int64_ids(tmp_path):
    ws = Workspace(str(tmp_path / "ws")).create()
    where = send_feedback(ws, concept_losses("lowres", 3, "m", [[9], []], [0.25, 0.5]))
    assert where.endswith("000000003.parquet")
    written = read_feedback(ws, "lowres")
    assert written.schema.field("concept_id").type == pa.int64()
    assert written["concept_id"].to_pylist() == [None, 9]


class FeedbackService(BaseHTTPRequestHandler):
    """Stands in for the API's POST /v1/feedback: keeps what it got, answers a path."""

    received: ClassVar[list[tuple[str, str | None, dict]]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.received.append((self.path, self.headers.get("Authorization"), body))
        answer = json.dumps({"path": "feedback/sft/000000007.parquet"}).encode()
        self.send_response(201)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):  # quiet
        pass


@pytest.fixture
def service_url():
    server = HTTPServer(("127.0.0.1", 0), FeedbackService)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    FeedbackService.received.clear()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def test_the_report_is_posted_with_int_or_null_ids_and_the_key(tmp_path, monkeypatch, service_url):
    monkeypatch.setenv("ZCURATE_FEEDBACK_URL", service_url)
    monkeypatch.setenv("ZCURATE_API_KEY", "w-key")
    report = concept_losses("sft", 7, "m.parquet", [[1, 2], [2], [], [3]], [0.5, 0.25, 0.75, math.nan])
    where = report_feedback(Workspace(str(tmp_path / "elsewhere")), report)
    assert where == "feedback/sft/000000007.parquet"
    [(path, auth, body)] = FeedbackService.received
    assert path == "/v1/feedback" and auth == "Bearer w-key"
    assert (body["stage"], body["step"], body["manifest"]) == ("sft", 7, "m.parquet")
    # concept 3's only draw diverged (NaN): no signal, left out
    assert [loss["concept_id"] for loss in body["losses"]] == [None, 1, 2]
    assert not (tmp_path / "elsewhere").exists()


def test_no_key_no_header(monkeypatch):
    monkeypatch.delenv("ZCURATE_API_KEY", raising=False)
    assert auth_headers() == {}
    monkeypatch.setenv("ZCURATE_API_KEY", "r-key")
    assert auth_headers() == {"Authorization": "Bearer r-key"}
