"""Curation jobs for ``/v1/jobs``: ``zcurate curate`` run on Ray in a child process, one at a time.

A child process, not a thread, because a Ray job cannot be stopped from another thread of the
same process, and a crash of a decoder must not take the service down. Cancel sends SIGINT
(the job's ``finally`` shuts its Ray down), then SIGKILL to the process group after a grace
period. The curate job resumes, so a cancelled job rerun later loses only unfinished shards.

Progress is read from the workspace, not from the child: the job saves its shard plan
(``WS/_plans/<kind>-<key>.parquet``) before any work, then writes each step's table shard by
shard (``signals``, each image stage's table, then ``samples`` as the mark of a finished shard).
So ``rows done / total`` per step is the rows in that step's finished shards of this source over
the records planned (image stages write a row per usable record, so they can end below total).

Each job's last known state is a record beside its log, ``WS/_jobs/<id>.json``, rewritten
atomically at every change (submitted, started, finished), so a restarted service still answers
for its jobs. A job that was pending or running when the service died is reported ``failed``
(the curate job resumes: submitting it again loses only unfinished shards); its child process,
which outlives the service in its own session, is stopped first so two jobs never write at once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from engine import schema
from engine.profiling.records import SourceError
from engine.profiling.source import load_source
from engine.workspace import Workspace

log = logging.getLogger("zcurate.api")

STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
CANCEL_GRACE_S = 20.0  # SIGINT -> SIGKILL: Ray's shutdown takes a few seconds on 2 cores
LOG_TAIL = 4000  # bytes of the child's output kept as the error of a failed job
# What the workspace writes itself, besides its tables and the "_" folders (_plans, _tmp, _jobs...).
WORKSPACE_OWN = frozenset(
    {*schema.TABLES, Workspace.index_root, Workspace.manifests, Workspace.feedback, Workspace.boosts}
    | {Workspace.train, Workspace.catalog_file, "models.json"}
)


class JobError(ValueError):
    """A job request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


@dataclass
class Job:
    """One curation job and what is known about it."""

    id: str
    source: str  # as the client gave it
    location: str  # the resolved path (or "openclipart")
    steps: list[str]  # image stages after ingest and profile
    limit: int | None
    shard_size: int
    plan_path: str  # workspace-relative path of the plan the job writes first
    prefix: str  # the shard ids of this source start with it
    status: str = "pending"
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    returncode: int | None = None
    error: str = ""
    pid: int | None = None  # the child's process id, and its start time: an orphan found after a
    pid_start: str | None = None  # restart is stopped only if it is still that process
    process: subprocess.Popen | None = field(default=None, repr=False)
    cancel_requested: bool = False


RECORD_FIELDS = tuple(
    f.name for f in dataclasses.fields(Job) if f.name not in ("process", "cancel_requested")
)
RESTARTED = (
    "the service restarted while the job was {}: submit it again (it resumes from its finished shards)"
)


def resolve_source(source: str, root: str, workspace: str | None = None) -> str:
    """The path of a job source, which must lie inside ``root`` (after resolving links and ..).

    The word ``openclipart`` names the bundled demo source. Remote URIs are refused: the service
    cannot confine them. The workspace itself and its own folders (tables, index, ``_plans``...)
    are refused too: curating them would read the job's own output.
    """
    if source == "openclipart":
        return source
    if not source or "\x00" in source or "://" in source:
        raise JobError(400, "invalid_source", "source must be 'openclipart' or a path under the source root")
    real_root = os.path.realpath(root)
    path = os.path.realpath(os.path.join(real_root, source))
    if os.path.commonpath([real_root, path]) != real_root:
        raise JobError(400, "path_outside_root", "source path escapes the source root")
    if not os.path.exists(path):
        raise JobError(404, "source_not_found", f"no such source under the source root: {source}")
    if workspace is not None:
        real_ws = os.path.realpath(workspace)
        inside = os.path.commonpath([real_ws, path]) == real_ws
        top = os.path.relpath(path, real_ws).split(os.sep)[0] if inside else ""
        if inside and (path == real_ws or top in WORKSPACE_OWN or top.startswith("_")):
            raise JobError(
                400, "invalid_source", "a source cannot be the workspace or one of its own folders"
            )
    return path


