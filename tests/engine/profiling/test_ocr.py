"""engine/profiling/ocr.py: both backends for real on rendered text, and the text signals by hand.

Each backend loads once per module (PaddleOCR takes ~15 s to import paddle). Most recognised
strings are compared with whitespace removed; the word spaces (which PP-OCRv4's recogniser often
drops and ``restore_spaces`` puts back) have tests of their own, on rendered lines and by hand.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from engine.devices import cuda_device_count
from engine.profiling.ocr import load_ocr, read_image
from engine.profiling.ocr_backends import paddle_device
from engine.profiling.ocr_models import (
    OcrConfig,
    OcrModelError,
    check_config,
    ocr_device,
    prepare_model_dirs,
)
from engine.profiling.ocr_signals import (
    OcrLine,
    OcrResult,
    caption_overlap,
    is_watermark_line,
    ocr_signals,
    rows_text,
    text_language,
    union_area,
)
from engine.profiling.ocr_spaces import restore_spaces
from tests.ocr_data import font, gradient, openclipart_image, paste_text, render_lines, skimage_photo


def squash(text: str) -> str:
    return "".join(text.split())


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("ocr-cache"))


@pytest.fixture(scope="module", params=["paddleocr", "rapidocr"])
def ocr(request, cache_dir):
    return load_ocr(OcrConfig(backend=request.param, cache_dir=cache_dir, num_threads=2))


def read_text(ocr, image: Image.Image) -> list[str]:
    """The rows the OCR read, top to bottom, whitespace removed."""
    result = read_image(ocr, image)
    return [squash(row) for row in rows_text(result.lines).split("\n") if row]


EN, ZH = font(cjk=False), font(cjk=True)

CASES = {
    "english_on_white": (
        lambda: render_lines(["Curating data at scale"], EN, 36),
        ["Curating data at scale"],
    ),
    "chinese_on_white": (lambda: render_lines(["文本渲染数据清洗"], ZH, 40), ["文本渲染数据清洗"]),
    "english_on_photo": (
        lambda: render_lines(
            ["Open Source Engine"],
            font(False, 1),
            48,
            skimage_photo("astronaut.png"),
            fill="white",
            stroke="black",
        ),
        ["Open Source Engine"],
    ),
    "chinese_on_photo": (
        lambda: render_lines(["咖啡与猫"], ZH, 56, skimage_photo("coffee.png"), fill="white", stroke="black"),
        ["咖啡与猫"],
    ),
    "chinese_on_clipart": (
        lambda: render_lines(
            ["欢迎光临"], font(True, 1), 56, openclipart_image(3, (400, 200)), stroke="white"
        ),
        ["欢迎光临"],
    ),
    "english_on_clipart": (
        lambda: render_lines(["Public Domain Art"], EN, 44, openclipart_image(7, (400, 200)), stroke="white"),
        ["Public Domain Art"],
    ),
    "multi_line_mixed": (
        lambda: render_lines(["First line here", "第二行文字", "Line 3: 2025"], ZH, 36),
        ["First line here", "第二行文字", "Line 3: 2025"],
    ),
    "rotated_90_english": (
        lambda: render_lines(["Rotated Label 42"], EN, 40).rotate(90, expand=True),
        ["Rotated Label 42"],
    ),
    "rotated_minus_90_chinese": (
        lambda: render_lines(["旋转文字测试"], ZH, 40).rotate(-90, expand=True),
        ["旋转文字测试"],
    ),
    "small_english_10px": (
        lambda: render_lines(["small print matters"], EN, 10, margin=8),
        ["small print matters"],
    ),
    "small_chinese_14px": (lambda: render_lines(["小号字体"], ZH, 14, margin=8), ["小号字体"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rendered_text_is_read(ocr, case):
    make, expected = CASES[case]
    assert read_text(ocr, make()) == [squash(line) for line in expected]


# Lines whose word spaces PP-OCRv4's argmax decoding dropped on both backends (bench/bench_ocr.py,
# seed 0: "salegardenslowgarden", "freecitymuseum"), with numbers and a second line.
SPACED_LINES = {
    "sans_24": (["daily 173", "sale garden slow garden"], font(False, 0), 24),
    "mono_16": (["free city museum"], font(False, 2), 16),
    "sans_32": (["blue image free stage", "school bakery museum tower 1642"], font(False, 0), 32),
}


@pytest.mark.parametrize("case", sorted(SPACED_LINES))
def test_english_words_are_read_with_their_spaces(ocr, case):
    lines, spec, size = SPACED_LINES[case]
    assert rows_text(read_image(ocr, render_lines(lines, spec, size)).lines).split("\n") == lines


def test_large_image_is_resized_and_boxes_are_in_its_own_pixels(ocr):
    image = paste_text(gradient((6000, 1500), 1), "HUGE BANNER", EN, 300, (400, 500))
    result = read_image(ocr, image)
    assert [squash(line.text) for line in result.lines] == ["HUGEBANNER"]
    xs = [p[0] for p in result.lines[0].box]
    ys = [p[1] for p in result.lines[0].box]
    # The text spans x ~ 400..2400, y ~ 560..780 at full size (not at the 4000 px copy's scale).
    assert 300 < min(xs) < 500 and 2200 < max(xs) < 2600 and 450 < min(ys) < 650 and 700 < max(ys) < 900


def test_tiny_and_text_free_images_give_empty_results(ocr):
    assert read_image(ocr, Image.new("RGB", (15, 400), "white")).lines == []
    assert read_image(ocr, render_lines(["x"], EN, 10, margin=2).resize((40, 12))).lines == []
    assert read_image(ocr, gradient((320, 240))).lines == []
    assert read_image(ocr, skimage_photo("chelsea.png")).lines == []
    signals = ocr_signals(read_image(ocr, gradient((64, 64))), "a caption")
    assert signals["ocr_text"] == "" and signals["ocr_lines"] == [] and signals["ocr_lang"] == "none"
    assert signals["text_area_ratio"] == 0.0 and signals["ocr_conf_mean"] is None
    assert signals["ocr_caption_overlap"] is None and signals["has_watermark_text"] is False


def test_same_image_same_result(ocr):
    image = render_lines(["Deterministic 2025", "确定性"], ZH, 32)
    assert read_image(ocr, image) == read_image(ocr, image.copy())


def test_signals_of_a_read_image(ocr):
    image = render_lines(["Hello World", "你好世界"], ZH, 40)
    signals = ocr_signals(read_image(ocr, image), "A sign that says HELLO world in Chinese: 你好，世界")
    assert squash(signals["ocr_text"]) == "HelloWorld你好世界"
    assert signals["ocr_lang"] == "mixed" and signals["ocr_caption_overlap"] == 1.0
    assert 0.9 < signals["ocr_conf_mean"] <= 1.0
    assert 0.1 < signals["text_area_ratio"] < 0.6
    assert all(len(line["box"]) == 4 for line in signals["ocr_lines"])


def test_watermark_in_a_photo_corner_is_flagged(ocr):
    photo = skimage_photo("astronaut.png")
    marked = paste_text(photo, "© Shutterstock", EN, 16, (370, 486))
    signals = ocr_signals(read_image(ocr, marked), "an astronaut")
    assert "Shutterstock" in signals["ocr_text"] and signals["has_watermark_text"] is True
    titled = render_lines(["GRAND OPENING"], EN, 64, photo, fill="white", stroke="black")
    assert ocr_signals(read_image(ocr, titled), "a poster")["has_watermark_text"] is False


# --- signals by hand ---------------------------------------------------------------------------


def line(text: str, x0: float, y0: float, x1: float, y1: float, confidence: float = 0.9) -> OcrLine:
    return OcrLine(text, confidence, [[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


def test_language_by_han_share():
    assert text_language("") == "none" and text_language("2025 !!") == "none"
    assert text_language("Hello world") == "en" and text_language("你好世界") == "zh"
    assert text_language("北京 Beijing") == "mixed"  # 2 Han, 7 Latin: 0.22
    assert text_language("欢迎光临 KFC 肯德基") == "mixed"
    assert text_language("中华人民共和国成立 A") == "zh"  # 9 of 10


def test_caption_overlap_normalises_case_width_and_punctuation():
    assert caption_overlap("", "anything") is None
    assert caption_overlap("SALE 50%", "a sale: 50 percent off") == 1.0
    assert caption_overlap("ＳＡＬＥ", "sale") == 1.0  # full-width letters
    assert caption_overlap("HelloWorld", "hello, world") == 1.0  # OCR dropped the space
    assert caption_overlap("你好，世界！", "他说你好") == 0.5  # 你好 of 你好世界
    assert caption_overlap("說話", "说话") == 0.0  # traditional vs simplified left as is
    assert caption_overlap("open 24h", "open late") == 4 / 7


def test_text_area_ratio_is_the_union_of_boxes():
    boxes = [line("a", 0, 0, 10, 10).box, line("b", 5, 0, 15, 10).box, line("c", 90, 90, 120, 120).box]
    assert union_area(boxes, 100, 100) == 150 + 100  # overlap counted once; clipped to the image
    result = OcrResult(100, 100, [line("a", 0, 0, 10, 10), line("b", 5, 0, 15, 10)])
    assert ocr_signals(result, "")["text_area_ratio"] == pytest.approx(0.015)


def ctc_probs(frames: str, alphabet: list[str], space_in_gaps: dict[int, float]) -> np.ndarray:
    """T x C probabilities whose argmax spells ``frames`` ("_" the blank, one frame per character);
    ``space_in_gaps`` gives the space class that probability at those frames (blank keeps the rest)."""
    probs = np.full((len(frames), len(alphabet)), 0.0)
    for t, ch in enumerate(frames):
        probs[t, 0 if ch == "_" else alphabet.index(ch)] = 1.0
    for t, p in space_in_gaps.items():
        probs[t, 0], probs[t, -1] = 1 - p, p
    return probs


def test_restore_spaces_from_the_ctc_output():
    alphabet = ["blank", *"abcdeno12", "中", "文", " "]
    # "ab" then a gap twice the pitch where the space class got 0.2 (blank won), then "cd".
    probs = ctc_probs("a_b___c_d", alphabet, {4: 0.2})
    assert restore_spaces("abcd", probs, alphabet) == "ab cd"
    # A faint space probability counts only where the gap is clearly wider than the pitch.
    assert restore_spaces("abcd", ctc_probs("a_b___c_d", alphabet, {4: 0.02}), alphabet) == "ab cd"
    assert restore_spaces("abcd", ctc_probs("a_b___c_d", alphabet, {4: 0.005}), alphabet) == "abcd"
    assert restore_spaces("abcde", ctc_probs("a__b__c__d__e", alphabet, {7: 0.02}), alphabet) == "abcde"
    assert restore_spaces("abcde", ctc_probs("a__b__c__d__e", alphabet, {7: 0.2}), alphabet) == "abc de"
    # A wide gap without space probability (a wide letter) or a narrow one with it: no space.
    assert restore_spaces("abcd", ctc_probs("a_b___c_d", alphabet, {}), alphabet) == "abcd"
    assert restore_spaces("abcde", ctc_probs("a__b__c_d__e", alphabet, {7: 0.5}), alphabet) == "abcde"
    # Spaces the model read stay; none goes between CJK characters or inside a number.
    assert restore_spaces("ab cd", ctc_probs("a_b_ _c_d", alphabet, {}), alphabet) == "ab cd"
    assert restore_spaces("中文", ctc_probs("中___文", alphabet, {2: 0.4}), alphabet) == "中文"
    assert restore_spaces("a中", ctc_probs("a___中", alphabet, {2: 0.4}), alphabet) == "a中"
    assert restore_spaces("12", ctc_probs("1___2", alphabet, {2: 0.4}), alphabet) == "12"
    assert restore_spaces("no12", ctc_probs("n_o___1_2", alphabet, {4: 0.4}), alphabet) == "no 12"
    # Text that is not the decoding of the probabilities is returned as it is.
    assert restore_spaces("xyz", probs, alphabet) == "xyz"


def test_rows_are_read_top_to_bottom_and_left_to_right():
    lines = [line("world", 60, 2, 100, 20), line("second", 0, 40, 50, 60), line("hello", 0, 0, 50, 18)]
    assert rows_text(lines) == "hello world\nsecond"
    pieces = [line("现象", 0, 0, 40, 20), line("下 2025", 50, 0, 120, 20), line("版", 130, 0, 150, 20)]
    assert rows_text(pieces) == "现象下 2025 版"  # no space between CJK pieces


def test_watermark_heuristic():
    w, h = 1000, 800
    credit = line("© Jane Doe", 820, 770, 990, 795)  # bottom-right corner, 0.5 % of the image
    assert is_watermark_line(credit, w, h, 0.005)
    url_in_middle = line("www.example.com", 400, 380, 600, 410)
    assert is_watermark_line(url_in_middle, w, h, 0.01)
    signature = line("J. Smith 2019", 20, 770, 160, 795)  # short, small, at the edge, no pattern
    assert is_watermark_line(signature, w, h, 0.005)
    assert not is_watermark_line(signature, w, h, 0.2)  # edge line of a text-heavy image: content
    headline = line("BIG SUMMER SALE", 100, 20, 900, 200)  # at the top but large
    assert not is_watermark_line(headline, w, h, 0.18)
    centred = line("Welcome", 450, 380, 550, 410)  # small but central, no pattern
    assert not is_watermark_line(centred, w, h, 0.004)
    long_footer = line("Terms and conditions apply to every offer shown", 100, 770, 500, 795)
    assert not is_watermark_line(long_footer, w, h, 0.012)


# --- config, models, offline --------------------------------------------------------------------


def test_missing_model_dir_is_one_line_naming_the_setting(tmp_path):
    with pytest.raises(OcrModelError, match=r"--ocr-det-model-dir \(or ZCURATE_OCR_DET_MODEL_DIR\)") as e:
        check_config(OcrConfig(det_model_dir=str(tmp_path / "nope")))
    assert "\n" not in str(e.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OcrModelError, match="--ocr-rec-model-dir"):
        check_config(OcrConfig(backend="rapidocr", rec_model_dir=str(empty)))
    with pytest.raises(OcrModelError, match="--ocr-backend"):
        check_config(OcrConfig(backend="tesseract"))


def test_config_from_environment(monkeypatch):
    monkeypatch.setenv("ZCURATE_OCR_BACKEND", "rapidocr")
    monkeypatch.setenv("ZCURATE_OCR_DET_SIDE_LIMIT", "640")
    config = OcrConfig.from_env(num_threads=3)
    assert (config.backend, config.det_side_limit, config.num_threads) == ("rapidocr", 640, 3)


def test_device_from_environment_and_checked(monkeypatch):
    import engine.devices

    assert OcrConfig().device == "cpu" and OcrConfig.from_env().device == "cpu"
    monkeypatch.setenv("ZCURATE_OCR_DEVICE", "cuda:1")
    assert OcrConfig.from_env().device == "cuda:1" and OcrConfig.from_env(device="cpu").device == "cpu"
    with pytest.raises(OcrModelError, match="ZCURATE_OCR_DEVICE") as e:
        check_config(OcrConfig(device="gpu"))
    assert "\n" not in str(e.value)
    with pytest.raises(OcrModelError, match="unknown OCR device"):
        ocr_device(OcrConfig(device="cuda:x"))
    monkeypatch.setattr(engine.devices, "cuda_device_count", lambda: 2)
    assert [ocr_device(OcrConfig(device=d)) for d in ("cpu", "auto", "cuda", " CUDA:1")] == [
        "cpu",
        "cuda:0",
        "cuda:0",
        "cuda:1",
    ]
    monkeypatch.setattr(engine.devices, "cuda_device_count", lambda: 0)
    assert ocr_device(OcrConfig(device="auto")) == "cpu"


def test_paddleocr_device_falls_back_to_the_cpu_with_a_warning(monkeypatch):
    import types

    import onnxruntime as ort

    assert paddle_device("cpu", onnx=True) == "cpu"
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert paddle_device("cuda:1", onnx=True) == "cuda:1"
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.warns(UserWarning, match="no CUDA provider"):
        assert paddle_device("cuda:1", onnx=True) == "cpu"
    cpu_paddle = types.SimpleNamespace(device=types.SimpleNamespace(is_compiled_with_cuda=lambda: False))
    monkeypatch.setitem(sys.modules, "paddle", cpu_paddle)  # Paddle-format models: paddle's own CUDA
    with pytest.warns(UserWarning, match="paddle is built without CUDA"):
        assert paddle_device("cuda:0", onnx=False) == "cpu"


def test_rapidocr_on_cuda_without_the_cuda_provider_warns_and_reads_on_the_cpu(cache_dir, monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.warns(UserWarning, match="no CUDA provider"):
        ocr = load_ocr(OcrConfig(backend="rapidocr", device="cuda:0", cache_dir=cache_dir, num_threads=2))
    assert ocr.device == "cpu"
    assert ocr.engine.text_rec.session.session.get_providers() == ["CPUExecutionProvider"]
    make, expected = CASES["multi_line_mixed"]
    assert read_text(ocr, make()) == [squash(line) for line in expected]


def onnx_cuda_available() -> bool:
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers() and cuda_device_count() > 0


@pytest.mark.gpu
@pytest.mark.skipif(not onnx_cuda_available(), reason="needs onnxruntime's CUDA provider and a GPU")
def test_cuda_reads_the_same_lines_as_the_cpu(ocr, cache_dir):
    on_gpu = load_ocr(OcrConfig(backend=ocr.name, device="cuda:0", cache_dir=cache_dir, num_threads=2))
    assert on_gpu.device == "cuda:0"
    for case in sorted(CASES):
        image = CASES[case][0]()
        assert read_text(on_gpu, image) == read_text(ocr, image), case


def test_model_dirs_given_by_config_are_used(cache_dir):
    dirs = prepare_model_dirs(cache_dir)
    assert all((d / "inference.yml").is_file() and (d / "inference.onnx").is_file() for d in dirs.values())
    config = OcrConfig(
        backend="rapidocr",
        det_model_dir=str(dirs["det"]),
        rec_model_dir=str(dirs["rec"]),
        cls_model_dir=str(dirs["cls"]),
        cache_dir=cache_dir,
    )
    assert read_text(load_ocr(config), render_lines(["模型目录"], ZH, 40)) == ["模型目录"]


def test_model_dirs_whose_link_dangles_are_rebuilt(tmp_path):
    """The cache outlives virtualenvs: a link into a deleted .venv is replaced, not used."""
    cache = str(tmp_path / "cache")
    det = prepare_model_dirs(cache)["det"]
    link = det / "inference.onnx"
    link.unlink()
    link.symlink_to(tmp_path / "deleted-venv" / "det.onnx")  # as if its .venv had been removed
    assert not link.exists()
    assert prepare_model_dirs(cache)["det"] == det
    assert link.is_file() and link.stat().st_size > 1_000_000


def test_a_broken_image_does_not_stop_the_stage(cache_dir, monkeypatch):
    import engine.profiling.ocr as ocr
    from pipelines.stages import OcrStage
    from tests.data import image_batch

    good = render_lines(["正常图片"], ZH, 40)
    broken = Image.new("RGB", (77, 33), "white")
    real = ocr.read_image

    def breaks_on_one(engine, image, max_side):  # a backend crash on one image
        if image.size == broken.size:
            raise RuntimeError("the backend crashed")
        return real(engine, image, max_side)

    monkeypatch.setattr(ocr, "read_image", breaks_on_one)
    stage = OcrStage(OcrConfig(backend="rapidocr", cache_dir=cache_dir))
    stage.setup()
    batch = image_batch(
        [
            ("s1", "i1", "坏的", broken),
            ("s2", "i2", "正常图片", good),
            ("s3", "i2", "another caption", good),  # same image, second caption
        ]
    )
    rows = stage(batch).to_pylist()
    assert [r["sample_id"] for r in rows] == ["s1", "s2", "s3"]
    assert rows[0]["ocr_text"] is None and rows[0]["ocr_lines"] is None
    assert rows[1]["ocr_text"] == rows[2]["ocr_text"] == "正常图片"
    assert rows[1]["ocr_caption_overlap"] == 1.0 and rows[2]["ocr_caption_overlap"] == 0.0


@pytest.mark.slow
def test_paddleocr_loads_offline_without_writing_to_home(tmp_path):
    """A fresh process with an empty HOME: PaddleOCR reads an image; HOME stays empty."""
    home = tmp_path / "home"
    home.mkdir()
    code = (
        "from engine.profiling.ocr import load_ocr, read_image\n"
        "from engine.profiling.ocr_models import OcrConfig\n"
        "from tests.ocr_data import font, render_lines\n"
        f"ocr = load_ocr(OcrConfig(backend='paddleocr', cache_dir={str(tmp_path / 'cache')!r}))\n"
        "print(read_image(ocr, render_lines(['离线'], font(True), 40)).lines[0].text)\n"
    )
    env = {**os.environ, "HOME": str(home)}
    env.pop("PADDLE_PDX_CACHE_HOME", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "离线"
    assert list(home.iterdir()) == []
