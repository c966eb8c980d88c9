"""Word spaces put back into PP-OCRv4's recognised text, from its own per-column output."""

from __future__ import annotations

import numpy as np

from engine.profiling.ocr_signals import CJK_CHAR

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
            and not (CJK_CHAR.match(ca) or CJK_CHAR.match(cb))
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


class RapidSpacedDecode:
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


class PaddleSpacedDecode:
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
