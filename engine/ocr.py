"""OCR: what text is in an image, where, and whether the caption says it (paper section 2.1).

One interface, two real backends over PaddleOCR's PP-OCR models:

* ``paddleocr``: PaddleOCR 3.x (its OCR pipeline: detection, text-line orientation, recognition).
* ``rapidocr``: RapidOCR (``rapidocr_onnxruntime``), the same pipeline on ONNX Runtime, for users
  without paddle.

The embedded default models are PaddleOCR's PP-OCRv4 mobile detection and recognition models and
its v2.0 text-line orientation (0/180 degree) classifier, in the ONNX form that ships inside the
``rapidocr-onnxruntime`` wheel. PaddleOCR 3.x reads a model directory holding ``inference.onnx``
plus an ``inference.yml`` (pre/post-processing, the recognition alphabet), so ``prepare_model_dirs``
builds such directories once under the cache directory: a link to the wheel's ONNX file and a YAML
written from the model's own metadata. Other PaddleOCR model directories (e.g. PP-OCRv5 server, in
Paddle or ONNX format) are chosen by config (``OcrConfig`` / ``ZCURATE_OCR_*`` / CLI options);
Paddle-format models run on Paddle Inference with ``enable_mkldnn=False`` (oneDNN off, as the
issue prescribes for this CPU; no Paddle-format OCR model is installed here, so that path is
exercised only by users who bring one).

Both backends' CTC decoders are wrapped so that the word spaces PP-OCRv4's recogniser drops
between Latin words ("salegarden") are put back from its own per-column output
(``restore_spaces``, documented above it); CJK text is left as it is.

Nothing is downloaded: PaddleX's model-source connectivity check is switched off, its cache goes
to ``cache_dir`` (a temp directory), and ``$HOME`` points at ``cache_dir`` while paddle is imported
and sessions are built (paddle and ONNX Runtime otherwise create ``~/.cache`` entries).

Sizes. Images with a side under ``MIN_SIDE`` px give an empty result. Images with a side over
``max_side`` (4000 px) are downscaled to it first (recognition crops come from that copy); the
detector itself sees the image resized so that its longer side is ``det_side_limit`` (960 px,
PaddleOCR's own default for the PP-OCRv5 detectors): text smaller than ~8 px after that resize is
not found, which is what a text-rendering signal can afford. A ``PAD`` px border of replicated
edge pixels is added before detection (see ``read_image``).

Per-image signals (``ocr_signals``), the columns of ``schema.OCR``:

* ``ocr_text``: the text in reading order: rows top to bottom joined by newlines, the detector's
  pieces of one row left to right joined by a space, none between CJK characters (``rows_text``);
  ``ocr_lines``: each detected line's text, confidence and box (4 corner points, pixels of the
  input image), in that order.
* ``ocr_conf_mean``: mean line confidence (null without lines).
* ``text_area_ratio``: area of the union of the line boxes / image area.
* ``ocr_lang``: ``none`` without Han or Latin letters, else by the share of Han characters among
  Han + Latin letters: >= 0.8 ``zh``, <= 0.2 ``en``, otherwise ``mixed``.
* ``ocr_caption_overlap``: share of the OCR text's characters that appear in the caption, both
  sides normalised (NFKC, so full-width forms become ASCII; case-folded; punctuation, symbols and
  spaces removed; traditional and simplified Chinese left as they are): a run of letters/digits
  counts when the space-free caption contains it, a CJK character when the caption has it (as a
  multiset). Null without OCR text; see ``caption_overlap``.
* ``has_watermark_text``: see ``is_watermark_line``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
from PIL import Image

OCR_BACKENDS = ("paddleocr", "rapidocr")
# Chosen by bench/bench_ocr.py (README, "OCR"): on the same models RapidOCR read as well or
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


@dataclass
class OcrLine:
    """One line of text found in an image."""

    text: str
    confidence: float  # recognition score, 0..1
    box: list[list[float]]  # 4 corner points [x, y], pixels of the input image, clockwise from top-left


@dataclass
class OcrResult:
    """What one image read as; ``lines`` in reading order."""

    width: int
    height: int
    lines: list[OcrLine] = field(default_factory=list)


# --- model directories and offline environment --------------------------------------------------


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


def _model_name(model_dir: Path) -> str | None:
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


# --- word spaces from the CTC output ------------------------------------------------------------

# PP-OCRv4's recogniser has a space class (the last of its alphabet), but between Latin words it
# often lets the CTC blank win every column of the gap and reads "sale garden" as "salegarden"
# (12 of 83 English lines on clean renders in bench/bench_ocr.py). The space still shows in the
# per-column probabilities, and the gap is wide. Each decoded character sits at the column of its
# first non-blank, non-repeat frame (as in PaddleOCR's return_word_box); the line's pitch is the
# median distance between consecutive characters (distances across spaces the model read left out).
# A space goes between two consecutive characters when
# * both are letters or digits, neither is CJK (Chinese and Japanese put no spaces between
#   characters; nothing goes next to punctuation, "ticket-data" stays) and not both are digits; and
# * some column strictly between them gives the space class >= SPACE_PROB while the gap is >= the
#   pitch, or >= SPACE_PROB_WIDE while the gap is >= SPACE_WIDE_GAP pitches.
# Measured on the English lines of two bench sets (seeds 0 and 1; 113 dropped spaces among ~3,700
# character pairs of lines read otherwise right): at dropped spaces P(space) is mostly 0.1-0.5 and
# the gap 1.0-2.5 pitches; inside words P(space) stays < 0.01 but once (0.035 at a 1.0-pitch gap in
# "welcome"), inside numbers it reached 0.32 ("1186"). These thresholds restore 112 of the 113 and
# split no word.
SPACE_PROB = 0.05
SPACE_PROB_WIDE = 0.01
SPACE_WIDE_GAP = 1.25


def restore_spaces(text: str, probs: np.ndarray, characters: list[str]) -> str:
    """``text`` (the greedy CTC decoding of ``probs``, T x C, class 0 the blank) with the word spaces
    the argmax dropped put back (see above); ``text`` itself when ``probs`` do not decode to it."""
    space = len(characters) - 1
    if characters[space] != " " or len(text) < 2 or probs.ndim != 2 or probs.shape[1] != len(characters):
        return text
    best = probs.argmax(axis=1)
    keep = best != 0
    keep[1:] &= best[1:] != best[:-1]
    cols = np.flatnonzero(keep)
    if "".join(characters[i] for i in best[cols]) != text:
        return text
    chars = [(int(c), characters[best[c]]) for c in cols if best[c] != space]
    read_space = {j for j in range(1, len(chars)) if np.any(best[chars[j - 1][0] : chars[j][0]] == space)}
    gaps = [chars[j][0] - chars[j - 1][0] for j in range(1, len(chars))]
    inside = [g for j, g in enumerate(gaps, 1) if j not in read_space]
    if not inside:
        return text
    pitch = float(np.median(inside))
    out = chars[0][1] if chars else ""
    for j in range(1, len(chars)):
        (a, ca), (b, cb) = chars[j - 1], chars[j]
        if j in read_space or (
            b - a > 1
            and b - a >= pitch
            and ca.isalnum()
            and cb.isalnum()
            and not (_CJK_CHAR.match(ca) or _CJK_CHAR.match(cb))
            and not (ca.isdigit() and cb.isdigit())
            and _space_in_gap(float(probs[a + 1 : b, space].max()), (b - a) / pitch)
        ):
            out += " "
        out += cb
    # Spaces the model read at the ends (the decoding kept them; read_image strips them anyway).
    lead = text[: len(text) - len(text.lstrip(" "))]
    trail = text[len(text.rstrip(" ")) :]
    return lead + out + trail if text.strip(" ") else text


def _space_in_gap(space_prob: float, gap_in_pitches: float) -> bool:
    return space_prob >= SPACE_PROB or (space_prob >= SPACE_PROB_WIDE and gap_in_pitches >= SPACE_WIDE_GAP)


class _RapidSpacedDecode:
    """RapidOCR's CTC decoder (``TextRecognizer.postprocess_op``) with ``restore_spaces`` after it."""

    def __init__(self, decode):
        self.decode = decode
        self.character = decode.character

    def __call__(self, preds, return_word_box=False, **kwargs):
        out = self.decode(preds, return_word_box, **kwargs)
        if return_word_box:
            return out
        return [
            (restore_spaces(text, p, self.character), score)
            for (text, score), p in zip(out, preds, strict=True)
        ]


