"""Manifests for ``/v1/manifests``: the id at once, the build in a background thread.

A request's id is ``engine.manifest``'s manifest_id, computed up front from Parquet footers, the
stage's feedback reports and boosts (milliseconds, no table scan), so identical requests get the
same id and a manifest whose files exist is ``ready`` without any work. Builds run one at a time
in a single worker thread: a build holds the pool in memory (~1 GB per 10M samples), and two at
once on the 2-core box would only finish later together. A build is a thread, not a child process
like a curation job, because it is plain numpy/Arrow work that needs no cancelling.

Each build the service queues is recorded in ``WS/_builds/<id>.json`` (its recipe, seed, size and
state; rewritten atomically at every change), so a restarted service still answers for it. A
build is deterministic, so one that was pending or running when the service died is queued again
at start, if the workspace still gives the same id; if the data, reports or boosts changed since,
the request cannot be built as asked any more and is reported failed (ask again).
"""

from __future__ import annotations

import contextlib
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
from engine.curation.manifest_store import list_manifests, sidecar_recipe
from engine.curation.recipe import Recipe, parse_recipe
from engine.workspace import Workspace

log = logging.getLogger("zcurate.api")

STATUSES = ("pending", "running", "ready", "failed")
MAX_RECORDS = 1000  # finished build records kept (ready ones are found on disk anyway)
MAX_SIDECARS = 256  # parsed sidecars kept: a manifest's files never change under its id
RECORD_FIELDS = ("id", "stage", "status", "created", "started", "finished", "error", "retry")
REQUEST_FIELDS = ("recipe", "recipe_file", "seed", "size")  # what a re-run after a restart needs


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
    recipe: Recipe | None = field(default=None, repr=False)  # what was asked (None: found on disk)
    seed: int = 0
    size: int | None = None


