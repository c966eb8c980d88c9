"""Starting Ray the same way for every job, and running one worker per shard with faults isolated.

Where the job runs:

* ``RAY_ADDRESS`` unset: a local Ray started for the job (``num_cpus``), stopped at its end.
* ``RAY_ADDRESS`` set (or inside ``ray job submit``, which sets it): the existing cluster. Every
  node must be able to import ``engine`` and ``pipelines`` (the same image / venv on every node,
  the usual set-up) and reach the workspace and the source (a shared path or object storage).
  ``ZCURATE_RAY_SHIP_CODE=1`` ships this checkout's ``engine`` and ``pipelines`` to the workers
  through the job's runtime_env (``py_modules``) for clusters whose nodes have the dependencies
  but not our code; it is off by default because it uploads the packages (~8 MB, the bundled
  weights included) on every job.

Faults (``map_shards``): an exception in one shard's worker is caught on the worker and becomes a
failure record, a worker process that dies (a decoder segfault, OOM, a lost node) is restarted by
Ray, and every shard that did not come back is tried again, up to ``MAX_ATTEMPTS`` in all. The
shards that still fail are returned as failures; every other shard completes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tqdm import tqdm

from engine.workspace import Workspace

# No usage-stats prompt or upload: these machines reach no network beyond package registries.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

logger = logging.getLogger(__name__)
SHIP_CODE_ENV = "ZCURATE_RAY_SHIP_CODE"  # "1": send engine/ and pipelines/ to the cluster's workers
MAX_ATTEMPTS = 3  # tries per shard: a lost node or a flaky read gets two more chances; a file that
# kills its worker every time costs three worker restarts (a few seconds each), then is reported
WORKER_DIED = "the worker process died (a crash in native code, out of memory, or a lost node)"


@dataclass
class ShardFailure:
    """A work item that failed ``attempts`` times; ``error`` is the last failure's one-line reason."""

    item: dict
    error: str
    attempts: int


def record_failure(ws: Workspace, shard_id: str, table: str, failure: ShardFailure) -> str:
    """Write ``_failed/<shard_id>.json`` (the shard, the ``table`` it did not get, the error) and
    return the error. A rerun retries the shard; ``clear_failures`` drops the record once it has
    the table."""
    record = {"shard_id": shard_id, "table": table, "error": failure.error, "attempts": failure.attempts}
    ws.write_text(ws.failed_rel(shard_id), json.dumps(record, indent=1) + "\n")
    return failure.error


def clear_failures(ws: Workspace) -> None:
    """Remove the failure records of shards that have their table now."""
    for name in ws.list_files(ws.failed, ".json"):
        record = json.loads(ws.read_text(f"{ws.failed}/{name}"))
        if ws.has_shard(record["table"], record["shard_id"]):
            ws.fs.delete_file(ws.path(ws.failed, name))


class _DropNotice(logging.Filter):
    """Drops Ray Data's notice that its progress bars are off: the job draws its own bar."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Progress bars disabled" not in record.getMessage()


def code_runtime_env() -> dict | None:
    """The runtime_env that ships this checkout's packages to the workers, when the user asked."""
    if os.environ.get(SHIP_CODE_ENV, "") not in ("1", "true", "yes"):
        return None
    import engine
    import pipelines

    return {"py_modules": [os.path.dirname(engine.__file__), os.path.dirname(pipelines.__file__)]}


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[None]:
    """Connect to Ray for the duration of a job, and shut down what this job started.

    On a cluster the job's runtime_env ships our code when ``ZCURATE_RAY_SHIP_CODE=1``
    (``code_runtime_env``).

    Args:
        num_cpus: CPUs for a local Ray (default: all of this machine's). Ignored on a cluster.
    """
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already manages Ray
        yield
        return
    address = os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"include_dashboard": False, "logging_level": logging.WARNING, "configure_logging": True}
    if address is not None:
        kwargs["runtime_env"] = code_runtime_env()
    else:
        kwargs["num_cpus"] = num_cpus or os.cpu_count()
        # The curate job moves shard summaries, not images, through the object store: 1 GiB is
        # ample and leaves the rest of the machine's memory to the decoding workers.
        kwargs["object_store_memory"] = 1 << 30
    ray.init(address=address, **kwargs)
    logging.getLogger("ray.data._internal.progress").addFilter(_DropNotice())
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job draws its own bar per shard
    context.print_on_execution_start = False
    try:
        yield
    finally:
        ray.shutdown()


