"""Property-based fuzz of the OpenAPI schema (schemathesis): whatever it sends, no 5xx.

Every operation is called with the read+write key (so the fuzz reaches the handlers, not only
the auth check) and once more without a key. POST /v1/jobs can start nothing here: the
session workspace has no source folder, and the workspace's own folders are refused. POST
/v1/manifests builds at most a few manifests of the small workspace (most stages it invents are
no recipe), and POST /v1/feedback files reports under the stage names it invents.
"""

from __future__ import annotations

import tempfile

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from api.main import create_app  # noqa: E402
from api.settings import Settings  # noqa: E402
from tests.api.conftest import auth  # noqa: E402

EXAMPLES = 30  # per operation: 15 operations x 30 cases in ~35 s on 2 cores


# The schema does not depend on the workspace: take it from an app over an existing folder
# (nothing is written before the app starts serving), and send the cases to the real server.
schema = schemathesis.openapi.from_dict(create_app(tempfile.gettempdir(), Settings()).openapi())


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_no_input_gives_a_server_error(case, base_url):
    for headers in (auth("writer"), {}):
        response = case.call(base_url=base_url, headers=headers, timeout=60)
        assert response.status_code < 500, (case.method, case.path, response.status_code, response.text[:300])
        if response.status_code >= 400:
            body = response.json()
            assert set(body) == {"error"} and body["error"]["code"], body