class ManifestBuilder:
    """Manifest ids on request, builds in one worker thread, sidecars from disk, records in the workspace."""

    def __init__(self, ws: Workspace):
        self.ws = ws
        self.builds: OrderedDict[str, Build] = OrderedDict()
        self._lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="manifest")
        self._sidecars: OrderedDict[str, dict] = OrderedDict()
        self._load()

    # --- records --------------------------------------------------------------------------------

    def _record_rel(self, manifest_id: str) -> str:
        return f"{self.ws.builds}/{manifest_id}.json"

    def _save(self, build: Build) -> None:
        """Rewrite a build's record atomically (a reader sees the old state or the new one)."""
        record = {name: getattr(build, name) for name in RECORD_FIELDS}
        record |= {"recipe": build.recipe.to_dict(), "recipe_file": build.recipe.source}
        record |= {"seed": build.seed, "size": build.size}
        self.ws.write_text(self._record_rel(build.id), json.dumps(record, indent=1) + "\n")

    def _save_logged(self, build: Build) -> None:
        # In the worker thread there is no one to answer: a record that cannot be written is logged.
        try:
            self._save(build)
        except OSError:
            log.exception("cannot record manifest build %s in %s", build.id, self.ws.root)

    def _load(self) -> None:
        """The builds recorded in the workspace, oldest first; interrupted ones queued again."""
        builds = []
        for name in self.ws.list_files(self.ws.builds, ".json"):
            try:
                record = json.loads(self.ws.read_text(f"{self.ws.builds}/{name}"))
                build = Build(
                    **{k: record[k] for k in RECORD_FIELDS}, seed=record["seed"], size=record["size"]
                )
                build.recipe = parse_recipe(record["recipe"], record["recipe_file"] or name)
            except (OSError, ValueError, TypeError, KeyError) as e:  # unreadable or hand-edited: skipped
                log.warning("skipping manifest build record %s: %s", name, e)
                continue
            builds.append(build)
        for build in sorted(builds, key=lambda b: b.created or 0.0):
            if build.status in ("pending", "running"):
                self._resume(build)
            self.builds[build.id] = build
        self._trim()

    def _resume(self, build: Build) -> None:
        """Queue an interrupted build again, if the workspace still gives its id; else fail it."""
        try:
            same = gather_inputs(self.ws, build.recipe, build.seed, build.size).manifest_id == build.id
        except (
            Exception
        ) as e:  # a workspace the identity cannot be read from: the build fails, the service starts
            log.exception("cannot resume manifest build %s", build.id)
            same, build.error = False, f"{type(e).__name__}: {e}"
        build.started = build.finished = None
        if same:
            build.status, build.error = "pending", ""
            self._worker.submit(self._run, build)
        else:
            build.status, build.retry, build.finished = "failed", True, time.time()
            build.error = build.error or (
                "the workspace changed while the service was down, so this build cannot be made as "
                "asked: request the manifest again (POST /v1/manifests)"
            )
        self._save_logged(build)

    def _remember(self, build: Build) -> None:
        self.builds[build.id] = build
        self.builds.move_to_end(build.id)
        self._trim()

    def _trim(self) -> None:
        """Forget the oldest finished records past MAX_RECORDS, in memory and in the workspace."""
        finished = [b.id for b in self.builds.values() if b.status in ("ready", "failed")]
        for old in finished[: max(0, len(finished) - MAX_RECORDS)]:
            del self.builds[old]
            with contextlib.suppress(OSError):  # a build found on disk has no record
                self.ws.fs.delete_file(self.ws.path(self._record_rel(old)))

    # --- builds ---------------------------------------------------------------------------------

    def request(self, recipe: Recipe, seed: int, size: int | None) -> Build:
        """The build of (recipe, seed, size): an existing one, a ready one on disk, or a new one queued.

        Raises ManifestError for a size below 1 (before any work), OSError when the build cannot
        be recorded in the workspace.
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
            build = Build(found.manifest_id, recipe.stage, recipe=recipe, seed=seed, size=size)
            if on_disk:  # recorded too: a record of an earlier failure must not outlive the files
                build.status, build.finished = "ready", time.time()
                self._save_logged(build)
            else:
                self._save(build)  # recorded before it is queued, so a restart never loses it
                self._worker.submit(self._run, build)
            self._remember(build)
        return build

    def refresh(self, manifest_id: str) -> Build | None:
        """The manifest a ready one becomes over the workspace as it is now: its sidecar's recipe,
        seed and size requested again (after a feedback report: a new id, built in the background),
        as the local trainer's ``engine.s3dit.data.rebuild_manifest`` does. None for an id with
        no manifest on disk."""
        stage = self.stage_of(manifest_id)
        if stage is None:
            return None
        sidecar = self.sidecar(Build(manifest_id, stage, "ready", created=None))
        recipe = sidecar_recipe(sidecar, sidecar.get("recipe_file") or manifest_id)
        return self.request(recipe, sidecar["seed"], sidecar["size"])

    def _run(self, build: Build) -> None:
        build.status, build.started = "running", time.time()
        self._save_logged(build)
        try:
            result = build_manifest(self.ws, build.recipe, build.seed, build.size)
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
                build.error = (
                    f"the workspace changed before the build: built {result.manifest_id} instead; "
                    "request the manifest again"
                )
        build.finished = time.time()
        self._save_logged(build)

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
        """The build of an id: ready when its files are on disk (its record if it has a ready one),
        else its record while pending, running or failed, else None (a ready one whose files were
        removed is gone too)."""
        build = self.builds.get(manifest_id)
        stage = self.stage_of(manifest_id)
        if stage is None:
            return build if build is not None and build.status != "ready" else None
        if build is not None and build.status == "ready" and build.stage == stage:
            return build
        return Build(manifest_id, stage, "ready", created=None)

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
        # A running build finishes (numpy cannot be interrupted); queued ones are dropped here and,
        # still recorded pending, built by the next service on this workspace.
        self._worker.shutdown(wait=False, cancel_futures=True)