class _PaddleSpacedDecode:
    """PaddleX's ``CTCLabelDecode`` (a text-recognition predictor's ``post_op``) with ``restore_spaces``."""

    def __init__(self, decode):
        self.decode = decode
        self.character = decode.character

    def __call__(self, pred, return_word_box=False, **kwargs):
        texts, scores = self.decode(pred, return_word_box=return_word_box, **kwargs)
        if return_word_box:
            return texts, scores
        probs = np.asarray(pred[0])
        return [restore_spaces(t, p, self.character) for t, p in zip(texts, probs, strict=True)], scores


# --- backends -----------------------------------------------------------------------------------


class PaddleOcrBackend:
    """PaddleOCR 3.x's OCR pipeline on local model dirs (ONNX Runtime or Paddle Inference)."""

    name = "paddleocr"

    def __init__(self, config: OcrConfig):
        with offline_env(config.resolved_cache_dir()):
            import logging

            dirs = resolve_model_dirs(config)
            onnx = all((dirs[r] / "inference.onnx").is_file() for r in ("det", "rec", "cls"))

            from paddleocr import PaddleOCR

            logging.getLogger("paddlex").setLevel(logging.WARNING)
            kwargs: dict = {"device": "cpu"}
            if onnx:
                kwargs["engine"] = "onnxruntime"
                kwargs["engine_config"] = {
                    "intra_op_num_threads": config.num_threads,
                    "inter_op_num_threads": 1,
                }
            else:  # Paddle-format dirs: Paddle Inference without oneDNN (it crashes on this CPU)
                kwargs.update(enable_mkldnn=False, cpu_threads=config.num_threads)
            self.pipeline = PaddleOCR(
                text_detection_model_name=_model_name(dirs["det"]),
                text_detection_model_dir=str(dirs["det"]),
                text_recognition_model_name=_model_name(dirs["rec"]),
                text_recognition_model_dir=str(dirs["rec"]),
                textline_orientation_model_name=_model_name(dirs["cls"]),
                textline_orientation_model_dir=str(dirs["cls"]),
                use_doc_orientation_classify=False,
                use_doc_unwarping=False,
                use_textline_orientation=True,
                text_det_limit_side_len=config.det_side_limit,
                text_det_limit_type="max",
                text_rec_score_thresh=config.min_score,
                **kwargs,
            )
            rec = self.pipeline.paddlex_pipeline.text_rec_model
            if type(rec.post_op).__name__ == "CTCLabelDecode":  # word spaces, see restore_spaces
                rec.post_op = _PaddleSpacedDecode(rec.post_op)

    def read(self, bgr: np.ndarray) -> list[tuple[str, float, np.ndarray]]:
        """(text, score, 4x2 box) per line of a BGR uint8 image."""
        result = self.pipeline.predict(bgr)[0]
        return list(zip(result["rec_texts"], result["rec_scores"], result["rec_polys"], strict=True))


