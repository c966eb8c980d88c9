"""Where a training or sampling run executes: its device and torch's intra-op threads.

Device: ``engine.devices.resolve_device``'s rule, as every image stage has it (``auto`` is the first
CUDA device when torch sees one, else the CPU; a CUDA device that is not there is an error).

Threads: torch's own default depends on its build (GNU OpenMP follows the process's affinity mask,
other builds count the machine's cores, including cores a ``taskset``, a Slurm or Ray allocation or
a container's cpuset keeps the process off, and then run more threads than cores). ``zcurate
train`` and ``sample`` set the intra-op threads explicitly, the same on every build: to the CPUs
the process may use (``os.sched_getaffinity``), or to ``--threads``. ``bench/bench_threads.py``
measures that choice against 1, 2 and all threads.
"""

from __future__ import annotations

import os

import torch

from engine.devices import resolve_device


def allowed_cpus() -> int:
    """CPUs this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return os.cpu_count() or 1


def default_threads(threads: int | None) -> int:
    """``threads`` when given, else :func:`allowed_cpus`."""
    if threads is not None and threads < 1:
        raise ValueError(f"--threads must be at least 1, not {threads}")
    return allowed_cpus() if threads is None else threads


def pick_device(name: str) -> torch.device:
    """``auto|cpu|cuda|cuda:N`` as a torch device (engine.devices' rule; DeviceError, a
    ValueError, for a malformed name or a CUDA device this machine lacks)."""
    return torch.device(resolve_device(name))


class TorchThreads:
    """Set torch's intra-op threads for a block and put the caller's setting back after it.

    ``None`` leaves them as they are (a library caller that set ``torch.set_num_threads`` itself).
    """

    def __init__(self, threads: int | None):
        self.threads = threads
        self.before = torch.get_num_threads()

    def __enter__(self) -> int:
        if self.threads is not None:
            torch.set_num_threads(default_threads(self.threads))
        return torch.get_num_threads()

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.before)
