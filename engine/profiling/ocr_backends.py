"""The two OCR backends over the same PP-OCR models: PaddleOCR 3.x and RapidOCR.

* ``paddleocr``: PaddleOCR 3.x's OCR pipeline (detection, text-line orientation, recognition) on
  ONNX Runtime, or on Paddle Inference with ``enable_mkldnn=False`` for Paddle-format model dirs
  (oneDNN crashes on this CPU; no Paddle-format model is installed here, so that path is exercised
  only by users who bring one).
* ``rapidocr``: RapidOCR (``rapidocr_onnxruntime``), the same pipeline on ONNX Runtime, for users
  without paddle.

Both CTC decoders are wrapped so that dropped word spaces come back (``engine.profiling.ocr_spaces``).

Device (``OcrConfig.device``): the CPU by default. On ``cuda:N`` RapidOCR's three ONNX sessions
run on onnxruntime's CUDA provider, and PaddleOCR gets ``device="gpu:N"`` (Paddle's spelling), so
its ONNX Runtime engine uses the CUDA provider on GPU N, or Paddle Inference runs on GPU N. When
the backend cannot use the GPU (``onnxruntime`` without its CUDA provider, a paddle built without
CUDA) it warns and runs on the CPU; ``backend.device`` says where it runs.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from engine.devices import device_index, is_cuda, onnx_providers
from engine.profiling.ocr_models import (
    MIN_SIDE,
    OcrConfig,
    model_name,
    ocr_device,
    offline_env,
    resolve_model_dirs,
)
from engine.profiling.ocr_spaces import PaddleSpacedDecode, RapidSpacedDecode


class PaddleOcrBackend:
    """PaddleOCR 3.x's OCR pipeline on local model dirs (ONNX Runtime or Paddle Inference).

    On ``cuda:N`` it runs on ``gpu:N``; when its engine has no CUDA (see ``paddle_device``) it
    warns and runs on the CPU. ``self.device`` is where it runs.
    """

    name = "paddleocr"

    def __init__(self, config: OcrConfig):
        with offline_env(config.resolved_cache_dir()):
            import logging

            dirs = resolve_model_dirs(config)
            onnx = all((dirs[r] / "inference.onnx").is_file() for r in ("det", "rec", "cls"))
            device = ocr_device(config)  # an unknown or absent CUDA device fails before paddle loads

            from paddleocr import PaddleOCR

            logging.getLogger("paddlex").setLevel(logging.WARNING)
            self.device = paddle_device(device, onnx)
            kwargs: dict = {"device": "cpu" if self.device == "cpu" else f"gpu:{device_index(self.device)}"}
            if onnx:
                kwargs["engine"] = "onnxruntime"
                kwargs["engine_config"] = {
                    "intra_op_num_threads": config.num_threads,
                    "inter_op_num_threads": 1,
                }
                if is_cuda(self.device):  # PaddleX's runner then asks for the CUDA provider on GPU N
                    kwargs["engine_config"].update(device_type="gpu", device_id=device_index(self.device))
            else:  # Paddle-format dirs: Paddle Inference without oneDNN (it crashes on this CPU)
                kwargs.update(enable_mkldnn=False, cpu_threads=config.num_threads)
            self.pipeline = PaddleOCR(
                text_detection_model_name=model_name(dirs["det"]),
                text_detection_model_dir=str(dirs["det"]),
                text_recognition_model_name=model_name(dirs["rec"]),
                text_recognition_model_dir=str(dirs["rec"]),
                textline_orientation_model_name=model_name(dirs["cls"]),
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
                rec.post_op = PaddleSpacedDecode(rec.post_op)

    def read(self, bgr: np.ndarray) -> list[tuple[str, float, np.ndarray]]:
        """(text, score, 4x2 box) per line of a BGR uint8 image."""
        result = self.pipeline.predict(bgr)[0]
        return list(zip(result["rec_texts"], result["rec_scores"], result["rec_polys"], strict=True))


def paddle_device(device: str, onnx: bool) -> str:
    """The device PaddleOCR can run on: ``device`` (cpu or cuda:N), or cpu with a warning when the
    engine it would use has no CUDA (onnxruntime's CUDA provider for ONNX models, a CUDA build of
    paddle for Paddle-format ones); PaddleX itself would raise instead."""
    if not is_cuda(device):
        return "cpu"
    if onnx:
        return device if len(onnx_providers(device)) > 1 else "cpu"  # onnx_providers warns
    import paddle

    if paddle.device.is_compiled_with_cuda():
        return device
    warnings.warn("paddle is built without CUDA (install paddlepaddle-gpu): OCR on the CPU", stacklevel=2)
    return "cpu"


class RapidOcrBackend:
    """RapidOCR on ONNX Runtime with the same models and the same detector settings.

    On ``cuda:N`` its sessions run on onnxruntime's CUDA provider; without that provider it warns
    and runs on the CPU (see ``_rapid_sessions_to_cuda``). ``self.device`` is where it runs.
    """

    name = "rapidocr"

    def __init__(self, config: OcrConfig):
        with offline_env(config.resolved_cache_dir()):
            from rapidocr_onnxruntime import RapidOCR

            dirs = resolve_model_dirs(config)
            device = ocr_device(config)  # an unknown or absent CUDA device fails before any session

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
            rec.postprocess_op = RapidSpacedDecode(rec.postprocess_op)  # word spaces, see restore_spaces
            self.device = "cpu"
            if is_cuda(device):
                self.device = _rapid_sessions_to_cuda(self.engine, dirs, device, threads)

    def read(self, bgr: np.ndarray) -> list[tuple[str, float, np.ndarray]]:
        found, _ = self.engine(bgr)
        return [(text, float(score), np.asarray(box, dtype=np.float64)) for box, text, score in found or []]


def _rapid_sessions_to_cuda(engine, dirs: dict[str, Path], device: str, threads: int) -> str:
    """Rebuild RapidOCR's det/cls/rec sessions on the CUDA provider of ``device``; returns where
    they run (``device``, or cpu with a warning when onnxruntime has no working CUDA provider).

    RapidOCR's own ``*_use_cuda`` options always pick GPU 0, so the CPU sessions it built are
    replaced with sessions on ``onnx_providers(device)`` (same model files and thread settings);
    the detector/recogniser objects read ``.session`` at each call, so nothing else changes.
    """
    import onnxruntime as ort

    providers = onnx_providers(device)  # warns and gives the CPU provider when CUDA is missing
    if len(providers) == 1:
        return "cpu"
    options = ort.SessionOptions()
    options.log_severity_level = 4  # RapidOCR's session options (OrtInferSession)
    options.enable_cpu_mem_arena = False
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    wrappers = {"det": engine.text_det.infer, "cls": engine.text_cls.infer, "rec": engine.text_rec.session}
    sessions = {}
    for role, wrapper in wrappers.items():
        session = ort.InferenceSession(str(_onnx_file(dirs[role])), sess_options=options, providers=providers)
        if "CUDAExecutionProvider" not in session.get_providers():  # installed but did not start
            warnings.warn(
                f"onnxruntime's CUDA provider did not start on {device}: OCR on the CPU", stacklevel=2
            )
            return "cpu"
        sessions[role] = (wrapper, session)
    for wrapper, session in sessions.values():
        wrapper.session = session
    return device


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
