"""OCR configuration and model preparation: which PP-OCR models, where, and offline.

PaddleOCR 3.x reads a model directory holding ``inference.onnx`` plus an ``inference.yml``
(pre/post-processing, the recognition alphabet), so ``prepare_model_dirs`` builds such directories
once under the cache directory for the embedded models (the ONNX files inside the
``rapidocr-onnxruntime`` wheel): a link to the wheel's ONNX file and a YAML written from the
model's own metadata. Other PaddleOCR model directories are chosen by config (``OcrConfig``,
``ZCURATE_OCR_*`` variables, CLI options) and checked here before anything loads. So is the
device (``OcrConfig.device``, ``ZCURATE_OCR_DEVICE``: ``auto|cpu|cuda|cuda:N``, see
``ocr_device``).

Nothing is downloaded: ``offline_env`` switches PaddleX's model-source check off, sends its cache
to ``cache_dir`` (a temp directory) and points ``$HOME`` there while paddle is imported and
sessions are built (paddle and ONNX Runtime otherwise create ``~/.cache`` entries).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path

from engine.devices import DEVICE_HELP, device_index, resolve_device

OCR_BACKENDS = ("paddleocr", "rapidocr")

# Chosen by bench/bench_ocr.py (docs/benchmarks.md, "OCR"): on the same models RapidOCR read as well or
# better on every group of the 240-image set (exact lines 0.894 vs 0.888, CER 0.0445 vs 0.0478)
# at about the same images/s, and loads in ~1-2.5 s where PaddleOCR needs ~25 s (importing paddle).
DEFAULT_BACKEND = "rapidocr"

MIN_SIDE = 16  # px: below this no line of text is legible; such images get an empty result

MAX_SIDE = 4000  # px: larger images are downscaled first (PaddleX's own max_side_limit)

DET_SIDE_LIMIT = 960  # px: longer side of the detector's input (PaddleOCR's PP-OCRv5 default)

PAD = 32  # px of replicated edge added around every image before detection (see read_image)

MIN_SCORE = 0.5  # recognition confidence below which a line is dropped (PaddleOCR's default)

# Environment variables that configure OCR where no option does (the CLI options override them).
ENV_PREFIX = "ZCURATE_OCR_"

# Embedded models: file names inside rapidocr_onnxruntime/models and PaddleOCR's names for them.
EMBEDDED_DET = ("ch_PP-OCRv4_det_infer.onnx", "PP-OCRv4_mobile_det")

EMBEDDED_REC = ("ch_PP-OCRv4_rec_infer.onnx", "PP-OCRv4_mobile_rec")

EMBEDDED_CLS = ("ch_ppocr_mobile_v2.0_cls_infer.onnx", "PP-LCNet_x0_25_textline_ori")

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(?::\d+)?")  # engine.devices.DEVICE_HELP's forms


class OcrModelError(ValueError):
    """A model directory or backend setting is wrong; the message names the setting to fix."""


@dataclass
class OcrConfig:
    """What the OCR runs with. Every field can also be set as ZCURATE_OCR_<FIELD> (upper case)."""

    backend: str = DEFAULT_BACKEND  # rapidocr | paddleocr
    det_model_dir: str | None = None  # PaddleOCR detection model dir; None: the embedded PP-OCRv4
    rec_model_dir: str | None = None  # recognition model dir; None: the embedded PP-OCRv4
    cls_model_dir: str | None = None  # text-line orientation model dir; None: the embedded v2.0
    det_side_limit: int = DET_SIDE_LIMIT
    max_side: int = MAX_SIDE
    min_score: float = MIN_SCORE
    num_threads: int = 1  # inference threads per model; the Ray stage runs one actor per CPU
    cache_dir: str | None = None  # prepared model dirs and PaddleX's cache; None: a temp dir
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (see engine.devices); see ocr_device

    @classmethod
    def from_env(cls, **overrides) -> OcrConfig:
        """Defaults, then ZCURATE_OCR_* variables, then the non-None ``overrides``."""
        values = {}
        for f in fields(cls):
            raw = os.environ.get(ENV_PREFIX + f.name.upper())
            if raw:
                kind = {"det_side_limit": int, "max_side": int, "num_threads": int, "min_score": float}
                values[f.name] = kind.get(f.name, str)(raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def resolved_cache_dir(self) -> str:
        if self.cache_dir:
            return self.cache_dir
        base = os.environ.get("ZCURATE_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "zcurate-cache")
        return os.path.join(base, "ocr")


def _device_text(config: OcrConfig) -> str:
    """``config.device`` lower-cased and checked for form (not against the machine)."""
    text = (config.device or "cpu").strip().lower()
    if not DEVICE_PATTERN.fullmatch(text):
        raise OcrModelError(
            f"unknown OCR device {config.device!r}: fix --device (or ZCURATE_OCR_DEVICE): {DEVICE_HELP}"
        )
    return text


def ocr_device(config: OcrConfig) -> str:
    """``config.device`` as ``cpu`` or ``cuda:N``.

    ``auto`` is resolved here (``engine.devices.resolve_device``: CUDA when torch sees a GPU);
    ``cuda`` is ``cuda:0``. A ``cuda:N`` is taken as the caller resolved it (the OCR stage does,
    and inside a Ray actor its GPU is ``cuda:0``), so no actor imports torch only to check it.
    A malformed device is an ``OcrModelError`` (one line). Whether the backend can use the GPU
    is the backend's check: it warns and uses the CPU.
    """
    text = _device_text(config)
    if text in ("cpu", "auto"):
        return resolve_device(text)
    return f"cuda:{device_index(text)}"


def embedded_model_dir() -> Path:
    """The folder inside the installed rapidocr_onnxruntime package that holds the ONNX models."""
    try:
        import rapidocr_onnxruntime
    except ImportError as e:
        raise OcrModelError(
            "the embedded OCR models come with rapidocr-onnxruntime: "
            "pip install --no-deps rapidocr-onnxruntime==1.4.4, "
            "or set --ocr-det-model-dir, --ocr-rec-model-dir and --ocr-cls-model-dir"
        ) from e
    return Path(rapidocr_onnxruntime.__file__).parent / "models"


def _rec_alphabet(onnx_path: Path) -> list[str]:
    """The recognition model's characters, stored in its ONNX metadata by PaddleOCR's exporter."""
    import onnxruntime as ort

    meta = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_modelmeta()
    return meta.custom_metadata_map["character"].splitlines()


def _embedded_yaml(role: str, model_name: str, onnx_path: Path) -> dict:
    """inference.yml content PaddleOCR 3.x needs beside an ONNX model (the exporter's own keys)."""
    if role == "det":
        ops = [
            {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
            {"DetResizeForTest": {"resize_long": DET_SIDE_LIMIT}},
            {
                "NormalizeImage": {
                    "mean": [0.485, 0.456, 0.406],
                    "std": [0.229, 0.224, 0.225],
                    "scale": 1 / 255,
                    "order": "hwc",
                }
            },
            {"ToCHWImage": None},
            {"KeepKeys": {"keep_keys": ["image", "shape"]}},
        ]
        # PP-OCRv4's published det post-processing (PaddleOCR configs/det/PP-OCRv4).
        post = {"name": "DBPostProcess", "thresh": 0.3, "box_thresh": 0.6, "max_candidates": 1000}
        post["unclip_ratio"] = 1.5
    elif role == "rec":
        ops = [
            {"DecodeImage": {"channel_first": False, "img_mode": "BGR"}},
            {"RecResizeImg": {"image_shape": [3, 48, 320]}},  # PP-OCRv4 rec input: 48 px high
            {"KeepKeys": {"keep_keys": ["image"]}},
        ]
        post = {"name": "CTCLabelDecode", "character_dict": _rec_alphabet(onnx_path)}
    else:  # the v2.0 direction classifier: 48x192 input, (x / 255 - 0.5) / 0.5
        ops = [
            {"ResizeImage": {"size": [192, 48]}},
            {
                "NormalizeImage": {
                    "mean": [0.5, 0.5, 0.5],
                    "std": [0.5, 0.5, 0.5],
                    "scale": 1 / 255,
                    "order": "",
                }
            },
            {"ToCHWImage": None},
        ]
        post = {"Topk": {"topk": 1, "label_list": ["0_degree", "180_degree"]}}
    return {"Global": {"model_name": model_name}, "PreProcess": {"transform_ops": ops}, "PostProcess": post}


def prepare_model_dirs(cache_dir: str) -> dict[str, Path]:
    """PaddleOCR-style dirs (inference.onnx + inference.yml) for the embedded models, built once.

    Returns {"det": dir, "rec": dir, "cls": dir}. The YAML is written atomically, so concurrent
    actors building the same directory do not see half a file.
    """
    import yaml

    source = embedded_model_dir()
    out = {}
    for role, (file_name, model_name) in (
        ("det", EMBEDDED_DET),
        ("rec", EMBEDDED_REC),
        ("cls", EMBEDDED_CLS),
    ):
        onnx_path = source / file_name
        if not onnx_path.is_file():
            raise OcrModelError(f"embedded OCR model {onnx_path} is missing: reinstall rapidocr-onnxruntime")
        # One directory per installed file: the link points into a virtualenv, and the cache
        # outlives it (a recreated .venv elsewhere must not find a link to a deleted file).
        where = hashlib.blake2b(str(onnx_path.resolve()).encode(), digest_size=4).hexdigest()
        target = Path(cache_dir) / "models" / f"{model_name}-{onnx_path.stat().st_size}-{where}"
        yml = target / "inference.yml"
        link = target / "inference.onnx"
        if not yml.is_file() or not link.exists():  # exists() follows the link: a dangling one is redone
            target.mkdir(parents=True, exist_ok=True)
            if link.is_symlink() and not link.exists():
                link.unlink(missing_ok=True)
            with contextlib.suppress(FileExistsError):
                link.symlink_to(onnx_path)
            text = yaml.safe_dump(_embedded_yaml(role, model_name, onnx_path), allow_unicode=True)
            tmp = target / f".inference.yml.{os.getpid()}"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, yml)
        out[role] = target
    return out


@contextlib.contextmanager
def offline_env(cache_dir: str) -> Iterator[None]:
    """PaddleX/paddle/ONNX Runtime set-up that neither reaches the network nor writes to $HOME.

    PaddleX reads its flags when first imported, so this must wrap the first import of paddleocr.
    ``HOME`` (and ``XDG_CACHE_HOME``) point at ``cache_dir`` only while the block runs.
    """
    os.makedirs(cache_dir, exist_ok=True)
    os.environ.setdefault("PADDLE_PDX_CACHE_HOME", os.path.join(cache_dir, "paddlex"))
    os.environ["PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK"] = "True"  # no HEAD request to model hosts
    os.environ.setdefault("PADDLEOCR_DISABLE_AUTO_LOGGING_CONFIG", "1")
    saved = {k: os.environ.get(k) for k in ("HOME", "XDG_CACHE_HOME")}
    os.environ["HOME"] = cache_dir
    os.environ["XDG_CACHE_HOME"] = os.path.join(cache_dir, ".cache")
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _check_dir(path: str, setting: str, backend: str) -> Path:
    p = Path(path).expanduser()
    env = ENV_PREFIX + setting.upper().replace("-", "_")
    if not p.is_dir():
        raise OcrModelError(f"OCR model dir {path!r} does not exist: fix --ocr-{setting} (or {env})")
    has_onnx = any(p.glob("*.onnx"))
    has_paddle = (p / "inference.pdiparams").is_file()
    if backend == "rapidocr" and not has_onnx:
        raise OcrModelError(
            f"OCR model dir {path!r} has no .onnx file, which rapidocr needs: fix --ocr-{setting}"
        )
    if backend == "paddleocr" and not (has_paddle or (p / "inference.onnx").is_file()):
        raise OcrModelError(
            f"OCR model dir {path!r} has neither inference.pdiparams nor inference.onnx: fix --ocr-{setting}"
        )
    if backend == "paddleocr" and not (p / "inference.yml").is_file():
        raise OcrModelError(f"OCR model dir {path!r} has no inference.yml: fix --ocr-{setting}")
    return p


def model_name(model_dir: Path) -> str | None:
    import yaml

    meta = yaml.safe_load((model_dir / "inference.yml").read_text(encoding="utf-8")) or {}
    return (meta.get("Global") or {}).get("model_name")


def check_config(config: OcrConfig) -> dict[str, Path]:
    """Cheap checks of a config (no model is loaded): raises OcrModelError naming the setting.

    Returns the configured model dirs by role (det, rec, cls); the others are embedded.
    """
    if config.backend not in OCR_BACKENDS:
        raise OcrModelError(
            f"unknown OCR backend {config.backend!r}: fix --ocr-backend (one of {', '.join(OCR_BACKENDS)})"
        )
    _device_text(config)  # a malformed device is a one-line error; the machine is not asked
    if config.det_side_limit < 32 or config.max_side < config.det_side_limit or config.num_threads < 1:
        raise OcrModelError(
            "OCR sizes: need det_side_limit >= 32, max_side >= det_side_limit, num_threads >= 1"
        )
    dirs = {}
    for role, setting in (("det", "det-model-dir"), ("rec", "rec-model-dir"), ("cls", "cls-model-dir")):
        given = getattr(config, f"{role}_model_dir")
        if given:
            dirs[role] = _check_dir(given, setting, config.backend)
    if len(dirs) < 3:
        embedded_model_dir()  # raises when rapidocr-onnxruntime is not installed
    return dirs


def resolve_model_dirs(config: OcrConfig) -> dict[str, Path]:
    """The det/rec/cls dirs to load: configured ones checked, the rest from the embedded models."""
    dirs = check_config(config)
    if len(dirs) < 3:
        with offline_env(config.resolved_cache_dir()):
            embedded = prepare_model_dirs(config.resolved_cache_dir())
        dirs = {role: dirs.get(role, embedded[role]) for role in ("det", "rec", "cls")}
    return dirs
