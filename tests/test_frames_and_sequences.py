"""Frame ranges and sequence patterns: pure logic, no files but one listing."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas import FrameRangeError, format_frame_range, parse_frame_range
from workers.io.sequence import SequencePattern, SequencePatternError


@pytest.mark.parametrize(
    ("text", "frames"),
    [
        ("1001-1005", [1001, 1002, 1003, 1004, 1005]),
        ("1001-1002,1005-1006", [1001, 1002, 1005, 1006]),
        ("7", [7]),
        ("-3--1", [-3, -2, -1]),
        ("-1-1", [-1, 0, 1]),
        (" 1001 - 1002 ", [1001, 1002]),
        ("3,1,2,3", [1, 2, 3]),
    ],
)
def test_frame_ranges_parse(text: str, frames: list[int]) -> None:
    assert parse_frame_range(text) == frames


@pytest.mark.parametrize(
    ("text", "words"),
    [("1100-1001", "reversed"), ("abc", "can't read"), ("", "empty"), ("1-2,,", "can't read"), ("0-200000", "split")],
)
def test_bad_frame_ranges_say_why(text: str, words: str) -> None:
    with pytest.raises(FrameRangeError, match=words):
        parse_frame_range(text)


def test_format_frame_range_is_compact() -> None:
    assert format_frame_range([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10"
    assert format_frame_range([]) == ""


@pytest.mark.parametrize(
    ("pattern", "padding", "name"),
    [
        ("/s/sh010_plate.####.exr", 4, "sh010_plate.1001.exr"),
        ("/s/sh010_plate.%04d.exr", 4, "sh010_plate.1001.exr"),
        ("/s/sh010_plate.$F4.exr", 4, "sh010_plate.1001.exr"),
        ("/s/sh010_plate.#.exr", 1, "sh010_plate.1001.exr"),
        ("/s/plate_@@@.png", 3, "plate_1001.png"),
        ("/s/plate.%d.dpx", 1, "plate.1001.dpx"),
    ],
)
def test_patterns_follow_nuke_padding(pattern: str, padding: int, name: str) -> None:
    seq = SequencePattern.parse(pattern)
    assert seq.padding == padding
    assert seq.frame_name(1001) == name
    assert seq.frame_name(-5).startswith(seq.head + "-")


@pytest.mark.parametrize("pattern", ["/s/plate.exr", "/s/a.####.####.exr", "/s/sh#/plate.####.exr"])
def test_patterns_need_one_token_in_the_file_name(pattern: str) -> None:
    with pytest.raises(SequencePatternError):
        SequencePattern.parse(pattern)


def test_frames_on_disk_count_only_canonical_names(tmp_path: Path) -> None:
    for name in ("a.1001.exr", "a.1002.exr", "a.01003.exr", "a.-001.exr", "a.1004.exr.tmp", "b.1005.exr"):
        (tmp_path / name).touch()
    assert SequencePattern.parse(str(tmp_path / "a.####.exr")).frames_on_disk() == [-1, 1001, 1002]
