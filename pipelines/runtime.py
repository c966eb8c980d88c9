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

Work (``map_shards``): a pool of Ray actors, one per CPU (or per GPU share), each building the
job's worker once (models load once per actor) and taking shards one after another, two queued so
it never waits for the scheduler. The pool is plain Ray Core (``ray.remote(...).options``), not Ray
Data's ``map``: Ray Data retries a task forever unless told otherwise through ``ray_remote_args``,
which Ray 2.60 deprecates with no named replacement, and it logs its own execution notices.

Faults: an exception in one shard's worker is caught on the worker and becomes a failure record;
a worker process that dies (a decoder segfault, OOM, a lost node) fails the shards it held and is
replaced by a new actor, which takes shards once it has started (Ray neither restarts it nor runs
its shards again: ``max_restarts=0``, ``max_task_retries=0``); every shard that failed is tried
again in a new round, one at a time per actor, up to ``MAX_ATTEMPTS`` in all. The shards that
still fail are returned as failures; every other shard completes.

Output: a normal run prints no Ray notice. Ray's logging is at WARNING and above, and the one
warning every local Ray 2.60 prints, that token authentication is enabled (its new default, which we
keep), is dropped by a filter on that message alone; every other warning and error stays visible.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from engine.workspace import Workspace
from pipelines.progress import step_progress

# No usage-stats prompt or upload: these machines reach no network beyond package registries.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# The notice Ray 2.60 logs at WARNING for every new local Ray: token auth is on (as we want it).
TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"

logger = logging.getLogger(__name__)
SHIP_CODE_ENV = "ZCURATE_RAY_SHIP_CODE"  # "1": send engine/ and pipelines/ to the cluster's workers
MAX_ATTEMPTS = 3  # tries per shard: a lost node or a flaky read gets two more chances; a file that
# kills its worker every time costs three worker restarts (a few seconds each), then is reported
WORKER_DIED = "the worker process died (a crash in native code, out of memory, or a lost node)"
START_TIMEOUT_S = 600  # how long a round waits for a replacement worker when no other has work: a
# worker loads its models first (tens of seconds on a busy machine); one that cannot be placed at all
# (its node is gone and the other workers hold every CPU) is given up on, its items wait a round


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
    auth_logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    auth_logger.addFilter(_drop_token_notice)
    try:
        ray.init(address=address, **kwargs)
    finally:
        auth_logger.removeFilter(_drop_token_notice)
    try:
        yield
    finally:
        ray.shutdown()


def _drop_token_notice(record: logging.LogRecord) -> bool:
    """A logging filter: False (drop) for Ray's token-auth notice only (module docstring)."""
    return not record.getMessage().startswith(TOKEN_NOTICE)


class ShardActor:
    """A Ray actor that builds the real worker once and runs it on one item at a time, turning the
    worker's exception into a failure (the item's other shards and the actor go on)."""

    def __init__(self, worker: type, worker_kwargs: dict):
        self.worker = worker(**worker_kwargs)

    def ready(self) -> bool:
        """Answers once the worker is built: a replacement gets items after this."""
        return True

    def run(self, item: dict) -> tuple[dict | None, str]:
        """(the worker's result, "") or (None, a one-line error naming where it was raised)."""
        try:
            return self.worker(item), ""
        except Exception as e:  # one shard's bug or bad file must not fail the other shards
            last = traceback.extract_tb(e.__traceback__)[-1]
            return None, f"{type(e).__name__}: {e} (at {os.path.basename(last.filename)}:{last.lineno})"


