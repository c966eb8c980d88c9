"""A second NSFW opinion: NudeNet's exposed-body-part detector (the ``nudity`` image stage).

NudeNet 3.4 (``nudenet`` on PyPI) ships its detector inside the wheel (``nudenet/320n.onnx``, a
YOLOv8-n at 320 px, 18 classes such as FEMALE_BREAST_EXPOSED or FACE_MALE); it is checked against
its sha256 and run with onnxruntime, never downloaded. Licence: the wheel's metadata says MIT but its
LICENSE file is the AGPL-3.0 (the model is trained with Ultralytics' AGPL YOLOv8); the package is
installed ``--no-deps`` by scripts/setup.sh (its opencv-python-headless would sit beside paddlex's
opencv-contrib-python, which provides the ``cv2`` it imports).

Preprocessing and decoding are the package's own (``nudenet.nudenet._read_image`` and
``_postprocess``, pinned to 3.4.2): the image, as OpenCV would read it from a file (BGR), padded
to a square at the bottom and right, resized to 320 x 320; boxes of class score >= 0.2, then
class-agnostic non-maximum suppression (score >= 0.25, IoU 0.45).

``nsfw_nudenet`` is the highest detection score among the explicit classes (``EXPOSED_CLASSES``)
in [0, 1], 0.0 when none is detected (so it is 0 or >= 0.25). It is a detector's confidence that an
explicit body part is visible, not a calibrated probability: use it beside open_nsfw's
``nsfw_score`` (``engine.profiling.safety``), e.g. drop a sample when either is high.

Device: as open_nsfw, the CPU by default, ``cuda:N`` through onnxruntime's CUDA provider (a warning
and the CPU without it).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from engine import schema
from engine.devices import device_index, is_cuda, onnx_providers
from engine.profiling.image_batch import batch_images

NUDENET_MODEL_FILE = "320n.onnx"
NUDENET_SHA256 = "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f"  # nudenet 3.4.2's file
NUDENET_SIDE = 320  # the detector's input side (the package's default inference_resolution)
NUDENET_BATCH = 8  # images per onnxruntime call on the CPU: 8 x 3 x 320 x 320 floats, ~10 MB
NUDENET_GPU_BATCH = 128  # on CUDA: fewer launches, ~160 MB of input
# The classes that make an image explicit. Left out on purpose: the *_COVERED classes, faces, feet,
# armpits, belly and MALE_BREAST_EXPOSED (a bare-chested man is not NSFW for a training set).
EXPOSED_CLASSES = frozenset(
    {
        "FEMALE_BREAST_EXPOSED",
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)


class NudityModelError(ValueError):
    """The NudeNet detector cannot be loaded; the message is one line."""


def bundled_nudenet_model() -> str:
    """Path of the ONNX file inside the installed ``nudenet`` package (found without importing it)."""
    from engine.profiling.safety import bundled_file

    hint = "scripts/setup.sh installs it --no-deps"
    return bundled_file("nudenet", NUDENET_MODEL_FILE, NudityModelError, hint)


@dataclass
class NudityModel:
    """NudeNet's detector in an onnxruntime session."""

    session: object  # onnxruntime.InferenceSession
    path: str
    device: str = "cpu"  # where the session runs: cpu, or cuda:N when the CUDA provider took it

    @property
    def batch_size(self) -> int:
        """Images per onnxruntime call: ``NUDENET_GPU_BATCH`` on CUDA, ``NUDENET_BATCH`` on the CPU."""
        return NUDENET_GPU_BATCH if is_cuda(self.device) else NUDENET_BATCH

    def preprocess(self, image) -> tuple[np.ndarray, tuple]:
        """RGB PIL image -> (the (1, 3, 320, 320) float32 input, what decoding its boxes needs)."""
        from nudenet.nudenet import _read_image

        bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])  # as cv2.imread gives it
        blob, x_ratio, y_ratio, x_pad, y_pad, width, height = _read_image(bgr, NUDENET_SIDE)
        return blob, (x_pad, y_pad, x_ratio, y_ratio, width, height)

    def detect(self, inputs: list[tuple[np.ndarray, tuple]]) -> list[list[dict]]:
        """Preprocessed images -> the package's detections per image ({class, score, box})."""
        from nudenet.nudenet import _postprocess

        name = self.session.get_inputs()[0].name
        found: list[list[dict]] = []
        for start in range(0, len(inputs), self.batch_size):
            chunk = inputs[start : start + self.batch_size]
            (output,) = self.session.run(None, {name: np.concatenate([blob for blob, _ in chunk])})
            for row, (_, meta) in enumerate(chunk):
                found.append(_postprocess([output[row : row + 1]], *meta, NUDENET_SIDE, NUDENET_SIDE))
        return found

    def score_inputs(self, inputs: list[tuple[np.ndarray, tuple]]) -> np.ndarray:
        """Preprocessed images -> ``nsfw_nudenet`` per image, float32 in [0, 1]."""
        return np.array([exposed_score(d) for d in self.detect(inputs)], dtype=np.float32)

    def score_images(self, images: list) -> np.ndarray:
        """RGB PIL images -> ``nsfw_nudenet`` per image."""
        return self.score_inputs([self.preprocess(im) for im in images])


