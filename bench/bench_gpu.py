"""GPU stages: the embed stage against its two ceilings (bare forward, JPEG decode), and the whole curate job.

One run, on one device (``--device auto|cpu|cuda|cuda:N``), over an openclipart-derived pair set
(``bench_scale.generate``: N pairs as WebDataset tars of ~1,000 JPEGs, variants 256-1,024 px),
for each model of ``--models`` (default ViT-B-32 and ViT-L-14, RANDOM weights:
``open_clip.create_model(arch, pretrained=None)`` saved once as a local checkpoint, loaded by the
engine through its normal ``ARCH@/path/arch.pt`` spec; nothing is downloaded):

* **bare forward** (the model's ceiling): the model alone on (batch, 3, 224, 224) tensors already
  on the device, under autocast (``--amp``, bf16 by default; fp32 on the CPU), ``--warmup``
  batches then ``--rounds`` timed batches of ``--batch`` images (default 512 for ViT-B-32, 256 for
  ViT-L-14); images/s. The caption forward (the text tower on the set's captions, same batch) is
  timed the same way and reported beside it, with the image+caption rate per pair.
* **decode ceiling**: every image of the tars read, decoded with PIL (as ingest does: EXIF
  orientation, RGB) and resized (bicubic, shorter side 224) and centre-cropped to 224, on K
  processes (``--procs``, default all cores), images/s. Where ``torchvision.io.decode_jpeg(...,
  device="cuda")`` works, the same JPEGs decoded by nvJPEG in batches and resized on the GPU, for
  comparison (the stages decode with PIL; which is faster is reported).
* **embed stage**: the set curated once without image stages (``run_curate(image_stages=[])``)
  into a temporary workspace (timed: the ingest rate); then per model, with no embeddings in the
  workspace, ``pipelines.backfill.run_image_stage(ws, stage)`` with the embed stage of that model on
  the device (``EmbedStage(model=spec, device=..., gpus_per_actor=...)``): per shard re-read, decode,
  preprocess, forwards, write. Usable images / seconds, in a Ray started once before (``ray.init``
  is timed on its own and reported; the rate with it added is in the JSON too); actor start-up and
  model loading are inside the time.
* **whole curate job**: ``run_curate`` over the first ``--curate-n`` records of the tars into a
  fresh workspace, with the OCR, embed (``--curate-model``, default the last of ``--models``) and
  safety stages on the device, then dedup, tags and the catalog: usable images / seconds.
* **ratios**: embed stage / bare forward, and embed stage / min(bare forward, PIL decode ceiling),
  naming the bound that holds. The issue's targets: the stage >= 0.85x of that lower bound, and
  ViT-L-14 at >= 2,000 images/s end to end on one GPU (checked for the embed stage and, when it
  ran ViT-L-14, the whole curate job).

The results file (``--json``, rewritten after every part so a stopped run keeps what it measured)
holds the GPU's name, the CUDA / torch / torchvision / open_clip / faiss / onnxruntime / ray
versions, the CPU count, the exact command line, the git commit and dirty flag read when the run
started (``ZCURATE_GIT_COMMIT`` / ``ZCURATE_GIT_DIRTY`` stand in where the checkout has no git,
e.g. a copied working tree), every rate and the settings.

Run by hand (``scripts/gpu_check.sh`` is the prepared run on a GPU machine)::

    python bench/bench_gpu.py --device cuda --json bench/results-gpu-h200.json
    .venv/bin/python bench/bench_gpu.py --device cpu --config tiny --json /tmp/gpu-tiny.json  # smoke test

The pairs are derived from Debian's openclipart (``--bases openclipart``); where it is not
installed (``--bases auto``), from scikit-image's bundled photos, read from its data folder, with
fixed captions (fewer, smaller bases: the JSON says which). ``--bases DIR`` takes any folder laid
out as openclipart (``png/**.png`` with ``svg/**.svg`` beside them).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
from contextlib import nullcontext, suppress
from xml.sax.saxutils import escape

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_scale  # noqa: E402  (the pair generator)

PARTS = ("decode", "bare", "stage", "curate")
DEFAULT_MODELS = ("ViT-B-32", "ViT-L-14")
MODEL_BATCH = {"ViT-B-32": 512, "ViT-L-14": 256}  # --batch defaults (others: 256)
TARGET_RATIO = 0.85  # the issue: the embed stage at >= 0.85x of min(bare forward, decode ceiling)
TARGET_L14 = 2000.0  # the issue: ViT-L-14 end to end at >= 2,000 images/s on one GPU
CONFIGS = {
    # the GPU run: scripts/gpu_check.sh passes a smaller --n / --curate-n to fit its time
    "full": {"n": 50_000, "curate_n": 10_000, "warmup": 3, "rounds": 20, "batch": None, "nvjpeg_batch": 256},
    # a smoke test that runs on a 2-core CPU in minutes
    "tiny": {"n": 200, "curate_n": 100, "warmup": 1, "rounds": 2, "batch": 8, "nvjpeg_batch": 16},
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
SIDE = 224
DECODE_CHUNK = 64  # images per decode task (K processes take chunks, so the tail is short)

# scikit-image's bundled photos, the fall-back bases: file -> (title, keywords)
SKIMAGE_BASES = {
    "astronaut.png": ("astronaut", ["portrait", "space suit", "flag"]),
    "brick.png": ("brick wall", ["texture", "grey"]),
    "camera.png": ("cameraman", ["photographer", "tripod", "black and white"]),
    "cell.png": ("cell", ["microscopy", "biology"]),
    "chelsea.png": ("cat", ["tabby", "pet", "animal"]),
    "clock_motion.png": ("clock", ["motion blur", "time"]),
    "coffee.png": ("coffee cup", ["saucer", "spoon", "drink"]),
    "coins.png": ("coins", ["money", "metal"]),
    "color.png": ("colour chart", ["test pattern"]),
    "grass.png": ("grass", ["texture", "lawn"]),
    "gravel.png": ("gravel", ["texture", "stones"]),
    "horse.png": ("horse", ["silhouette", "animal"]),
    "hubble_deep_field.jpg": ("deep field", ["galaxies", "space", "telescope"]),
    "ihc.png": ("tissue", ["immunohistochemistry", "stain"]),
    "logo.png": ("logo", ["snake", "graphic"]),
    "microaneurysms.png": ("retina", ["eye", "medical"]),
    "moon.png": ("moon", ["craters", "surface"]),
    "motorcycle_left.png": ("motorcycle", ["garage", "vehicle"]),
    "page.png": ("page of text", ["document", "scan"]),
    "phantom.png": ("phantom", ["test image", "tomography"]),
    "retina.jpg": ("retina", ["fundus", "eye", "medical"]),
    "rocket.jpg": ("rocket launch", ["space", "smoke"]),
    "text.png": ("text", ["letters", "sign"]),
}

T0 = time.perf_counter()


def log(message: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f} s] {message}", flush=True)


# --- run metadata ----------------------------------------------------------------------------------


def git_state() -> dict:
    """The checkout's commit and whether tracked files differ from it, read as the run starts."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        return {"commit": git("rev-parse", "HEAD"), "dirty": bool(git("status", "--porcelain", "-uno"))}
    except (OSError, subprocess.SubprocessError):  # a copied tree without .git: the caller says
        commit = os.environ.get("ZCURATE_GIT_COMMIT") or "unknown"
        dirty = os.environ.get("ZCURATE_GIT_DIRTY")
        return {"commit": commit, "dirty": None if dirty is None else dirty not in ("", "0"), "from": "env"}


