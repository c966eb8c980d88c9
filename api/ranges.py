"""HTTP Range headers (RFC 9110 section 14): ``parse_range`` checks one against a file's size.

The manifest download (api/routes/manifests.py) answers a bad header itself, in the JSON error
shape (400 malformed, 416 unsatisfiable), and hands a good one to Starlette's ``FileResponse``,
which serves it (206, multipart for several ranges). So this parser is the stricter of the two:
what it accepts, FileResponse serves as the same bytes (it merges overlapping ranges).
"""

from __future__ import annotations

import re

MAX_RANGES = 100  # FileResponse serves the whole file (200) for more; a client asking that many is refused
# One range-spec: first-last, first- (to the end) or -suffix (the last bytes), in ASCII digits; up
# to 30 of them, far past any file's size (a longer number is refused: int() stops at ~4300 digits).
RANGE_SPEC = re.compile(r"(\d{0,30})-(\d{0,30})", re.ASCII)


class RangeError(ValueError):
    """A Range header that cannot be served."""


class MalformedRange(RangeError):
    """Not a byte-range header we read (the API answers 400)."""


class UnsatisfiableRange(RangeError):
    """A range that starts at or after the end of the file (the API answers 416)."""


def parse_range(header: str, size: int) -> list[tuple[int, int]]:
    """The byte ranges of a ``Range`` header, for a file of ``size`` bytes.

    Reads ``bytes=`` (any case) then ranges separated by commas: ``first-last``, ``first-`` (to
    the end) and ``-n`` (the last n bytes). A last byte past the end is the end; empty list
    elements are skipped.

    Returns:
        (start, stop) byte offsets with stop exclusive, one per range, in the header's order.

    Raises:
        MalformedRange: another unit, no range, too many, a part that is not a range, or
            first > last.
        UnsatisfiableRange: a range that starts at or after ``size`` (``-0`` included).
    """
    unit, sep, specs = header.partition("=")
    if not sep or unit.strip().lower() != "bytes":
        raise MalformedRange("only a 'bytes=' range is served")
    parts = specs.split(",")
    if len(parts) > MAX_RANGES:
        raise MalformedRange(f"more than {MAX_RANGES} ranges")
    ranges = []
    for part in (p.strip() for p in parts):
        if not part:
            continue
        match = RANGE_SPEC.fullmatch(part)
        if match is None or match.groups() == ("", ""):
            raise MalformedRange(f"not a byte range: {part[:40]!r}")
        first, last = match.groups()
        if first:  # first-last, or first- to the end; a last byte past the end is the end
            start, stop = int(first), min(int(last) + 1, size) if last else size
            if last and int(last) < start:
                raise MalformedRange(f"a range that ends before it starts: {part[:40]!r}")
        else:  # -n: the last n bytes (all of them when the file is shorter, none for -0)
            start, stop = size - min(int(last), size), size
        if start >= size:
            raise UnsatisfiableRange(f"the file has {size} bytes")
        ranges.append((start, stop))
    if not ranges:
        raise MalformedRange("no range given")
    return ranges
