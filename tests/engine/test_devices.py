"""--device: one rule for every stage (engine.devices)."""

from __future__ import annotations

import pytest

from engine.devices import DeviceError, cuda_device_count, resolve_device, stage_gpus

NO_GPU = cuda_device_count() == 0


def test_cpu_and_auto():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == resolve_device(None) == ("cpu" if NO_GPU else "cuda:0")


@pytest.mark.skipif(not NO_GPU, reason="checks the error on a machine without CUDA")
def test_a_missing_gpu_is_an_error_not_a_silent_cpu_run():
    with pytest.raises(DeviceError, match=r"no CUDA device \(use --device cpu"):
        resolve_device("cuda")
    with pytest.raises(DeviceError, match="not available"):
        resolve_device("cuda:3")


def test_malformed_devices_are_named():
    with pytest.raises(DeviceError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_actors_take_a_share_of_a_gpu_only_on_cuda():
    assert stage_gpus("cpu") == 0
    assert stage_gpus("cuda:0") == 0.125 and stage_gpus("cuda:0", 0.5) == 0.5
    with pytest.raises(DeviceError, match=r"in \(0, 1\]"):
        stage_gpus("cuda:0", 2)


@pytest.mark.skipif(not NO_GPU, reason="checks the error on a machine without CUDA")
def test_the_stages_refuse_a_missing_gpu_before_any_work():
    from pipelines.stages import EmbedStage, SafetyStage

    for make in (lambda: EmbedStage(device="cuda"), lambda: SafetyStage(device="cuda:1")):
        with pytest.raises(DeviceError):
            make()