class RapidOcrBackend:
    """RapidOCR on ONNX Runtime with the same models and the same detector settings."""

    name = "rapidocr"

    def __init__(self, config: OcrConfig):
        with offline_env(config.resolved_cache_dir()):
            from rapidocr_onnxruntime import RapidOCR

            dirs = resolve_model_dirs(config)

            threads = config.num_threads
            self.engine = RapidOCR(
                det_model_path=str(_onnx_file(dirs["det"])),
                rec_model_path=str(_onnx_file(dirs["rec"])),
                cls_model_path=str(_onnx_file(dirs["cls"])),
                rec_keys_path=_rec_keys_file(dirs["rec"], config.resolved_cache_dir()),
                intra_op_num_threads=threads,
                inter_op_num_threads=1,
                # RapidOCR pre-scales whole images to max_side_len; ours is done before, so off.
                max_side_len=1 << 30,
                min_side_len=MIN_SIDE,
                text_score=config.min_score,
                det_limit_side_len=config.det_side_limit,
                det_limit_type="max",
                det_box_thresh=0.6,
                det_unclip_ratio=1.5,
                det_use_dilation=False,
                det_mean=[0.485, 0.456, 0.406],  # PP-OCRv4's training normalisation (RapidOCR: 0.5)
                det_std=[0.229, 0.224, 0.225],
            )
            # RapidOCR picks the detector size itself (960/1500/2000 by image size); pin it to
            # det_side_limit so that both backends detect on the same input.
            from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

            det = self.engine.text_det
            det.get_preprocess = lambda _max_wh: DetPreProcess(
                config.det_side_limit, "max", det.mean, det.std
            )
            rec = self.engine.text_rec
            rec.postprocess_op = _RapidSpacedDecode(rec.postprocess_op)  # word spaces, see restore_spaces

    def read(self, bgr: np.ndarray) -> list[tuple[str, float, np.ndarray]]:
        found, _ = self.engine(bgr)
        return [(text, float(score), np.asarray(box, dtype=np.float64)) for box, text, score in found or []]


