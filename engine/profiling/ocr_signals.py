"""What an image read as (lines, boxes, confidences) and the text signals made from it.

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

import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np


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


_HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")

_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")

CJK_CHAR = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff]"
)

_TOKEN = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff]"
    r"|[^\W_\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002ffff]+"
)


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
            cjk_join = CJK_CHAR.match(text[-1]) and CJK_CHAR.match(line.text[0])
            text += ("" if cjk_join else " ") + line.text
        out.append(text)
    return "\n".join(out)


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
    return len(token) == 1 and CJK_CHAR.match(token) is not None


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