class _Guarded:
    """Runs the real worker on one row and turns its exception into a failure row.

    The row carries the item's position (``key``) so the driver knows which items came back.
    Results travel as JSON text: Ray Data need not infer one Arrow type for every worker's dict.
    """

    def __init__(self, worker: type, worker_kwargs: dict):
        self.worker = worker(**worker_kwargs)

    def __call__(self, row: dict) -> dict:
        try:
            result = self.worker(json.loads(row["item"]))
        except Exception as e:  # one shard's bug or bad file must not fail the other shards
            last = traceback.extract_tb(e.__traceback__)[-1]
            error = f"{type(e).__name__}: {e} (at {os.path.basename(last.filename)}:{last.lineno})"
            return {"key": row["key"], "result": "", "error": error}
        return {"key": row["key"], "result": json.dumps(result), "error": ""}


def map_shards(
    items: list[dict],
    worker: type,
    worker_kwargs: dict,
    desc: str,
    progress: bool | None = None,
    num_gpus: float = 0,
) -> tuple[list[dict], list[ShardFailure]]:
    """Run ``worker(**worker_kwargs)(item)`` for every item on a Ray Data actor pool.

    One actor per CPU (models set up once per actor), each with two items queued so it never
    waits for the scheduler between items. An item whose worker raised, or whose worker process
    died (Ray restarts the actor; a lost node's actors come back on the nodes left), is run again
    in a new round, up to ``MAX_ATTEMPTS`` times in all; retry rounds queue one item per actor, so
    an item that kills its process fails alone. Call inside ``ray_session``.

    Args:
        items: JSON-able dicts, one per unit of work (a shard).
        desc: the progress bar's label. progress: draw it (default: when stderr is a terminal).
        num_gpus: GPUs per actor (the largest any of the worker's stages asks for).

    Returns:
        (the workers' results in completion order, the items that failed every attempt).
    """
    results: list[dict] = []
    errors: dict[int, str] = {}
    todo = list(range(len(items)))
    show = sys.stderr.isatty() if progress is None else progress
    with tqdm(total=len(items), unit="shard", disable=not show, desc=desc) as bar:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if not todo:
                break
            came_back = set()
            # Retries run one shard per worker process at a time: a shard whose file kills the
            # process then takes no queued neighbour down with it.
            queued = 2 if attempt == 1 else 1
            for row in _run_round(items, todo, worker, worker_kwargs, num_gpus, queued):
                came_back.add(row["key"])
                if row["error"]:
                    errors[row["key"]] = row["error"]
                else:
                    errors.pop(row["key"], None)
                    results.append(json.loads(row["result"]))
                    bar.update(1)
            for key in todo:
                if key not in came_back:  # its task failed: the worker process died under it
                    errors[key] = WORKER_DIED
            todo = sorted(errors)
            if todo and attempt < MAX_ATTEMPTS:
                logger.warning(
                    "%s: %d shards failed (attempt %d of %d), trying them again; first error: %s",
                    desc,
                    len(todo),
                    attempt,
                    MAX_ATTEMPTS,
                    errors[todo[0]],
                )
    failures = [ShardFailure(items[key], errors[key], MAX_ATTEMPTS) for key in todo]
    return results, failures


def _run_round(
    items: list[dict], keys: list[int], worker: type, worker_kwargs: dict, num_gpus: float, queued: int
):
    """One Ray Data execution over ``items[key]`` for ``keys`` (``queued`` items in flight per
    actor); yields the ``_Guarded`` rows."""
    import ray

    # A task whose actor died is dropped from the execution instead of failing every other
    # shard; map_shards notices the missing row and tries that item again.
    ray.data.DataContext.get_current().max_errored_blocks = -1
    rows = [{"key": key, "item": json.dumps(items[key])} for key in keys]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    workers = max(1, min(len(rows), int(ray.cluster_resources().get("CPU", 1))))
    if num_gpus:
        workers = max(1, min(workers, int(ray.cluster_resources().get("GPU", 0) / num_gpus) or 1))
    pool = ray.data.ActorPoolStrategy(
        min_size=1, max_size=workers, initial_size=workers, max_tasks_in_flight_per_actor=queued
    )
    dataset = dataset.map(
        _Guarded,
        fn_constructor_kwargs={"worker": worker, "worker_kwargs": worker_kwargs},
        compute=pool,
        num_cpus=1,
        num_gpus=num_gpus or None,
        # Ray restarts a dead actor (max_restarts=-1, Ray Data's default) but does not retry the
        # task itself: the next round does, so one count (MAX_ATTEMPTS) bounds every kind of retry.
        # (Ray Data's default, retry forever, would loop on a file that kills its worker. Passed
        # as a ray_remote_arg, deprecated for 2.64: Ray 2.60, which we pin, has no named one.)
        max_task_retries=0,
    )
    yield from dataset.iter_rows()