def _onnx_file(model_dir: Path) -> Path:
    named = model_dir / "inference.onnx"
    return named if named.exists() else sorted(model_dir.glob("*.onnx"))[0]


def _rec_keys_file(model_dir: Path, cache_dir: str) -> str | None:
    """A keys file for RapidOCR when the alphabet is in inference.yml rather than the ONNX metadata."""
    import yaml

    yml = model_dir / "inference.yml"
    if not yml.is_file():
        return None
    chars = ((yaml.safe_load(yml.read_text(encoding="utf-8")) or {}).get("PostProcess") or {}).get(
        "character_dict"
    )
    if not chars:
        return None
    text = "\n".join(chars) + "\n"
    path = Path(cache_dir) / "keys" / f"{hashlib.blake2b(text.encode(), digest_size=8).hexdigest()}.txt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return str(path)


BACKENDS = {"paddleocr": PaddleOcrBackend, "rapidocr": RapidOcrBackend}


def load_ocr(config: OcrConfig | None = None) -> PaddleOcrBackend | RapidOcrBackend:
    """Load the configured backend (seconds: imports and model sessions); call once per process."""
    config = config or OcrConfig()
    if config.backend not in BACKENDS:
        raise OcrModelError(
            f"unknown OCR backend {config.backend!r}: fix --ocr-backend (one of {', '.join(OCR_BACKENDS)})"
        )
    return BACKENDS[config.backend](config)


# --- reading one image --------------------------------------------------------------------------


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


def text_rows(lines: list[OcrLine]) -> list[list[OcrLine]]:
    """Lines grouped into rows, top to bottom, each read left to right.

    A line joins the row above when their vertical centres are within half the smaller height
    (the detector often cuts one printed line into words or phrases).
    """

    def extent(line: OcrLine) -> tuple[float, float, float]:
        ys = [p[1] for p in line.box]
        return (min(ys) + max(ys)) / 2, max(ys) - min(ys), min(p[0] for p in line.box)

    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=lambda ln: (extent(ln)[0], extent(ln)[2])):
        cy, h, _ = extent(line)
        if rows:
            ry, rh, _ = extent(rows[-1][0])
            if abs(cy - ry) <= 0.5 * min(h, rh):
                rows[-1].append(line)
                continue
        rows.append([line])
    return [sorted(row, key=lambda ln: extent(ln)[2]) for row in rows]


def rows_text(lines: list[OcrLine]) -> str:
    """The text of lines in reading order: rows joined by newlines, the pieces of a row by a space
    (none between two CJK characters, which Chinese and Japanese do not separate)."""
    out = []
    for row in text_rows(lines):
        text = row[0].text
        for line in row[1:]:
            cjk_join = _CJK_CHAR.match(text[-1]) and _CJK_CHAR.match(line.text[0])
            text += ("" if cjk_join else " ") + line.text
        out.append(text)
    return "\n".join(out)


# --- signals ------------------------------------------------------------------------------------

_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")
_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")
_CJK_CHAR = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff]"
)
_TOKEN = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff]"
    r"|[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff]+"
)


def text_language(text: str) -> str:
    """en / zh / mixed / none from the share of Han characters among Han + Latin letters."""
    han, latin = len(_HAN.findall(text)), len(_LATIN.findall(text))
    if han + latin == 0:
        return "none"
    share = han / (han + latin)
    return "zh" if share >= 0.8 else "en" if share <= 0.2 else "mixed"


def text_tokens(text: str) -> list[str]:
    """Normalised tokens: NFKC (full-width -> ASCII), case-folded, punctuation and spaces dropped;
    a run of letters/digits is one token, each CJK character is one."""
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).casefold())


def _is_cjk(token: str) -> bool:
    return len(token) == 1 and _CJK_CHAR.match(token) is not None


