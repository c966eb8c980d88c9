"""The trainer's talk with the engine: a manifest from a zcurate service, loss reports back to it.

A trainer that runs beside the workspace reads manifests and writes its concept-loss reports there
(:func:`engine.s3dit.concept_loss.send_feedback`). One that cannot (another machine, a container)
talks to a running service (``api/``, DESIGN.md section 8) instead: ``GET .../v1/manifests/ID/data``
for a manifest's Parquet, ``POST /v1/feedback`` for a report, with ``ZCURATE_API_KEY`` as the Bearer
key. ``ZCURATE_FEEDBACK_URL`` (the service's base URL) sends reports to the service.

A report names the manifest its draws came from; the service rebuilds that manifest over the new
report (as the local trainer's ``engine.s3dit.data.rebuild_manifest`` does beside the workspace)
and its answer names the new one. :func:`refreshed_manifest` then gives the new manifest's data URL
once it is built, so the trainer follows it as a local one does.
"""

from __future__ import annotations

import json
import math
import os
import time
import urllib.request

import pyarrow as pa
import pyarrow.parquet as pq

from engine.curation.manifest import ManifestError
from engine.s3dit.concept_loss import send_feedback
from engine.workspace import Workspace

MANIFEST_TIMEOUT_S = 600.0  # a large manifest is hundreds of MB: minutes on a slow link, not hours

FEEDBACK_TIMEOUT_S = 30.0  # a report is a few kB; a service that takes longer is down, and training stops

REPORT_FIELDS = ("concept_id", "samples", "loss_mean", "loss_std")  # one loss of the POST body
REFRESH_POLL_S = 0.5  # between looks at a refreshed manifest's build (seconds to minutes)

# The manifest the service rebuilt from this process's last report on a manifest: reported
# location -> the new manifest's status URL (one trainer per process; read by refreshed_manifest).
_refreshed: dict[str, str] = {}


def auth_headers() -> dict[str, str]:
    """``Authorization: Bearer $ZCURATE_API_KEY`` when the key is set, else no header."""
    key = os.environ.get("ZCURATE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def fetch_manifest(url: str) -> pa.Table:
    """A manifest from the service: ``GET {url}`` (``.../v1/manifests/ID/data``).

    The images its rows name must be readable here too.

    Raises:
        ManifestError: the service cannot be reached or answers with an error.
    """
    request = urllib.request.Request(url, headers=auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=MANIFEST_TIMEOUT_S) as response:
            data = response.read()
    except (OSError, ValueError) as e:  # URLError/HTTPError are OSErrors
        raise ManifestError(f"cannot fetch manifest {url!r}: {e}") from None
    return pq.read_table(pa.BufferReader(data))


def post_feedback(base_url: str, report: pa.Table) -> str:
    """POST a concept-loss report to ``{base_url}/v1/feedback``; returns its workspace path there.

    ``concept_id`` goes as an int or null (draws without a concept). Rows whose loss is not finite
    (a diverged batch) carry no signal and are left out.
    """
    rows = report.to_pylist()
    losses = [
        {k: r[k] for k in REPORT_FIELDS}
        for r in rows
        if math.isfinite(r["loss_mean"]) and math.isfinite(r["loss_std"])
    ]
    body = {**{k: rows[0][k] for k in ("stage", "step", "manifest")}, "losses": losses}
    headers = {"Content-Type": "application/json", **auth_headers()}
    url = f"{base_url.rstrip('/')}/v1/feedback"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    with urllib.request.urlopen(request, timeout=FEEDBACK_TIMEOUT_S) as response:
        answer = json.loads(response.read())
    if answer.get("refreshed"):
        _refreshed[body["manifest"]] = f"{base_url.rstrip('/')}/v1/manifests/{answer['refreshed']['id']}"
    return answer["path"]


def refreshed_manifest(current: str, timeout_s: float = MANIFEST_TIMEOUT_S) -> str | None:
    """The data URL of the manifest the service rebuilt from the last report on ``current``, once
    it is ready; None when no report posted here named ``current`` or the service rebuilt nothing.

    Raises:
        ManifestError: the build failed, took longer than ``timeout_s``, or the service cannot be reached.
    """
    status_url = _refreshed.pop(current, None)
    if status_url is None:
        return None
    deadline = time.monotonic() + timeout_s
    while True:
        request = urllib.request.Request(status_url, headers=auth_headers())
        try:
            with urllib.request.urlopen(request, timeout=FEEDBACK_TIMEOUT_S) as response:
                build = json.loads(response.read())
        except (OSError, ValueError) as e:  # URLError/HTTPError are OSErrors
            raise ManifestError(f"cannot follow the refreshed manifest {status_url!r}: {e}") from None
        if build["status"] == "ready":
            return f"{status_url}/data"
        if build["status"] == "failed":
            raise ManifestError(
                f"the service could not rebuild the manifest ({status_url}): {build['error']}"
            )
        if time.monotonic() > deadline:
            raise ManifestError(f"the refreshed manifest {status_url} was not built in {timeout_s:.0f} s")
        time.sleep(REFRESH_POLL_S)


def report_feedback(ws: Workspace, report: pa.Table) -> str:
    """Hand a concept-loss report to the engine; returns where it went (a workspace path).

    With ``ZCURATE_FEEDBACK_URL`` set (a service's base URL, e.g. ``http://curator:8000``) the
    report is POSTed to the service (:func:`post_feedback`), for a trainer that cannot write the
    workspace; otherwise :func:`send_feedback` writes it to ``ws``.
    """
    url = os.environ.get("ZCURATE_FEEDBACK_URL", "").rstrip("/")
    return post_feedback(url, report) if url else send_feedback(ws, report)