def exposed_score(detections: list[dict]) -> float:
    """The highest score among detections of an explicit class (``EXPOSED_CLASSES``); 0.0 if none."""
    return max((d["score"] for d in detections if d["class"] in EXPOSED_CLASSES), default=0.0)


def load_nudity_model(
    path: str | None = None, threads: int | None = None, device: str = "cpu"
) -> NudityModel:
    """Load NudeNet's detector (the bundled file, checked against its sha256, unless ``path`` names
    another export of it); ``device`` is ``cpu`` or ``cuda:N`` (already resolved)."""
    import onnxruntime as ort

    from_package = path is None
    path = path or bundled_nudenet_model()
    if not os.path.isfile(path):
        raise NudityModelError(f"NudeNet model {path} does not exist")
    if from_package:
        with open(path, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        if digest != NUDENET_SHA256:
            raise NudityModelError(f"{path}: sha256 {digest[:12]}... is not nudenet 3.4.2's; reinstall it")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = onnx_providers(device)  # warns and gives the CPU provider when CUDA is missing
    try:
        session = ort.InferenceSession(path, sess_options=options, providers=providers)
    except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
        raise NudityModelError(f"cannot load NudeNet model {path}: {str(e).splitlines()[0]}") from e
    cuda = is_cuda(device) and "CUDAExecutionProvider" in session.get_providers()
    if is_cuda(device) and not cuda and len(providers) > 1:  # installed, but it did not start
        warnings.warn(
            f"onnxruntime's CUDA provider did not start on {device}: NudeNet on the CPU",
            stacklevel=2,
        )
    return NudityModel(session, path, f"cuda:{device_index(device)}" if cuda else "cpu")


def nudity_batch(model: NudityModel, batch: pa.Table) -> pa.Table:
    """The ``nudity`` rows of a batch (``schema.IMAGE_BATCH`` in, ``schema.NUDITY`` out), one per row
    in order: the score once per distinct image, null for an image that fails to preprocess."""
    images, image_of_row = batch_images(batch)
    inputs: list[tuple | None] = []
    for image in images:
        try:
            inputs.append(model.preprocess(image))
        except Exception:  # one bad image gets a null score; the batch goes on
            inputs.append(None)
    scored = [i for i, x in enumerate(inputs) if x is not None]
    scores = np.full(len(images), np.nan, dtype=np.float32)
    scores[scored] = model.score_inputs([inputs[i] for i in scored])
    per_row = scores[image_of_row]
    return pa.table(
        {
            "sample_id": batch["sample_id"],
            "image_id": batch["image_id"],
            "nsfw_nudenet": pa.array(per_row, pa.float32(), mask=np.isnan(per_row)),
        },
        schema=schema.NUDITY,
    )
