"""What a job shows while it runs: a progress bar per step on a terminal, one line per step otherwise.

A step with a known amount of work (shards) draws a tqdm bar on a terminal (stderr is a TTY) that
stays on screen when it ends; in a log (CI, ``ray job submit``, a service's job file) a bar's
redraws are noise, so the step prints one line when it ends instead: ``curate: 8/8 shards in
12.3 s``. A step without a count (building the indexes, tagging) prints its line in both cases.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm


class StepLine:
    """The stand-in for a bar: counts, and prints one line when the step ends."""

    def __init__(self, desc: str, total: int | None, unit: str):
        self.desc, self.total, self.unit, self.n = desc, total, unit, 0
        self.started = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        seconds = time.perf_counter() - self.started
        done = "done" if self.total is None else f"{self.n}/{self.total} {self.unit}s"
        print(f"{self.desc}: {done} in {seconds:.1f} s", file=sys.stderr, flush=True)


@contextmanager
def step_progress(
    desc: str, total: int | None = None, unit: str = "shard", show: bool | None = None
) -> Iterator[tqdm | StepLine]:
    """A bar or a one-line summary for one step of a job; the yielded object has ``update(n)``.

    Args:
        total: the step's units of work (None: a step without a count, shown as one line).
        show: None: a bar on a terminal, a line otherwise; True: a bar; False: nothing (tests).
    """
    if show is False:
        bar = tqdm(total=total, disable=True)
    elif total is not None and (show or sys.stderr.isatty()):
        bar = tqdm(total=total, desc=desc, unit=unit, leave=True)
    else:
        bar = StepLine(desc, total, unit)
    try:
        yield bar
    finally:
        bar.close()
