"""api.ranges.parse_range: Range headers against a file's size (the HTTP side is in test_manifests.py)."""

from __future__ import annotations

import pytest

from api.ranges import MAX_RANGES, MalformedRange, UnsatisfiableRange, parse_range

SIZE = 100  # bytes in the imagined file


@pytest.mark.parametrize(
    "header, ranges",
    [
        ("bytes=0-0", [(0, 1)]),  # single: the first byte
        ("bytes=10-19", [(10, 20)]),
        ("bytes=90-150", [(90, 100)]),  # a last byte past the end is the end
        ("bytes=0-99999999999999999999", [(0, 100)]),
        ("bytes=95-", [(95, 100)]),  # open-ended: to the end
        ("bytes=-8", [(92, 100)]),  # suffix: the last 8 bytes
        ("bytes=-500", [(0, 100)]),  # a suffix longer than the file: all of it
        ("bytes=0-3,20-29,-4", [(0, 4), (20, 30), (96, 100)]),  # multiple, in the header's order
        ("bytes=20-29,0-3", [(20, 30), (0, 4)]),
        ("bytes=0-9,5-14", [(0, 10), (5, 15)]),  # overlapping ones stay as given
        ("Bytes = 1-2 , ,3-4,", [(1, 3), (3, 5)]),  # any case, spaces, empty list elements
        ("bytes=007-008", [(7, 9)]),
    ],
)
def test_good_headers(header, ranges):
    assert parse_range(header, SIZE) == ranges


@pytest.mark.parametrize(
    "header",
    [
        "",
        "bytes",  # no '='
        "items=0-3",  # another unit
        "bytes=",  # no range
        "bytes=,,",
        "bytes=-",
        "bytes=3",
        "bytes=a-b",
        "bytes=1-2-3",
        "bytes=0 - 3",  # spaces inside a range
        "bytes=+1-3",
        "bytes=-+3",
        "bytes=1_0-20",
        "bytes=٠-٣",  # digits, but not ASCII ones
        "bytes=9-3",  # ends before it starts
        "bytes=0-3,abc",  # one bad part spoils the header
        "bytes=0-" + "9" * 31,  # more digits than any file's size needs
        "bytes=0-" + "9" * 5000,
        "bytes=" + ",".join(["0-0"] * (MAX_RANGES + 1)),  # too many
    ],
)
def test_malformed_headers(header):
    with pytest.raises(MalformedRange):
        parse_range(header, SIZE)


@pytest.mark.parametrize(
    "header, size",
    [
        ("bytes=100-", SIZE),  # starts at the end
        ("bytes=100-200", SIZE),
        ("bytes=-0", SIZE),  # the last zero bytes: nothing
        ("bytes=0-3,100-", SIZE),  # one unsatisfiable range refuses the header
        ("bytes=0-", 0),  # an empty file has no range at all
        ("bytes=-5", 0),
    ],
)
def test_unsatisfiable_headers(header, size):
    with pytest.raises(UnsatisfiableRange, match=f"the file has {size} bytes"):
        parse_range(header, size)


def test_the_limit_on_ranges_counts_every_list_element():
    assert len(parse_range("bytes=" + ",".join(["0-0"] * MAX_RANGES), SIZE)) == MAX_RANGES
    with pytest.raises(MalformedRange, match="more than"):
        parse_range("bytes=0-0" + "," * MAX_RANGES, SIZE)
