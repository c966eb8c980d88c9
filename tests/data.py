"""Test data: real small images written to disk, one per bad-input case."""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from PIL import Image


def png_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **params)
    return buffer.getvalue()


def jpeg_bytes(image: Image.Image, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **params)
    return buffer.getvalue()


def noise_image(seed: int, size=(48, 32), mode="RGB") -> Image.Image:
    """A deterministic random image: real pixels, distinct per seed."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "CMYK": 4}.get(mode, 1)
    shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


@dataclass
class Case:
    """One record of the bad-input folder and what ingest must make of it."""

    image_name: str | None  # file name in the folder (None: no image file)
    image: bytes | None
    caption: bytes | None  # written as <stem>.txt (None: no sidecar)
    status: str
    reason: str | None = None  # reject_reason when rejected
    warnings: set[str] = field(default_factory=set)  # warnings that must be present when ok
    caption_json: bool = False  # write the caption as <stem>.json instead


def bad_input_cases() -> dict[str, Case]:
    """Every bad-input case of the foundation issue, keyed by file stem."""
    good = noise_image(1)
    truncated = jpeg_bytes(noise_image(2, (64, 64)))
    corrupt = bytearray(png_bytes(noise_image(3, (64, 64))))
    idat = corrupt.index(b"IDAT")
    corrupt[idat + 40 : idat + 200] = bytes(160)  # zeroed deflate data: header fine, pixels not
    animated = io.BytesIO()
    frames = [noise_image(4, mode="L").convert("P"), noise_image(5, mode="L").convert("P")]
    frames[0].save(animated, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    rotated = noise_image(6, size=(40, 20))
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": stored 40x20, shown 20x40
    sixteen = Image.fromarray(np.arange(32 * 48, dtype=np.uint16).reshape(32, 48) * 40)  # mode I;16
    palette = noise_image(7, mode="L").convert("P")
    alpha = noise_image(8, mode="RGBA")
    bomb = Image.new("1", (12_000, 9_000))  # 108 MP, a ~15 kB PNG: a real decompression bomb
    return {
        "good": Case("good.jpg", jpeg_bytes(good), b"a good photo", "ok"),
        "good_json": Case(
            "good_json.png", png_bytes(noise_image(9)), b'{"caption": "from json"}', "ok", caption_json=True
        ),
        "corrupt": Case("corrupt.png", bytes(corrupt), b"corrupt data", "rejected", "corrupt_image"),
        "truncated": Case(
            "truncated.jpg", truncated[: len(truncated) // 2], b"cut short", "rejected", "truncated_image"
        ),
        "zero": Case("zero.jpg", b"", b"zero bytes", "rejected", "empty_file"),
        "not_image": Case(
            "not_image.png", b"this is plain text, not a PNG\n" * 4, b"text file", "rejected", "not_an_image"
        ),
        "wrong_ext": Case(
            "wrong_ext.jpg",
            png_bytes(noise_image(10)),
            b"a png named jpg",
            "ok",
            warnings={"extension_mismatch"},
        ),
        "animated": Case(
            "animated.gif",
            animated.getvalue(),
            b"two frames",
            "ok",
            warnings={"animated_first_frame", "converted_mode"},
        ),
        "cmyk": Case(
            "cmyk.jpg",
            jpeg_bytes(noise_image(11, mode="CMYK")),
            b"cmyk photo",
            "ok",
            warnings={"converted_mode"},
        ),
        "sixteen_bit": Case(
            "sixteen_bit.png", png_bytes(sixteen), b"16-bit grey", "ok", warnings={"converted_mode"}
        ),
        "palette": Case(
            "palette.png", png_bytes(palette), b"palette image", "ok", warnings={"converted_mode"}
        ),
        "alpha": Case(
            "alpha.png",
            png_bytes(alpha),
            b"transparent image",
            "ok",
            warnings={"converted_mode", "alpha_flattened"},
        ),
        "rotated": Case(
            "rotated.jpg", jpeg_bytes(rotated, exif=exif), b"rotated by exif", "ok", warnings={"exif_rotated"}
        ),
        "bomb": Case("bomb.png", png_bytes(bomb, optimize=True), b"huge", "rejected", "decompression_bomb"),
        "no_caption": Case("no_caption.png", png_bytes(noise_image(12)), None, "rejected", "missing_caption"),
        "empty_caption": Case(
            "empty_caption.png", png_bytes(noise_image(13)), b"  \n\t ", "rejected", "empty_caption"
        ),
        "latin1": Case(
            "latin1.png",
            png_bytes(noise_image(14)),
            "café au lait".encode("latin-1"),
            "ok",
            warnings={"caption_not_utf8"},
        ),
        "long_caption": Case(
            "long_caption.png",
            png_bytes(noise_image(15)),
            b"word " * 1000,
            "ok",
            warnings={"caption_truncated"},
        ),
        "control_chars": Case(
            "control_chars.png",
            png_bytes(noise_image(16)),
            b"bell\x07 and null\x00 chars",
            "ok",
            warnings={"caption_control_chars_removed"},
        ),
        "bad_json": Case(
            "bad_json.png",
            png_bytes(noise_image(17)),
            b'{"caption": "unterminated',
            "rejected",
            "malformed_caption_file",
            caption_json=True,
        ),
        "missing_image": Case(None, None, b"caption without its image", "rejected", "missing_file"),
        "dup_a": Case("dup_a.png", png_bytes(noise_image(18)), b"the same pair twice", "ok"),
        "dup_b": Case(
            "dup_b.png", png_bytes(noise_image(18)), b"the same pair twice", "rejected", "duplicate_sample"
        ),
        "same_image_other_caption": Case(
            "same_image_other_caption.png",
            png_bytes(noise_image(18)),
            b"the same image, another caption",
            "ok",
        ),
    }


def write_case_folder(folder: str, cases: dict[str, Case]) -> str:
    os.makedirs(folder, exist_ok=True)
    for stem, case in cases.items():
        if case.image_name is not None:
            with open(os.path.join(folder, case.image_name), "wb") as f:
                f.write(case.image)
        if case.caption is not None:
            ext = ".json" if case.caption_json else ".txt"
            with open(os.path.join(folder, stem + ext), "wb") as f:
                f.write(case.caption)
    return folder


def write_noise_folder(folder: str, n: int, size=(64, 64)) -> str:
    """n distinct PNG + caption pairs: the data for resume and throughput-shaped tests."""
    os.makedirs(folder, exist_ok=True)
    for i in range(n):
        noise_image(1000 + i, size).save(os.path.join(folder, f"{i:05d}.png"))
        with open(os.path.join(folder, f"{i:05d}.txt"), "w") as f:
            f.write(f"random noise picture number {i}")
    return folder


def caption_json(caption: str) -> bytes:
    return json.dumps({"caption": caption}).encode()


def image_batch(pairs) -> pa.Table:
    """A ``schema.IMAGE_BATCH`` of (sample_id, image_id, caption, PIL image) tuples, as the curate
    job's runner builds one (each distinct image_id once)."""
    from engine.profiling.image_batch import ImageBatchBuilder
    from engine.profiling.ingest import ImageInfo

    builder = ImageBatchBuilder(max_images=1 << 30, max_bytes=1 << 62)
    for sample_id, image_id, caption, image in pairs:
        row = {"sample_id": sample_id, "image_id": image_id, "caption": caption}
        builder.add(row, image.convert("RGB"), ImageInfo("PNG", "RGB", 24, 1000))
    return builder.take()


def run_shards_here(ws, source, plan, stages=()) -> list[dict]:
    """Every shard of a planned source through the curate job's runner, in this process (no Ray)."""
    from engine.profiling.ingest import IngestConfig
    from pipelines.curate import curate_runner_kwargs, shard_item
    from pipelines.runner import ShardRunner

    # curate_runner_kwargs prepares the stages (the embed stage registers its model), as curate does
    runner = ShardRunner(**curate_runner_kwargs(ws, source, plan, IngestConfig(), list(stages)))
    return [runner(shard_item(plan, index)) for index in range(plan.shard_count)]