def map_shards(
    items: list[dict],
    worker: type,
    worker_kwargs: dict,
    desc: str,
    progress: bool | None = None,
    num_gpus: float = 0,
) -> tuple[list[dict], list[ShardFailure]]:
    """Run ``worker(**worker_kwargs)(item)`` for every item on a pool of Ray actors (module docstring).

    Call inside ``ray_session``.

    Args:
        items: JSON-able dicts, one per unit of work (a shard).
        desc: the step's name on its progress bar or line. progress: draw a bar (default: when
            stderr is a terminal; otherwise one line when the step ends).
        num_gpus: GPUs per actor (the largest any of the worker's stages asks for).

    Returns:
        (the workers' results in completion order, the items that failed every attempt).
    """
    results: list[dict] = []
    errors: dict[int, str] = {}
    todo = list(range(len(items)))
    with step_progress(desc, len(items), "shard", progress) as bar:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            if not todo:
                break
            # Retries run one shard per actor at a time: a shard whose file kills the process then
            # takes no queued neighbour down with it.
            queued = 2 if attempt == 1 else 1
            for key, (result, error) in run_round(items, todo, worker, worker_kwargs, num_gpus, queued):
                if error:
                    errors[key] = error
                else:
                    errors.pop(key, None)
                    results.append(result)
                    bar.update(1)
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


def pool_size(items: int, num_gpus: float) -> int:
    """Actors for a round: one per CPU of the cluster (at most one per item), fewer when each needs
    a share of the cluster's GPUs."""
    import ray

    resources = ray.cluster_resources()
    actors = max(1, min(items, int(resources.get("CPU", 1))))
    if num_gpus:
        actors = max(1, min(actors, int(resources.get("GPU", 0) / num_gpus) or 1))
    return actors


def run_round(
    items: list[dict], keys: list[int], worker: type, worker_kwargs: dict, num_gpus: float, queued: int
) -> Iterator[tuple[int, tuple[dict | None, str]]]:
    """One pass over ``items[key]`` for ``keys`` on a fresh pool of actors, ``queued`` items in flight
    per actor; yields (key, (result, error)) for every key, as items finish.

    An actor whose process dies fails the items it held (``WORKER_DIED``) and is replaced by a new
    one, which gets items once it has started. The round ends when every item is done; items that
    no worker could take (a replacement that cannot start, or cannot be placed because its node is
    gone and the other workers hold every CPU) come back failed, for the next round.
    """
    import ray

    actor_class = ray.remote(ShardActor).options(
        num_cpus=1,
        num_gpus=num_gpus or None,
        max_restarts=0,  # a dead worker is replaced by the round itself (below), not restarted by Ray
        max_task_retries=0,  # and its items are not run again behind our back: the rounds count them
        scheduling_strategy="SPREAD",  # one actor per node first, as a cluster user expects
    )
    waiting, actors = list(keys), []
    calls: dict = {}  # object ref -> (item key, or None for a start-up check; the actor called)
    error = WORKER_DIED  # what the items no worker took are told

    def give(actor, n: int) -> None:
        for _ in range(min(n, len(waiting))):
            key = waiting.pop(0)
            calls[actor.run.remote(items[key])] = (key, actor)

    def start(check: bool):
        actors.append(actor_class.remote(worker, worker_kwargs))
        if check:  # a replacement: it gets items once it answers
            calls[actors[-1].ready.remote()] = (None, actors[-1])
        return actors[-1]

    try:
        for _ in range(pool_size(len(keys), num_gpus)):
            give(start(check=False), queued)
        while calls:
            working = any(key is not None for key, _ in calls.values())
            if not working and not waiting:
                break  # only start-up checks are left, and nothing needs them any more
            done, _ = ray.wait(list(calls), num_returns=1, timeout=None if working else START_TIMEOUT_S)
            if not done:
                break  # no worker could start in time: the rest waits for the next round
            key, actor = calls.pop(done[0])
            try:
                value = ray.get(done[0])
            except ray.exceptions.RayActorError as e:
                error = worker_error(e)
                if key is not None:
                    yield key, (None, error)
                    if not any(a is actor for _, a in calls.values()):  # its last call: replace it
                        start(check=True)
                continue
            if key is not None:
                yield key, value
            give(actor, 1 if key is not None else queued)
        for key in waiting:
            yield key, (None, error)
    finally:
        for actor in actors:
            ray.kill(actor)


def worker_error(e: Exception) -> str:
    """The one-line error of an item whose actor died: ``WORKER_DIED``, or why the worker could
    not start at all (its set-up raised: a model file that is missing, say)."""
    text = str(e)
    if "creation task" not in text:
        return WORKER_DIED
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"the worker could not start: {lines[-1]}"
