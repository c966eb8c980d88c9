"""OCR: what text is in an image, where, and whether the caption says it (paper section 2.1).

``load_ocr(config)`` loads one of two real backends over PaddleOCR's PP-OCR models
(``engine.profiling.ocr_backends``: PaddleOCR 3.x or RapidOCR); ``read_image(ocr, image)`` reads
one decoded image into lines in reading order; ``engine.profiling.ocr_signals.ocr_signals`` turns
that into the columns of ``schema.OCR``. The models and the offline set-up are in
``engine.profiling.ocr_models``, the repair of dropped word spaces in ``engine.profiling.ocr_spaces``.

The embedded default models are PaddleOCR's PP-OCRv4 mobile detection and recognition models and
its v2.0 text-line orientation (0/180 degree) classifier, in the ONNX form that ships inside the
``rapidocr-onnxruntime`` wheel; other PaddleOCR model directories (e.g. PP-OCRv5 server, in Paddle
or ONNX format) are chosen by config. Nothing is downloaded.

Sizes. Images with a side under ``MIN_SIDE`` px give an empty result. Images with a side over
``max_side`` (4000 px) are downscaled to it first (recognition crops come from that copy); the
detector itself sees the image resized so that its longer side is ``det_side_limit`` (960 px,
PaddleOCR's own default for the PP-OCRv5 detectors): text smaller than ~8 px after that resize is
not found, which is what a text-rendering signal can afford. A ``PAD`` px border of replicated
edge pixels is added before detection (see ``read_image``).
"""

from __future__ import annotations

import contextlib

import numpy as np
import pyarrow as pa
from PIL import Image

from engine import schema
from engine.profiling.image_batch import batch_images, batch_rows
from engine.profiling.ocr_backends import BACKENDS, PaddleOcrBackend, RapidOcrBackend
from engine.profiling.ocr_models import MAX_SIDE, MIN_SIDE, OCR_BACKENDS, PAD, OcrConfig, OcrModelError
from engine.profiling.ocr_signals import OcrLine, OcrResult, ocr_signals, text_rows


def load_ocr(config: OcrConfig | None = None) -> PaddleOcrBackend | RapidOcrBackend:
    """Load the configured backend (seconds: imports and model sessions); call once per process."""
    config = config or OcrConfig()
    if config.backend not in BACKENDS:
        raise OcrModelError(
            f"unknown OCR backend {config.backend!r}: fix --ocr-backend (one of {', '.join(OCR_BACKENDS)})"
        )
    return BACKENDS[config.backend](config)


def read_image(ocr, image: Image.Image, max_side: int = MAX_SIDE) -> OcrResult:
    """OCR one decoded image: lines in reading order with boxes in the image's own pixels."""
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        return OcrResult(width, height)
    scale = 1.0
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
    rgb = np.asarray(image.convert("RGB"))
    # Replicated edge pixels around the image: the detector misses text that runs edge to edge
    # in a narrow image (a tightly cropped label rotated by 90 degrees) without them.
    bgr = np.ascontiguousarray(np.pad(rgb[:, :, ::-1], ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge"))
    lines = []
    for text, score, box in ocr.read(bgr):
        text = " ".join(text.split())
        if not text:
            continue
        points = (np.asarray(box, dtype=np.float64).reshape(4, 2) - PAD) / scale
        points[:, 0] = points[:, 0].clip(0, width)
        points[:, 1] = points[:, 1].clip(0, height)
        box = [[round(float(x), 1), round(float(y), 1)] for x, y in points]
        lines.append(OcrLine(text, round(float(score), 4), box))
    return OcrResult(width, height, [line for row in text_rows(lines) for line in row])


def ocr_batch(ocr, batch: pa.Table, max_side: int = MAX_SIDE) -> pa.Table:
    """The ``ocr`` rows of a batch (``schema.IMAGE_BATCH`` in, ``schema.OCR`` out), one per row in
    order: each distinct image read once, the caption overlap per row. An image the OCR fails on
    gets a row of nulls (the batch goes on)."""
    images, image_of_row = batch_images(batch)
    read: list[OcrResult | None] = []
    for image in images:
        try:
            read.append(read_image(ocr, image, max_side))
        except Exception:  # one image that breaks the OCR must not fail the shard: nulls
            read.append(None)
    rows = []
    for sample_id, image_id, caption, image in batch_rows(batch, image_of_row):
        row = {"sample_id": sample_id, "image_id": image_id}
        if read[image] is not None:
            with contextlib.suppress(Exception):  # a degenerate box must not fail the shard either
                row.update(ocr_signals(read[image], caption))
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=schema.OCR)
