"""Starting Ray the same way for every job: a local Ray when RAY_ADDRESS is unset, the cluster when set."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

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
