"""Manifests for ``/v1/manifests``: the id at once, the build in a background thread.

A request's id is ``engine.manifest``'s manifest_id, computed up front from Parquet footers, the
stage's feedback reports and boosts (milliseconds, no table scan), so identical requests get the
same id and a manifest whose files exist is ``ready`` without any work. Builds run one at a time
in a single worker thread: a build holds the pool in memory (~1 GB per 10M samples), and two at
once on the 2-core box would only finish later together. A build is a thread, not a child process
like a curation job, because it is plain numpy/Arrow work that needs no cancelling.

Build records live in memory: after a restart a manifest is ``ready`` (its files) or unknown.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from engine.curation.manifest import ManifestError, build_manifest, check_size
from engine.curation.manifest_identity import gather_inputs
from engine.curation.manifest_store import list_manifests
from engine.curation.recipe import Recipe
from engine.workspace import Workspace

log = logging.getLogger("zcurate.api")

STATUSES = ("pending", "running", "ready", "failed")
MAX_RECORDS = 1000  # finished build records kept (ready ones are found on disk anyway)
MAX_SIDECARS = 256  # parsed sidecars kept: a manifest's files never change under its id


@dataclass
class Build:
    """One manifest the service was asked for."""

    id: str  # engine.manifest manifest_id: 16 hex digits
    stage: str
    status: str = "pending"
    created: float | None = field(default_factory=time.time)  # None: found on disk, not built here
    started: float | None = None
    finished: float | None = None
    error: str = ""  # why it failed (ManifestError's message)
    retry: bool = False  # failed for a reason other than the data (I/O, memory): a new request retries


class ManifestBuilder:
    """Manifest ids on request, builds in one worker thread, sidecars from disk."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.builds: OrderedDict[str, Build] = OrderedDict()
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="manifest")
        self._sidecars: OrderedDict[str, dict] = OrderedDict()

    def request(self, recipe: Recipe, seed: int, size: int | None) -> Build:
        """The build of (recipe, seed, size): an existing one, a ready one on disk, or a new one queued.

        Raises ManifestError for a size below 1 (before any work).
        """
        check_size(size)
        found = gather_inputs(self.ws, recipe, seed, size)
        rel = self.ws.manifest_rel(recipe.stage, found.manifest_id)
        with self._lock:
            build = self.builds.get(found.manifest_id)
            on_disk = self.ws.exists(f"{rel}.parquet") and self.ws.exists(f"{rel}.json")
            if build is not None and (
                build.status in ("pending", "running")
                or (build.status == "failed" and not build.retry)
                or (build.status == "ready" and on_disk)  # ready, and its files were not removed since
            ):
                return build
            if on_disk:
                build = Build(found.manifest_id, recipe.stage, "ready", finished=time.time())
            else:
                build = Build(found.manifest_id, recipe.stage)
                self._worker.submit(self._run, build, recipe, seed, size)
            self._remember(build)
        return build

    def _remember(self, build: Build) -> None:
        self.builds[build.id] = build
        self.builds.move_to_end(build.id)
        finished = [b.id for b in self.builds.values() if b.status in ("ready", "failed")]
        for old in finished[: max(0, len(finished) - MAX_RECORDS)]:
            del self.builds[old]

    def _run(self, build: Build, recipe: Recipe, seed: int, size: int | None) -> None:
        build.status, build.started = "running", time.time()
        try:
            result = build_manifest(self.ws, recipe, seed, size)
        except ManifestError as e:
            build.status, build.error = "failed", str(e)
        except Exception as e:  # not the data's fault (disk full, memory): logged, and a new request retries
            log.exception("manifest build %s failed", build.id)
            build.status, build.error, build.retry = "failed", f"{type(e).__name__}: {e}", True
        else:
            if result.manifest_id == build.id:
                build.status = "ready"
            else:  # a table, report or boost changed between the request and the build
                build.status, build.retry = "failed", True
                build.error = f"the workspace changed before the build: built {result.manifest_id} instead"
        build.finished = time.time()

    def stage_of(self, manifest_id: str) -> str | None:
        """The stage folder holding a complete manifest (Parquet and sidecar) of this id, if any."""
        root = self.ws.path(self.ws.manifests)
        try:
            stages = sorted(os.listdir(root))
        except FileNotFoundError:
            return None
        for stage in stages:
            rel = self.ws.manifest_rel(stage, manifest_id)
            if os.path.isfile(self.ws.path(f"{rel}.parquet")) and os.path.isfile(self.ws.path(f"{rel}.json")):
                return stage
        return None

    def get(self, manifest_id: str) -> Build | None:
        """The build record of an id: the one in memory, else a ready one from disk, else None."""
        build = self.builds.get(manifest_id)
        if build is not None and (build.status != "ready" or self.stage_of(manifest_id) == build.stage):
            return build
        stage = self.stage_of(manifest_id)  # a ready one whose files were removed is gone too
        return None if stage is None else Build(manifest_id, stage, "ready", created=None)

    def sidecar(self, build: Build) -> dict:
        """The JSON sidecar of a ready manifest (kept parsed: the files of an id never change)."""
        with self._lock:
            if build.id in self._sidecars:
                self._sidecars.move_to_end(build.id)
                return self._sidecars[build.id]
        sidecar = json.loads(self.ws.read_text(f"{self.ws.manifest_rel(build.stage, build.id)}.json"))
        with self._lock:
            self._sidecars[build.id] = sidecar
            while len(self._sidecars) > MAX_SIDECARS:
                self._sidecars.popitem(last=False)
        return sidecar

    def data_path(self, build: Build) -> str:
        return self.ws.path(f"{self.ws.manifest_rel(build.stage, build.id)}.parquet")

    def listing(self, stage: str | None = None) -> list[dict]:
        """Ready manifests on disk (engine.manifest.list_manifests), then builds not ready yet."""
        rows = [
            {"id": m["manifest_id"], "stage": m["stage"], "status": "ready"}
            | {"rows": m["rows"], "seed": m["seed"], "size": m["size"]}
            for m in list_manifests(self.ws, stage)
        ]
        ready = {row["id"] for row in rows}
        with self._lock:
            builds = list(self.builds.values())
        for b in builds:
            if b.id not in ready and b.status != "ready" and stage in (None, b.stage):
                rows.append({"id": b.id, "stage": b.stage, "status": b.status, "error": b.error})
        return rows

    def shutdown(self) -> None:
        # A running build finishes (numpy cannot be interrupted); queued ones are dropped.
        self._worker.shutdown(wait=False, cancel_futures=True)