def caption_overlap(ocr_text: str, caption: str) -> float | None:
    """Share of the OCR text's characters that the caption contains; None without OCR tokens.

    A letter/digit run counts with its length when it occurs anywhere in the caption with spaces
    and punctuation removed (OCR often drops or adds spaces: "HelloWorld" matches "hello world");
    each CJK character counts once per occurrence in the caption (a multiset).
    """
    tokens = text_tokens(ocr_text)
    if not tokens:
        return None
    caption_tokens = text_tokens(caption or "")
    compact = "".join(caption_tokens)
    cjk_left = Counter(t for t in caption_tokens if _is_cjk(t))
    found = total = 0
    for token in tokens:
        total += len(token)
        if _is_cjk(token):
            if cjk_left[token] > 0:
                cjk_left[token] -= 1
                found += 1
        elif token in compact:
            found += len(token)
    return found / total


def union_area(boxes: list[list[list[float]]], width: int, height: int) -> float:
    """Area of the union of quadrilaterals, clipped to the image."""
    if not boxes:
        return 0.0
    from shapely.geometry import Polygon, box
    from shapely.ops import unary_union

    polys = [Polygon(b).buffer(0) for b in boxes]
    return float(unary_union(polys).intersection(box(0, 0, width, height)).area)


# Watermark heuristic. A line is watermark text when it is small (box area <= WATERMARK_MAX_AREA of
# the image) and either (a) matches WATERMARK_PATTERN anywhere in the image (copyright signs, URLs and
# domains, @handles, stock-photo agencies: tiled stock watermarks sit in the middle), or (b) is short
# (<= WATERMARK_MAX_CHARS) and lies in the outer WATERMARK_EDGE band of the image (its box touches
# the band on any side, corners included) while all text together covers little of the image
# (<= WATERMARK_MAX_TOTAL_AREA): a signature or credit, not a line of a poster or a page.
WATERMARK_MAX_AREA = 0.02  # a credit line on a photo is ~0.1-1 % of it; a headline is more
WATERMARK_EDGE = 0.12  # outer 12 % of width/height: where credits and signatures go
WATERMARK_MAX_CHARS = 24  # "(c) Jane Doe 2024", "photo: Reuters"; longer lines are content
WATERMARK_MAX_TOTAL_AREA = 0.05  # more text than that and edge lines are part of the content
WATERMARK_PATTERN = re.compile(
    r"©|\(c\)|copyright|all rights reserved|版权|水印|"
    r"https?://|www\.|\b[\w-]+\.(com|net|org|cn|io|co|de|jp|ru|uk)\b|(^|\s)@\w+|"
    r"shutterstock|getty\s*images|istock|alamy|dreamstime|depositphotos|123rf|adobe\s*stock|"
    r"视觉中国|图虫|摄图网|千图网|站酷",
    re.IGNORECASE,
)


def is_watermark_line(line: OcrLine, width: int, height: int, total_area_ratio: float) -> bool:
    """The heuristic described above, for one line."""
    area = union_area([line.box], width, height) / (width * height)
    if area > WATERMARK_MAX_AREA:
        return False
    text = unicodedata.normalize("NFKC", line.text)
    if WATERMARK_PATTERN.search(text):
        return True
    xs, ys = [p[0] for p in line.box], [p[1] for p in line.box]
    near_edge = (
        min(xs) <= WATERMARK_EDGE * width
        or max(xs) >= (1 - WATERMARK_EDGE) * width
        or min(ys) <= WATERMARK_EDGE * height
        or max(ys) >= (1 - WATERMARK_EDGE) * height
    )
    return near_edge and len(text) <= WATERMARK_MAX_CHARS and total_area_ratio <= WATERMARK_MAX_TOTAL_AREA


def ocr_signals(result: OcrResult, caption: str) -> dict:
    """The schema.OCR columns (without sample_id/image_id) for one read image and its caption."""
    lines = result.lines
    area = result.width * result.height
    ratio = union_area([ln.box for ln in lines], result.width, result.height) / area if area else 0.0
    text = rows_text(lines)
    return {
        "ocr_text": text,
        "ocr_lines": [asdict(ln) for ln in lines],
        "ocr_conf_mean": float(np.mean([ln.confidence for ln in lines])) if lines else None,
        "text_area_ratio": ratio,
        "ocr_lang": text_language(text),
        "ocr_caption_overlap": caption_overlap(text, caption),
        "has_watermark_text": any(is_watermark_line(ln, result.width, result.height, ratio) for ln in lines),
    }
