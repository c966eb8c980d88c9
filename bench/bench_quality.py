"""No-reference quality scores against planted degradations: does each score rank a degraded copy
below (worse than) its original?

For every original, degraded copies are made with settings fixed before any evaluation run
(``DEGRADATIONS``): Gaussian blur (PIL radius 2), JPEG at quality 10, 15 and 20 (three pairs per
original), Gaussian noise (sigma 10 grey levels, seeded per image) and 4x upscaling (bicubic down to
a quarter of each side, then bicubic back up). Original and copy are scored the way the ``quality``
stage scores them (``engine.profiling.quality.quality_scores``: the 512 px analysis copy, grey
levels). For ``brisque`` and ``piqe`` (lower is better) a pair counts as ranked when the copy
scores strictly higher than its original; a null score on either side counts as not ranked. The
results file gives, per set, score and degradation, ``n`` (pairs), ``ranked``, ``nulls`` and
``fraction`` (ranked / n). The target is >= 0.90 everywhere on the photos.

Sets (``--set``):

* ``eval`` (the default, the figures the docs quote): scikit-image's bundled images, read from
  its data folder (never fetched), every raster image but the stereo twin ``motorcycle_right.png``
  and the 14x25 px GIF: the natural photos (``SKIMAGE_PHOTOS``) form ``photo``; the drawn and
  synthetic ones (``SKIMAGE_DRAWN``) go into ``nonphoto`` with ``--openclipart`` held-out openclipart
  images (the embedder's held-out split, fitted into 512 px, flattened on white).
* ``tune``: where choices may be made (nothing in engine/profiling/quality.py was tuned on the eval
  set): three photos that ship with matplotlib and scikit-learn (``TUNE_PHOTOS``) and openclipart
  images from the training split.

It also times each score per image (wall clock, one thread): ``brisque`` and ``piqe`` on the
originals' analysis copies, and NudeNet's ``nsfw_nudenet`` (``engine.profiling.nudity``, batch of
1, model loading excluded), as ``timing_ms`` (mean and median over the originals).

Run by hand from the repository root (about 2 minutes on the shared 2-core machine)::

    .venv/bin/python bench/bench_quality.py --output bench/results-quality.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shlex
import subprocess
import sys
import time

import numpy as np
from PIL import Image, ImageFilter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from engine.profiling.profile import analysis_copy  # noqa: E402
from engine.profiling.quality import brisque_score, piqe_score, quality_scores  # noqa: E402

SCORES = ("brisque", "piqe")  # both: lower is better
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "microaneurysms.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
SKIMAGE_DRAWN = ("chessboard_RGB.png", "color.png", "horse.png", "logo.png", "phantom.png")
TUNE_PHOTOS = (
    "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
    "sklearn/datasets/images/china.jpg",
    "sklearn/datasets/images/flower.jpg",
)
CLIPART_SIDE = 512  # openclipart PNGs run to 100+ MP: fitted into this, as the stage's analysis copy
NOISE_SIGMA = 10.0  # grey levels of 255: visible grain, the level of a dim phone photo
BLUR_RADIUS = 2  # PIL's Gaussian radius (~sigma) in px: soft at 512 px, not smeared
JPEG_QUALITIES = (10, 15, 20)  # the range of heavy compression
UPSCALE = 4  # each side down to 1/4, then back up: a small image blown up


def flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited over white (as ingest does)."""
    if image.mode in ("RGBA", "LA", "P"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, "white")
        canvas.paste(rgba, mask=rgba)
        return canvas
    return image.convert("RGB")


def jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def noisy(image: Image.Image, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    x = np.asarray(image, dtype=np.float64) + rng.normal(0, NOISE_SIGMA, (image.height, image.width, 3))
    return Image.fromarray(np.clip(np.round(x), 0, 255).astype(np.uint8))


def upscaled(image: Image.Image) -> Image.Image:
    small = (max(1, image.width // UPSCALE), max(1, image.height // UPSCALE))
    return image.resize(small, Image.Resampling.BICUBIC).resize(image.size, Image.Resampling.BICUBIC)


def degraded(image: Image.Image, seed: int) -> list[tuple[str, Image.Image]]:
    """(degradation, copy) pairs of one original, in a fixed order."""
    copies = [("blur", image.filter(ImageFilter.GaussianBlur(BLUR_RADIUS)))]
    copies += [("jpeg", jpeg(image, q)) for q in JPEG_QUALITIES]
    return [*copies, ("noise", noisy(image, seed)), ("upscale", upscaled(image))]


def skimage_images(names) -> list[tuple[str, Image.Image]]:
    import skimage.data

    return [(name, flatten(Image.open(os.path.join(skimage.data.data_dir, name)))) for name in names]


def openclipart_images(n: int, heldout: bool) -> list[tuple[str, Image.Image]]:
    """The first ``n`` openclipart images of one split, fitted into CLIPART_SIDE, at least 64 px."""
    from engine.vectors.embedder_sources import openclipart_images
    from engine.vectors.embedder_training import unseen_openclipart_ids

    found, unseen = [], unseen_openclipart_ids()
    for pair in openclipart_images():
        image, image_id = pair.image, pair.image_id
        if image is None or (pair.key in unseen) != heldout:
            continue
        image.thumbnail((CLIPART_SIDE, CLIPART_SIDE))
        if min(image.size) >= 64:
            found.append((f"openclipart:{image_id[:12]}", image.convert("RGB")))
        if len(found) == n:
            break
    return found


def originals(which: str, n_clipart: int) -> dict[str, list[tuple[str, Image.Image]]]:
    """Originals by group (photo, nonphoto) for the eval or tune set."""
    if which == "eval":
        drawn = skimage_images(SKIMAGE_DRAWN) + openclipart_images(n_clipart, heldout=True)
        return {"photo": skimage_images(SKIMAGE_PHOTOS), "nonphoto": drawn}
    site = os.path.dirname(os.path.dirname(np.__file__))
    photos = [(p.split("/")[-1], Image.open(os.path.join(site, p)).convert("RGB")) for p in TUNE_PHOTOS]
    return {"photo": photos, "nonphoto": openclipart_images(n_clipart, heldout=False)}


def score_pairs(images: list[tuple[str, Image.Image]]) -> list[dict]:
    """One record per (original, degraded copy): both copies' scores."""
    pairs = []
    for index, (name, image) in enumerate(images):
        before = quality_scores(image)
        for degradation, copy in degraded(image, seed=index):
            after = quality_scores(copy)
            pairs.append({"image": name, "degradation": degradation, "before": before, "after": after})
    return pairs


def summarize(pairs: list[dict]) -> dict:
    """Per score, per degradation (and ``all``): n, ranked (copy strictly worse), nulls, fraction."""
    table = {}
    for score in SCORES:
        rows = {}
        for degradation in [*sorted({p["degradation"] for p in pairs}), "all"]:
            chosen = [p for p in pairs if degradation in ("all", p["degradation"])]
            values = [(p["before"][score], p["after"][score]) for p in chosen]
            nulls = sum(a is None or b is None for a, b in values)
            ranked = sum(a is not None and b is not None and b > a for a, b in values)
            rows[degradation] = {
                "n": len(values),
                "ranked": ranked,
                "nulls": nulls,
                "fraction": round(ranked / len(values), 4) if values else None,
            }
        table[score] = rows
    return table


def timing(images: list[Image.Image]) -> dict:
    """Per-image milliseconds of each score (one thread, model loading excluded)."""
    from engine.profiling.nudity import load_nudity_model

    nudenet = load_nudity_model(threads=1)
    nudenet.score_images(images[:1])  # warm-up: onnxruntime's first run allocates
    times: dict[str, list[float]] = {"brisque": [], "piqe": [], "nsfw_nudenet": []}
    for image in images:
        grey = np.asarray(analysis_copy(image).convert("L"), dtype=np.float64)
        for name, run in (
            ("brisque", lambda g=grey: brisque_score(g)),
            ("piqe", lambda g=grey: piqe_score(g)),
            ("nsfw_nudenet", lambda im=image: nudenet.score_images([im])),
        ):
            started = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - started) * 1000)
    return {
        name: {"mean": round(float(np.mean(t)), 1), "median": round(float(np.median(t)), 1), "n": len(t)}
        for name, t in times.items()
    }


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True)
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Example: .venv/bin/python bench/bench_quality.py --set tune --output /tmp/q.json",
    )
    parser.add_argument("--set", choices=("eval", "tune"), default="eval", dest="which")
    parser.add_argument("--openclipart", type=int, default=12, help="openclipart originals (non-photo)")
    parser.add_argument("--output", default=None, help="write the results JSON here")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    started = time.time()
    groups = originals(args.which, args.openclipart)
    pairs = {group: score_pairs(images) for group, images in groups.items()}
    result = {
        "set": args.which,
        "originals": {group: [name for name, _ in images] for group, images in groups.items()},
        "degradations": {
            "blur": f"PIL GaussianBlur radius {BLUR_RADIUS}",
            "jpeg": f"Pillow JPEG quality {', '.join(map(str, JPEG_QUALITIES))} (one pair each)",
            "noise": f"Gaussian noise sigma {NOISE_SIGMA:g} grey levels, seed = original's index",
            "upscale": f"bicubic down to 1/{UPSCALE} of each side, bicubic back up",
        },
        "results": {group: summarize(p) for group, p in pairs.items()},
        "pairs": {group: p for group, p in pairs.items()},
        "timing_ms": timing([im for images in groups.values() for _, im in images]),
        "meta": {
            "command": shlex.join(["bench/bench_quality.py", *sys.argv[1:]]),
            "commit": git_commit(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "numpy": np.__version__,
            "seconds": round(time.time() - started, 1),
        },
    }
    for group, table in result["results"].items():
        for score, rows in table.items():
            line = ", ".join(f"{d} {r['ranked']}/{r['n']}" for d, r in rows.items())
            print(f"{group:8s} {score:8s} {line}")
    print("per-image ms:", json.dumps(result["timing_ms"]))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
