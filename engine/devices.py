"""Devices: what ``--device auto|cpu|cuda|cuda:N`` means, for every model the image stages load.

One rule for every stage (embed, safety, OCR) and for FAISS: ``auto`` is the first CUDA device when
torch sees one, else the CPU; ``cuda`` is ``cuda:0``; a CUDA device that is not there is a one-line
error, not a silent fall-back (a job that asked for a GPU and ran on the CPU would be ~100x slower
without saying so). The ONNX models (open_nsfw, RapidOCR) run on onnxruntime's CUDA provider when
the ``[gpu]`` extra's ``onnxruntime-gpu`` is installed, else on the CPU provider with a warning.
"""

from __future__ import annotations

import re

DEVICE_HELP = "auto (CUDA when present, else CPU) | cpu | cuda | cuda:N"
GPUS_PER_ACTOR = 0.125  # GPU share one stage actor requests on CUDA: eight actors share a GPU, so
# one actor's decoding and Parquet writes overlap the others' forward passes


class DeviceError(ValueError):
    """A device string that is malformed or names a device this machine does not have."""


def cuda_device_count() -> int:
    """CUDA devices torch can use (0 when torch is missing or was built without CUDA)."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_device(device: str | None) -> str:
    """``auto``/None/``cpu``/``cuda``/``cuda:N`` -> ``cpu`` or ``cuda:N`` (checked against the machine)."""
    text = (device or "auto").strip().lower()
    if text == "cpu":
        return "cpu"
    count = cuda_device_count()
    if text == "auto":
        return "cuda:0" if count else "cpu"
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if not match:
        raise DeviceError(f"unknown device {device!r}: use {DEVICE_HELP}")
    number = int(match.group(1) or 0)
    if number >= count:
        seen = f"{count} CUDA device(s)" if count else "no CUDA device"
        raise DeviceError(f"device {device!r} is not available: this machine has {seen} (use --device cpu)")
    return f"cuda:{number}"


def is_cuda(device: str) -> bool:
    return device.startswith("cuda")


def device_index(device: str) -> int:
    """The N of ``cuda:N`` (0 for ``cuda``)."""
    return int(device.partition(":")[2] or 0)


def stage_gpus(device: str, gpus_per_actor: float | None = None) -> float:
    """The ``num_gpus`` a stage actor requests from Ray: a share of a GPU on CUDA, 0 on the CPU."""
    if not is_cuda(device):
        return 0.0
    share = GPUS_PER_ACTOR if gpus_per_actor is None else float(gpus_per_actor)
    if not 0 < share <= 1:
        raise DeviceError(f"GPUs per actor must be in (0, 1], not {share}")
    return share


def onnx_providers(device: str) -> list:
    """onnxruntime execution providers for ``device``: CUDA first when asked for and installed."""
    import onnxruntime as ort

    if is_cuda(device):
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return [("CUDAExecutionProvider", {"device_id": device_index(device)}), "CPUExecutionProvider"]
        import warnings

        warnings.warn(
            "onnxruntime has no CUDA provider (the [gpu] extra's onnxruntime-gpu): running on the CPU",
            stacklevel=2,
        )
    return ["CPUExecutionProvider"]


def actor_device(device: str) -> str:
    """The device to load a model on inside the current process: a Ray actor that was given a GPU
    sees only that GPU (Ray sets CUDA_VISIBLE_DEVICES), so its ``cuda:N`` is ``cuda:0``."""
    if not is_cuda(device):
        return device
    try:
        import ray

        if ray.is_initialized() and ray.get_gpu_ids():
            return "cuda:0"
    except Exception:  # not in a Ray worker: the device as resolved
        pass
    return device
