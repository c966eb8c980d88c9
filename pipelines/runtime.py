"""Starting Ray the same way for every job: a local Ray when RAY_ADDRESS is unset, the cluster when set."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

# No usage-stats prompt or upload: these machines reach no network beyond package registries.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


class _DropNotice(logging.Filter):
    """Drops Ray Data's notice that its progress bars are off: the job draws its own bar."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Progress bars disabled" not in record.getMessage()


@contextmanager
def ray_session(num_cpus: int | None = None) -> Iterator[None]:
    """Connect to Ray for the duration of a job, and shut down what this job started.

    Args:
        num_cpus: CPUs for a local Ray (default: all of this machine's). Ignored on a cluster.
    """
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) already manages Ray
        yield
        return
    address = os.environ.get("RAY_ADDRESS") or None
    kwargs: dict = {"include_dashboard": False, "logging_level": logging.WARNING, "configure_logging": True}
    if address is None:
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


def map_shards(
    items: list[dict],
    worker: type,
    worker_kwargs: dict,
    desc: str,
    progress: bool | None = None,
    num_gpus: float = 0,
) -> list[dict]:
    """Run ``worker(**worker_kwargs)(item)`` for every item on a Ray Data actor pool.

    One actor per CPU (models set up once per actor), each with two items queued so it never
    waits for the scheduler between items. Ray restarts an actor whose process died (OOM, a
    decoder segfault) and retries its item. Call inside ``ray_session``. Returns the workers'
    results in completion order.

    Args:
        desc: the progress bar's label. progress: draw it (default: when stderr is a terminal).
        num_gpus: GPUs per actor (the largest any of the worker's stages asks for).
    """
    import ray

    if not items:
        return []
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    workers = max(1, min(len(items), int(ray.cluster_resources().get("CPU", 1))))
    if num_gpus:
        workers = max(1, min(workers, int(ray.cluster_resources().get("GPU", 0) / num_gpus) or 1))
    pool = ray.data.ActorPoolStrategy(
        min_size=1, max_size=workers, initial_size=workers, max_tasks_in_flight_per_actor=2
    )
    dataset = dataset.map(
        worker, fn_constructor_kwargs=worker_kwargs, compute=pool, num_cpus=1, num_gpus=num_gpus or None
    )
    show = sys.stderr.isatty() if progress is None else progress
    results = []
    with tqdm(total=len(items), unit="shard", disable=not show, desc=desc) as bar:
        for result in dataset.iter_rows():
            results.append(result)
            bar.update(1)
    return results