class JobRunner:
    """Starts, follows and cancels the jobs of one workspace; each job's state is recorded there."""

    def __init__(self, ws: Workspace, source_root: str | None = None, num_cpus: int | None = None):
        self.ws = ws
        self.source_root = source_root or ws.root
        self.num_cpus = num_cpus
        self.jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._load()

    def _record_rel(self, job_id: str) -> str:
        return f"{self.ws.jobs}/{job_id}.json"

    def _save(self, job: Job) -> None:
        """Rewrite the job's record (atomically: a reader sees the old state or the new one)."""
        record = {name: getattr(job, name) for name in RECORD_FIELDS}
        self.ws.write_text(self._record_rel(job.id), json.dumps(record, indent=1) + "\n")

    def _save_logged(self, job: Job) -> None:
        # In the job's thread there is no one to answer: a record that cannot be written is logged.
        try:
            self._save(job)
        except OSError:
            log.exception("cannot record job %s in %s", job.id, self.ws.root)

    def _load(self) -> None:
        """The jobs recorded in the workspace, oldest first; those a dead service left pending or
        running are failed (their orphan process stopped)."""
        jobs = []
        for name in self.ws.list_files(self.ws.jobs, ".json"):
            try:
                record = json.loads(self.ws.read_text(f"{self.ws.jobs}/{name}"))
                jobs.append(Job(**{k: record[k] for k in RECORD_FIELDS if k in record}))
            except (OSError, ValueError, TypeError) as e:  # unreadable or hand-edited: skipped, not fatal
                log.warning("skipping job record %s: %s", name, e)
        for job in sorted(jobs, key=lambda j: j.created):
            if job.status in ("pending", "running"):
                if job.pid is not None and job.pid_start is not None:
                    stop_orphan(job.pid, job.pid_start)
                job.error = RESTARTED.format(job.status)
                job.status, job.finished = "failed", job.finished or time.time()
                self._save_logged(job)
            self.jobs[job.id] = job

    def submit(self, source: str, steps: list[str], limit: int | None, shard_size: int) -> Job:
        """Validate a request, record it and start its job in the background; 409 while another runs."""
        from pipelines.stages import IMAGE_STAGES

        unknown = [s for s in steps if s not in IMAGE_STAGES]
        if unknown:
            known = ", ".join(sorted(IMAGE_STAGES))
            raise JobError(422, "invalid_steps", f"unknown step {unknown[0]!r} (steps: {known})")
        location = resolve_source(source, self.source_root, self.ws.root)
        try:
            src = load_source(location)
        except SourceError as e:
            raise JobError(400, "invalid_source", str(e)) from None
        prefix = f"{src.kind}-{src.key}"
        job = Job(
            id=uuid.uuid4().hex,
            source=source,
            location=location,
            steps=list(dict.fromkeys(steps)),
            limit=limit,
            shard_size=shard_size,
            plan_path=self.ws.plan_rel(prefix),
            prefix=prefix,
        )
        with self._lock:
            if any(j.status in ("pending", "running") for j in self.jobs.values()):
                raise JobError(
                    409, "job_running", "a job is already running on this workspace: wait or cancel it"
                )
            try:
                self._save(job)  # recorded before it starts, so a restart never loses it
            except OSError as e:
                raise JobError(
                    503,
                    "workspace_unwritable",
                    f"cannot record the job in the workspace ({e}): check its free space and permissions",
                ) from None
            self.jobs[job.id] = job
            thread = threading.Thread(target=self._run, args=(job,), name=f"job-{job.id[:8]}", daemon=True)
            self._threads[job.id] = thread
        thread.start()
        return job

    def command(self, job: Job) -> list[str]:
        cmd = [sys.executable, "-m", "cli", "curate", job.location, "--workspace", self.ws.root]
        cmd += ["--stages", ",".join(job.steps) or "profile", "--shard-size", str(job.shard_size)]
        if job.limit is not None:
            cmd += ["--limit", str(job.limit)]
        if self.num_cpus:
            cmd += ["--num-cpus", str(self.num_cpus)]
        return cmd

    def _run(self, job: Job) -> None:
        import engine

        repo = os.path.dirname(os.path.dirname(os.path.abspath(engine.__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
        os.makedirs(self.ws.path(self.ws.jobs), exist_ok=True)
        log_path = self.ws.path(self.ws.jobs, f"{job.id}.log")
        with open(log_path, "wb") as out:
            with self._lock:
                if job.cancel_requested:
                    job.status, job.finished = "cancelled", time.time()
                    self._save_logged(job)
                    return
                try:
                    job.process = subprocess.Popen(
                        self.command(job),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
                except OSError as e:  # no fork, no Python: the job fails, it does not hang as pending
                    job.status, job.finished = "failed", time.time()
                    job.error = f"cannot start the job ({e}): check the service's environment"
                    self._save_logged(job)
                    return
                job.status, job.started = "running", time.time()
                job.pid, job.pid_start = job.process.pid, process_start(job.process.pid)
                self._save_logged(job)
            job.returncode = job.process.wait()
        job.finished = time.time()
        if job.cancel_requested:
            job.status = "cancelled"
        elif job.returncode == 0:
            job.status = "succeeded"
        else:
            job.status = "failed"
            with open(log_path, "rb") as f:
                f.seek(max(0, os.path.getsize(log_path) - LOG_TAIL))
                lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines() if ln.strip()]
            job.error = lines[-1] if lines else f"exit code {job.returncode}"
        self._save_logged(job)

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError(404, "not_found", f"no job {job_id}: GET /v1/jobs lists this workspace's jobs")
        return job

    def cancel(self, job_id: str) -> Job:
        """Ask a job to stop (SIGINT, then SIGKILL after a grace period); finished jobs stay as they are."""
        job = self.get(job_id)
        with self._lock:
            if job.status not in ("pending", "running"):
                return job
            job.cancel_requested = True
            process = job.process
        if process is not None:
            threading.Thread(target=stop_process, args=(process,), daemon=True).start()
        return job

    def shutdown(self) -> None:
        """Stop every running job and wait for it to be recorded ``cancelled`` (the service is going down)."""
        for job in list(self.jobs.values()):
            if job.status in ("pending", "running"):
                job.cancel_requested = True
                if job.process is not None:
                    stop_process(job.process)
        for thread in list(self._threads.values()):
            thread.join(timeout=10)

    def progress(self, job: Job) -> dict:
        """rows_done / rows_total overall (finished shards) and per step, from the workspace."""
        from pipelines.stages import build_image_stages

        steps = [("ingest", "samples"), ("profile", "signals")]
        steps += [(stage.name, stage.table) for stage in build_image_stages(job.steps)]
        rows_total = shards_total = 0
        if self.ws.exists(job.plan_path):
            plan = pq.read_table(self.ws.path(job.plan_path), columns=["shard"])
            if job.limit is not None:
                plan = plan.slice(0, job.limit)
            rows_total = plan.num_rows
            shards_total = (max(plan["shard"].to_pylist()) + 1) if plan.num_rows else 0
        per_step = []
        for name, table in steps:
            shards = [s for s in self.ws.list_shards(table) if s.startswith(job.prefix + "-")]
            rows = sum(pq.ParquetFile(self.ws.shard_path(table, s)).metadata.num_rows for s in shards)
            per_step.append(
                {
                    "step": name,
                    "rows_done": rows,
                    "rows_total": rows_total,
                    "shards_done": min(len(shards), shards_total),
                    "shards_total": shards_total,
                }
            )
        return {"rows_done": per_step[0]["rows_done"], "rows_total": rows_total, "steps": per_step}


def stop_process(process: subprocess.Popen) -> None:
    """SIGINT to the job's process group, SIGKILL if it is still there after the grace period."""
    for sig, wait in ((signal.SIGINT, CANCEL_GRACE_S), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            return
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def process_start(pid: int) -> str | None:
    """When a live process started (Linux ``/proc/PID/stat``, field 22), None if it is gone or a
    zombie: with the pid it names one process, not a later one that got the same pid."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def stop_orphan(pid: int, started: str) -> None:
    """Stop a job process a dead service left behind (it leads its own process group, Ray's
    workers included): SIGINT, then SIGKILL after the grace period. Only if ``pid`` is still the
    process that started at ``started``."""
    for sig, wait in ((signal.SIGINT, CANCEL_GRACE_S), (signal.SIGKILL, 5.0)):
        if process_start(pid) != started:
            return
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and process_start(pid) == started:
            time.sleep(0.1)