def versions() -> dict:
    import importlib

    out: dict = {"python": platform.python_version()}
    for name, module in (
        ("torch", "torch"),
        ("torchvision", "torchvision"),
        ("open_clip", "open_clip"),
        ("faiss", "faiss"),
        ("onnxruntime", "onnxruntime"),
        ("ray", "ray"),
        ("pillow", "PIL"),
        ("numpy", "numpy"),
    ):
        try:
            out[name] = getattr(importlib.import_module(module), "__version__", "?")
        except Exception as e:  # recorded, not fatal: the part that needs it fails on its own
            out[name] = f"missing ({type(e).__name__})"
    try:
        import torch

        out["cuda"] = torch.version.cuda
        out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except ImportError:
        pass
    try:
        import onnxruntime

        out["onnxruntime_providers"] = onnxruntime.get_available_providers()
    except ImportError:
        pass
    try:
        import faiss

        out["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        pass
    return out


def device_info(device: str) -> dict:
    info: dict = {"device": device, "cpus": os.cpu_count(), "machine": platform.machine()}
    if device.startswith("cuda"):
        import torch

        index = int(device.partition(":")[2] or 0)
        props = torch.cuda.get_device_properties(index)
        info.update(
            gpu=torch.cuda.get_device_name(index),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            gpu_count=torch.cuda.device_count(),
        )
        with suppress(OSError, subprocess.SubprocessError):
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader", "-i", str(index)],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
    return info


# --- the pair set ----------------------------------------------------------------------------------


def skimage_bases(folder: str) -> str:
    """scikit-image's bundled photos laid out as openclipart (png/ + svg/ captions) in ``folder``."""
    from PIL import Image
    from skimage import data_dir

    for name, (title, keywords) in SKIMAGE_BASES.items():
        src = os.path.join(data_dir, name)
        if not os.path.exists(src):
            continue
        stem = os.path.splitext(name)[0]
        png = os.path.join(folder, "png", "photos", stem + ".png")
        svg = os.path.join(folder, "svg", "photos", stem + ".svg")
        if os.path.exists(png) and os.path.exists(svg):
            continue
        os.makedirs(os.path.dirname(png), exist_ok=True)
        os.makedirs(os.path.dirname(svg), exist_ok=True)
        with Image.open(src) as image:
            image.convert("RGB").save(png)
        items = "".join(f"<rdf:li>{escape(k)}</rdf:li>" for k in keywords)
        with open(svg, "w", encoding="utf-8") as f:  # read back by openclipart_caption: 'title: kw, kw'
            f.write(
                '<svg xmlns="http://www.w3.org/2000/svg" xmlns:cc="http://creativecommons.org/ns#" '
                'xmlns:dc="http://purl.org/dc/elements/1.1/" '
                'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><metadata><rdf:RDF><cc:Work>'
                f"<dc:title>{escape(title)}</dc:title><dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>"
                "</cc:Work></rdf:RDF></metadata></svg>"
            )
    return folder


def bases_kind(bases: str) -> str:
    """``--bases`` with ``auto`` resolved: openclipart where Debian's package is installed, else skimage."""
    if bases == "auto":
        return "openclipart" if os.path.isdir(os.path.join(bench_scale.OPENCLIPART, "png")) else "skimage"
    return bases


def resolve_bases(bases: str, data: str) -> tuple[str, str]:
    """(kind, openclipart-layout folder) of ``--bases``."""
    bases = bases_kind(bases)
    if bases == "openclipart":
        return bases, bench_scale.OPENCLIPART
    if bases == "skimage":
        return bases, skimage_bases(os.path.join(data, "bases-skimage"))
    if not os.path.isdir(os.path.join(bases, "png")):
        raise SystemExit(f"--bases {bases}: not 'auto', 'openclipart', 'skimage' or a folder with png/")
    return "folder", os.path.abspath(bases)


def generate(source_dir: str, n: int, procs: int, bases_root: str) -> dict:
    """``bench_scale.generate`` from the bases under ``bases_root`` (tars already there are kept)."""
    import warnings

    from PIL import Image

    bench_scale.OPENCLIPART = bases_root  # base_images() reads the module's root when it runs
    with warnings.catch_warnings():  # base_images() opens openclipart's huge sheets for their size
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return bench_scale.generate(source_dir, n, procs)


def index_tars(source_dir: str) -> tuple[list[tuple[str, int, int, str]], list[str]]:
    """Every image member of the tars as (tar path, data offset, size, suffix), and the captions."""
    members, captions = [], []
    for name in sorted(os.listdir(source_dir)):
        if not name.endswith(".tar"):
            continue
        path = os.path.join(source_dir, name)
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.isfile():
                    continue
                suffix = os.path.splitext(member.name)[1].lower()
                if suffix in IMAGE_SUFFIXES:
                    members.append((path, member.offset_data, member.size, suffix))
                elif suffix == ".txt" and len(captions) < 4096:
                    captions.append(tar.extractfile(member).read().decode("utf-8", "replace"))
    return members, captions


# --- decode ceiling --------------------------------------------------------------------------------


def _pil_resize_crop(image):
    from PIL import Image

    w, h = image.size
    scale = SIDE / min(w, h)
    size = (max(SIDE, round(w * scale)), max(SIDE, round(h * scale)))
    image = image.resize(size, Image.Resampling.BICUBIC)
    left, top = (size[0] - SIDE) // 2, (size[1] - SIDE) // 2
    return image.crop((left, top, left + SIDE, top + SIDE))


def _decode_chunk(chunk: tuple[str, list[tuple[int, int]]]) -> tuple[int, int]:
    """Decode + resize/crop one chunk of one tar: (decoded, skipped)."""
    import numpy as np
    from PIL import Image, ImageOps

    from engine.profiling.ingest import IngestConfig

    max_pixels = IngestConfig().max_pixels
    path, items = chunk
    done = skipped = 0
    with open(path, "rb") as f:
        for offset, size in items:
            f.seek(offset)
            data = f.read(size)
            try:
                with Image.open(io.BytesIO(data)) as image:
                    if image.width * image.height > max_pixels:  # ingest rejects these undecoded
                        skipped += 1
                        continue
                    image = ImageOps.exif_transpose(image).convert("RGB")
                np.asarray(_pil_resize_crop(image))
                done += 1
            except Exception:
                skipped += 1
    return done, skipped


def _warm(_: int) -> int:
    import PIL.Image  # noqa: F401

    from engine.profiling.ingest import IngestConfig  # noqa: F401

    return 0


def pil_decode_rate(members: list, procs: int) -> dict:
    """PIL decode + resize/crop of every image member on ``procs`` forked processes, images/s."""
    import multiprocessing

    by_tar: dict[str, list[tuple[int, int]]] = {}
    for path, offset, size, _ in members:
        by_tar.setdefault(path, []).append((offset, size))
    chunks = [
        (path, items[i : i + DECODE_CHUNK])
        for path, items in by_tar.items()
        for i in range(0, len(items), DECODE_CHUNK)
    ]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        pool.map(_warm, range(procs))  # processes up and imports done before the clock starts
        started = time.perf_counter()
        counts = pool.map(_decode_chunk, chunks, chunksize=1)
        seconds = time.perf_counter() - started
    done, skipped = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return {
        "processes": procs,
        "images": done,
        "skipped": skipped,
        "seconds": round(seconds, 3),
        "images_per_s": done / seconds,
    }


def nvjpeg_decode_rate(members: list, device: str, batch: int) -> dict:
    """torchvision's nvJPEG decode (batched) + GPU resize/crop of the JPEG members, images/s."""
    if not device.startswith("cuda"):
        return {"available": False, "reason": "not a CUDA device"}
    try:
        import torch
        import torch.nn.functional as F
        from torchvision.io import ImageReadMode, decode_jpeg
    except ImportError as e:
        return {"available": False, "reason": f"import: {e}"}
    datas = []
    for path, offset, size, suffix in members:
        if suffix in (".jpg", ".jpeg"):
            with open(path, "rb") as f:
                f.seek(offset)
                datas.append(torch.frombuffer(bytearray(f.read(size)), dtype=torch.uint8))
    if not datas:
        return {"available": False, "reason": "no JPEG members"}

    def resize_crop(img):
        h, w = img.shape[-2:]
        scale = SIDE / min(h, w)
        size = (max(SIDE, round(h * scale)), max(SIDE, round(w * scale)))
        x = F.interpolate(img.unsqueeze(0).float(), size=size, mode="bicubic", antialias=True)
        top, left = (size[0] - SIDE) // 2, (size[1] - SIDE) // 2
        return x[..., top : top + SIDE, left : left + SIDE]

    def decode(chunk):
        try:
            return decode_jpeg(chunk, mode=ImageReadMode.RGB, device=device), 0
        except RuntimeError:  # one undecodable file fails the batch: decode one by one
            out, failed = [], 0
            for data in chunk:
                try:
                    out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
                except RuntimeError:
                    failed += 1
            return out, failed

    try:
        for img in decode(datas[: min(len(datas), 8)])[0]:  # warm-up: the nvJPEG handle, the kernels
            resize_crop(img)
        torch.cuda.synchronize(device)
    except Exception as e:
        return {
            "available": False,
            "reason": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
        }
    started = time.perf_counter()
    done = failed = 0
    for i in range(0, len(datas), batch):
        images, bad = decode(datas[i : i + batch])
        failed += bad
        for img in images:
            resize_crop(img)
        done += len(images)
    torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    return {
        "available": True,
        "batch": batch,
        "images": done,
        "failed": failed,
        "seconds": round(seconds, 3),
        "images_per_s": done / seconds,
        "note": "JPEG members only (the tars' PNG originals are left out); bytes read before the clock",
    }


# --- models ----------------------------------------------------------------------------------------


def make_checkpoint(arch: str, folder: str) -> tuple[str, dict]:
    """Random weights for ``arch`` saved as a local checkpoint; the engine's spec for it."""
    import open_clip
    import torch

    path = os.path.join(folder, f"{arch.lower()}.pt")
    started = time.perf_counter()
    torch.manual_seed(0)
    model = open_clip.create_model(arch, pretrained=None)
    params = sum(p.numel() for p in model.parameters())
    torch.save(model.state_dict(), path)
    del model
    return f"{arch}@{path}", {
        "params": params,
        "bytes": os.path.getsize(path),
        "seconds": round(time.perf_counter() - started, 1),
    }


def release_cuda(device: str) -> None:
    """Return what this process's freed tensors hold on the GPU to the driver."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def autocast(device: str, amp: str):
    import torch

    if not device.startswith("cuda"):
        return nullcontext()
    return torch.autocast("cuda", dtype={"bf16": torch.bfloat16, "fp16": torch.float16}[amp])


def timed(fn, device: str, warmup: int, rounds: int) -> float:
    """Seconds for ``rounds`` calls of ``fn`` after ``warmup`` calls (the device synchronised)."""
    import torch

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    started = time.perf_counter()
    for _ in range(rounds):
        fn()
    sync()
    return time.perf_counter() - started


def bare_forward(
    spec: str, device: str, batch: int, warmup: int, rounds: int, amp: str, captions: list
) -> dict:
    """The model alone: image forwards on pre-decoded tensors on the device, then caption forwards."""
    import torch

    from engine.vectors.model_specs import load_embedder

    started = time.perf_counter()
    embedder = load_embedder(spec, device=device)
    load_s = time.perf_counter() - started
    model = embedder.model
    size = model.visual.image_size
    h, w = (size, size) if isinstance(size, int) else size
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
    generator = torch.Generator(device=device).manual_seed(0)
    pixels = torch.randn((batch, 3, h, w), device=device, generator=generator)
    pixels = pixels.contiguous(memory_format=torch.channels_last)  # as encode_image_tensors gives it
    texts = (captions * (batch // max(1, len(captions)) + 1))[:batch] if captions else ["a photo"] * batch
    tokens = embedder.tokenizer(texts).to(device)
    with torch.inference_mode(), autocast(device, amp):
        image_s = timed(lambda: model.encode_image(pixels, normalize=True), device, warmup, rounds)
        text_s = timed(lambda: model.encode_text(tokens, normalize=True), device, warmup, rounds)
    n = batch * rounds
    out = {
        "batch": batch,
        "warmup": warmup,
        "rounds": rounds,
        "precision": f"autocast {amp}" if device.startswith("cuda") else "fp32",
        "load_s": round(load_s, 1),
        "image_s": round(image_s, 3),
        "images_per_s": n / image_s,
        "text_s": round(text_s, 3),
        "captions_per_s": n / text_s,
        "pairs_per_s": n / (image_s + text_s),  # one image and one caption per pair
        "embed_dim": embedder.embed_dim,
        "model_id": embedder.model_id,
    }
    if device.startswith("cuda"):
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out  # the model and tensors go with this frame; the caller empties the CUDA cache


# --- stages ----------------------------------------------------------------------------------------


def embed_stage(spec: str, device: str, gpus_per_actor: float | None, batch: int | None):
    """The embed stage for ``spec`` on ``device`` (``pipelines.stages.EmbedStage``)."""
    from pipelines.stages import EmbedStage

    return EmbedStage(model=spec, device=device, gpus_per_actor=gpus_per_actor, batch_size=batch)


def image_stages(
    spec: str, device: str, gpus_per_actor: float | None, batch: int | None
) -> tuple[list, dict]:
    """OCR + embed + safety on ``device``, and where each runs (with its Ray GPU share)."""
    from engine.profiling.ocr_models import OcrConfig
    from pipelines.stages import OcrStage, SafetyStage

    stages = [
        OcrStage(config=OcrConfig.from_env(device=device)),
        embed_stage(spec, device, gpus_per_actor, batch),
        SafetyStage(device=device, gpus_per_actor=gpus_per_actor),
    ]
    placed = {stage.name: device for stage in stages}
    placed["num_gpus"] = {stage.name: stage.num_gpus for stage in stages}
    return stages, placed


def clear_embeddings(ws) -> None:
    """No embeddings, indexes or model record left: the next embed run starts from nothing."""
    for rel in ("embeddings", "index", "models.json"):
        path = ws.path(rel)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)


# --- the run ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", choices=sorted(CONFIGS), default="full", help="defaults for the sizes below"
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="open_clip architectures")
    parser.add_argument("--n", type=int, help="derived pairs (full: 50,000; tiny: 200)")
    parser.add_argument("--curate-n", type=int, help="records of the whole curate job (full: 10,000)")
    parser.add_argument("--curate-model", help="the whole curate job's embed model (default: the last)")
    parser.add_argument("--batch", type=int, help="bare forward batch (default 512 B-32, 256 L-14)")
    parser.add_argument("--stage-batch", type=int, help="the embed stage's batch (default: the engine's)")
    parser.add_argument("--warmup", type=int, help="untimed bare forward batches")
    parser.add_argument("--rounds", type=int, help="timed bare forward batches")
    parser.add_argument("--amp", choices=("bf16", "fp16"), default="bf16", help="bare forward autocast dtype")
    parser.add_argument("--nvjpeg-batch", type=int, help="JPEGs per decode_jpeg call")
    parser.add_argument(
        "--gpus-per-actor", type=float, help="GPU share per stage actor (default: the engine's)"
    )
    parser.add_argument("--procs", type=int, default=os.cpu_count(), help="decode processes and Ray CPUs")
    parser.add_argument("--shard-size", type=int, help="records per shard (default: run_curate's)")
    parser.add_argument(
        "--bases", default="auto", help="auto | openclipart | skimage | DIR (openclipart layout)"
    )
    parser.add_argument(
        "--data", help="where the tars are kept between runs (default: $TMPDIR/zcurate-gpu-...)"
    )
    parser.add_argument("--parts", default=",".join(PARTS), help=f"any of {','.join(PARTS)}")
    parser.add_argument("--json", metavar="PATH", help="the results file (rewritten after every part)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspaces and checkpoints")
    args = parser.parse_args(argv)
    for key, value in CONFIGS[args.config].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m for m in args.models.split(",") if m]
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part {unknown[0]!r} (parts: {', '.join(PARTS)})")
    args.curate_n = min(args.curate_n, args.n)
    args.curate_model = args.curate_model or args.models[-1]
    return args


def summarize(results: dict, args) -> None:
    """Ratios, bounds and the targets, from what the run measured."""
    pil = results.get("decode", {}).get("pil", {}).get("images_per_s")
    targets = []
    for arch, m in results["models"].items():
        bare = m.get("bare", {}).get("images_per_s")
        stage = m.get("stage", {}).get("images_per_s")
        if not (bare and stage):
            continue
        ratios = {"stage_vs_bare": stage / bare, "stage_vs_bare_pairs": stage / m["bare"]["pairs_per_s"]}
        if pil:
            lower = min(bare, pil)
            ratios.update(
                lower_bound=lower,
                bound="bare forward" if bare <= pil else "PIL decode",
                stage_vs_lower_bound=stage / lower,
            )
            targets.append(
                {
                    "what": f"{arch} embed stage >= {TARGET_RATIO}x min(bare forward, decode ceiling)",
                    "value": round(stage / lower, 3),
                    "met": stage / lower >= TARGET_RATIO,
                }
            )
        m["ratios"] = ratios
        if arch == "ViT-L-14":
            targets.append(
                {
                    "what": "ViT-L-14 embed stage >= 2,000 images/s",
                    "value": round(stage),
                    "met": stage >= TARGET_L14,
                }
            )
    curate = results.get("curate", {})
    if curate.get("model") == "ViT-L-14" and curate.get("images_per_s"):
        rate = curate["images_per_s"]
        targets.append(
            {
                "what": "ViT-L-14 whole curate job >= 2,000 images/s",
                "value": round(rate),
                "met": rate >= TARGET_L14,
            }
        )
    results["targets"] = targets


def save(results: dict, path: str | None) -> None:
    if path:
        with open(path + ".part", "w") as f:
            json.dump(results, f, indent=1)
        os.replace(path + ".part", path)


def main(argv: list[str] | None = None) -> int:
    code = git_state()  # the code that runs: the checkout as the run starts
    args = parse_args(argv)
    command = shlex.join(
        ["python", os.path.relpath(os.path.abspath(__file__), REPO), *(argv or sys.argv[1:])]
    )

    from engine.devices import resolve_device

    device = resolve_device(args.device)
    kind = bases_kind(args.bases)
    tag = kind if kind in ("openclipart", "skimage") else "dir-" + os.path.basename(os.path.abspath(kind))
    data = args.data or os.path.join(os.environ.get("TMPDIR", "/tmp"), f"zcurate-gpu-{tag}-{args.n}")
    results: dict = {
        "meta": {
            "command": command,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "git": code,
            **device_info(device),
            "versions": versions(),
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
        },
        "models": {},
    }
    gpu = results["meta"].get("gpu", "no GPU")
    log(f"device {device} ({gpu}), {os.cpu_count()} cpus, git {code['commit'][:12]}")
    save(results, args.json)

    # The pair set (kept in --data between runs) and its member index.
    kind, bases_root = resolve_bases(args.bases, data)
    source_dir = os.path.join(data, "source")
    results["data"] = {"bases": kind, "bases_root": bases_root, "source": source_dir}
    results["data"]["generate"] = generate(source_dir, args.n, args.procs, bases_root)
    members, captions = index_tars(source_dir)
    results["data"]["images"] = len(members)
    results["data"]["jpeg"] = sum(m[3] != ".png" for m in members)
    log(f"pairs: {results['data']['generate']} ({kind} bases)")
    save(results, args.json)

    tmp = tempfile.mkdtemp(prefix="zcurate-bench-gpu-")
    try:
        run_parts(args, device, members, captions, source_dir, tmp, results)
    except KeyboardInterrupt:  # stopped (scripts/gpu_check.sh's time limit): keep what was measured
        results["meta"]["interrupted"] = True
        log("interrupted: writing what was measured")
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    summarize(results, args)
    results["meta"]["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    results["meta"]["seconds"] = round(time.perf_counter() - T0, 1)
    save(results, args.json)
    report(results)
    if args.json:
        log(f"wrote {args.json}")
    return 1 if results.get("errors") or results["meta"].get("interrupted") else 0


def guarded(results: dict, name: str, fn, *args):
    """``fn(*args)``; an exception is logged and recorded under ``errors`` and the run goes on (one
    part that fails on a lent machine must not cost the others)."""
    try:
        return fn(*args)
    except Exception as e:
        traceback.print_exc()
        results.setdefault("errors", {})[name] = f"{type(e).__name__}: {e}"
        log(f"{name} FAILED: {type(e).__name__}: {e}")
        return None


def run_parts(args, device: str, members: list, captions: list, source_dir: str, tmp: str, results: dict):
    if "decode" in args.parts:  # before anything touches CUDA in this process (the pool forks)
        pil = guarded(results, "decode_pil", pil_decode_rate, members, args.procs)
        if pil:
            log(f"decode ceiling, PIL on {args.procs} processes: {pil['images_per_s']:,.0f} images/s")
        nv = guarded(results, "decode_nvjpeg", nvjpeg_decode_rate, members, device, args.nvjpeg_batch) or {}
        if nv.get("available"):
            log(f"decode, nvJPEG on {device}: {nv['images_per_s']:,.0f} images/s")
        else:
            log(f"decode, nvJPEG: not measured ({nv.get('reason', 'failed')})")
        if pil:
            faster = "nvjpeg" if nv.get("available") and nv["images_per_s"] > pil["images_per_s"] else "pil"
            results["decode"] = {"pil": pil, "nvjpeg": nv, "faster": faster}
        save(results, args.json)

    specs = {}
    needed = args.models if {"bare", "stage"} & set(args.parts) else []
    needed = [*needed, args.curate_model] if "curate" in args.parts else needed
    for arch in dict.fromkeys(needed):
        specs[arch], info = make_checkpoint(arch, tmp)
        results["models"].setdefault(arch, {})["checkpoint"] = {"spec": specs[arch], **info}
        millions = info["params"] / 1e6
        log(f"{arch}: random-weight checkpoint, {millions:.0f}M parameters, {info['seconds']} s")

    if "bare" in args.parts:
        for arch in args.models:
            batch = args.batch or MODEL_BATCH.get(arch, 256)
            bare = guarded(
                results,
                f"bare_{arch}",
                bare_forward,
                *(specs[arch], device, batch, args.warmup, args.rounds, args.amp, captions),
            )
            release_cuda(device)  # the stage's actors get the whole GPU
            if bare:
                results["models"][arch]["bare"] = bare
                log(
                    f"{arch} bare forward, batch {batch}, {bare['precision']}: "
                    f"{bare['images_per_s']:,.0f} images/s (captions {bare['captions_per_s']:,.0f}/s, "
                    f"pairs {bare['pairs_per_s']:,.0f}/s)"
                )
            save(results, args.json)

    if "stage" in args.parts or "curate" in args.parts:
        run_stages(args, device, specs, source_dir, tmp, results)


def run_stages(args, device: str, specs: dict, source_dir: str, tmp: str, results: dict) -> None:
    """Ingest once, the embed stage per model, then the whole curate job; one Ray for all of them."""
    import ray

    from engine.profiling.source import load_source
    from pipelines.runtime import ray_session

    source = load_source(source_dir)
    started = time.perf_counter()
    with ray_session(args.procs):
        ray_init_s = time.perf_counter() - started
        results["ray"] = {"init_s": round(ray_init_s, 2), "resources": ray.cluster_resources()}
        log(f"ray.init {ray_init_s:.1f} s: {ray.cluster_resources()}")
        if device.startswith("cuda") and not ray.cluster_resources().get("GPU"):
            # actors asking for a GPU share would wait for one forever
            results.setdefault("errors", {})["stages"] = (
                "Ray sees no GPU: the stage and curate parts did not run"
            )
            log("Ray sees no GPU: skipping the stage and curate parts")
            return
        if "stage" in args.parts:
            ws = guarded(results, "ingest", ingest, args, source, tmp, results)
            for arch in args.models if ws else []:
                guarded(results, f"stage_{arch}", embed_run, args, device, specs[arch], arch, ws, results)
        if "curate" in args.parts:
            guarded(results, "curate", curate_run, args, device, specs, source, tmp, results)


def ingest(args, source, tmp: str, results: dict):
    """The set curated once without image stages: the workspace the embed stage runs over."""
    from engine.workspace import Workspace
    from pipelines.curate import run_curate

    ws = Workspace(os.path.join(tmp, "ws-ingest"))
    shard = {"shard_size": args.shard_size} if args.shard_size else {}
    t = time.perf_counter()
    s = run_curate(source, ws, num_cpus=args.procs, progress=False, image_stages=[], tag=False, **shard)
    seconds = time.perf_counter() - t
    results["ingest"] = {
        "samples": s.samples,
        "ok": s.ok,
        "rejected": s.rejected,
        "reject_reasons": s.reject_reasons,
        "shards": s.shards_total,
        "seconds": round(seconds, 2),
        "work_span_s": round(s.work_span_s, 2),
        "records_per_s": s.samples / seconds,
    }
    log(f"ingest (no image stages): {s.samples:,} records, {s.ok:,} usable, {seconds:.1f} s")
    save(results, args.json)
    return ws


def embed_run(args, device: str, spec: str, arch: str, ws, results: dict) -> None:
    """The embed stage of one model over every shard, from no embeddings."""
    from pipelines.backfill import run_image_stage

    clear_embeddings(ws)
    stage = embed_stage(spec, device, args.gpus_per_actor, args.stage_batch)
    ray_init_s = results["ray"]["init_s"]
    t = time.perf_counter()
    b = run_image_stage(ws, stage, num_cpus=args.procs, progress=False, refresh=False)
    seconds = time.perf_counter() - t
    if b.failed:
        example = next(iter(b.failed.values()))
        log(f"{arch} embed stage: {len(b.failed)} shards failed, e.g. {example}")
    results["models"][arch]["stage"] = {
        "rows": b.rows,
        "shards": b.shards_run,
        "failed_shards": len(b.failed),
        "num_gpus_per_actor": getattr(stage, "num_gpus", None),
        "batch_size": getattr(stage, "batch_size", None),
        "seconds": round(seconds, 2),
        "images_per_s": b.rows / seconds,
        "images_per_s_with_ray_init": b.rows / (seconds + ray_init_s),
    }
    rate = b.rows / seconds
    log(f"{arch} embed stage: {b.rows:,} images in {seconds:.1f} s = {rate:,.0f} images/s")
    save(results, args.json)


def curate_run(args, device: str, specs: dict, source, tmp: str, results: dict) -> None:
    """The whole curate job with OCR, embed and safety on the device, over the first records."""
    from engine.workspace import Workspace
    from pipelines.curate import run_curate

    ws = Workspace(os.path.join(tmp, "ws-curate"))
    stages, placed = image_stages(specs[args.curate_model], device, args.gpus_per_actor, args.stage_batch)
    shard = {"shard_size": args.shard_size} if args.shard_size else {}
    ray_init_s = results["ray"]["init_s"]
    t = time.perf_counter()
    s = run_curate(
        source, ws, num_cpus=args.procs, progress=False, image_stages=stages, limit=args.curate_n, **shard
    )
    seconds = time.perf_counter() - t
    results["curate"] = {
        "model": args.curate_model,
        "stages": placed,
        "records": s.samples,
        "ok": s.ok,
        "rejected": s.rejected,
        "failed_shards": len(s.failed_shards),
        "seconds": round(seconds, 2),
        "work_span_s": round(s.work_span_s, 2),
        "images_per_s": s.ok / seconds,
        "images_per_s_with_ray_init": s.ok / (seconds + ray_init_s),
        "records_per_s": s.samples / seconds,
    }
    log(
        f"whole curate (OCR + {args.curate_model} + safety, dedup, tags): {s.ok:,} usable of "
        f"{s.samples:,} in {seconds:.1f} s = {s.ok / seconds:,.1f} images/s"
    )
    save(results, args.json)


def report(results: dict) -> None:
    decode = results.get("decode", {})
    print()
    if decode:
        pil, nv = decode["pil"], decode["nvjpeg"]
        line = f"decode ceiling: PIL {pil['images_per_s']:,.0f} images/s on {pil['processes']} processes"
        if nv.get("available"):
            line += f"; nvJPEG {nv['images_per_s']:,.0f} images/s"
        print(line + f" -> faster: {decode['faster']}")
    for arch, m in results["models"].items():
        parts = []
        if "bare" in m:
            parts.append(f"bare {m['bare']['images_per_s']:,.0f}")
        if "stage" in m:
            parts.append(f"stage {m['stage']['images_per_s']:,.0f}")
        r = m.get("ratios", {})
        if r:
            parts.append(f"stage/bare {r['stage_vs_bare']:.2f}x")
            if "bound" in r:
                parts.append(
                    f"stage/min(bare, decode) {r['stage_vs_lower_bound']:.2f}x (bound: {r['bound']})"
                )
        if parts:
            print(f"{arch} (images/s): " + ", ".join(parts))
    if "curate" in results:
        c = results["curate"]
        rate = c["images_per_s"]
        print(f"whole curate ({c['model']}): {rate:,.1f} images/s ({c['ok']:,} usable, {c['seconds']} s)")
    for t in results.get("targets", []):
        print(f"target {t['what']}: {t['value']} -> {'met' if t['met'] else 'NOT met'}")
    for name, error in results.get("errors", {}).items():
        print(f"FAILED {name}: {error}")
    if results["meta"].get("interrupted"):
        print("INTERRUPTED: the parts after the last one above did not run")


if __name__ == "__main__":
    raise SystemExit(main())
