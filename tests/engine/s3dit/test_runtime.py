"""Where a run executes: torch's threads from the CPUs the process may use (or --threads), put
back after the run; --device auto|cpu|cuda[:N] by the engine's one rule."""

from __future__ import annotations

import os

import pytest
import torch

from engine.devices import DeviceError
from engine.s3dit.runtime import TorchThreads, allowed_cpus, default_threads, pick_device


def test_the_default_is_the_cpus_this_process_may_use():
    assert allowed_cpus() == len(os.sched_getaffinity(0))
    assert default_threads(None) == allowed_cpus() and default_threads(3) == 3
    with pytest.raises(ValueError, match="at least 1"):
        default_threads(0)


def test_threads_are_set_for_the_block_and_put_back():
    before = torch.get_num_threads()
    with TorchThreads(2) as threads:
        assert threads == torch.get_num_threads() == 2
    assert torch.get_num_threads() == before
    with TorchThreads(None) as threads:  # a library caller's own setting stays
        assert threads == before


def test_devices_follow_the_engine_rule():
    assert pick_device("cpu") == torch.device("cpu")
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert pick_device("auto") == torch.device(expected)
    with pytest.raises(DeviceError, match="not available"):
        pick_device("cuda:99")
    with pytest.raises(DeviceError, match="unknown device"):
        pick_device("tpu")
