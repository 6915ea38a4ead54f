"""Frame-sequence patterns with Nuke semantics, on top of ``fileseq``.

``####`` and ``@@@@`` are one digit per character (fileseq's ``PAD_STYLE_HASH1``; its default
reads ``#`` as four digits), ``%04d`` and ``$F4`` are printf/Houdini padding. Nothing here opens
an image.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

import fileseq

_TOKEN = re.compile(r"[#@]+|%0?\d*d|\$F\d*")


class SequencePatternError(ValueError):
    """A plate pattern without exactly one frame token."""


@dataclass(frozen=True)
class SequencePattern:
    directory: Path
    head: str
    padding: int
    tail: str

    @classmethod
    def parse(cls, pattern: str | os.PathLike[str]) -> SequencePattern:
        return _parse(str(pattern))  # a pure function of the text: parsed once per process

    @classmethod
    def _parse(cls, pattern: str) -> SequencePattern:
        path = Path(pattern)
        if str(path.parent) != "." and _TOKEN.search(str(path.parent)):
            raise SequencePatternError("the frame token must be in the file name, not a folder")
        found = len(_TOKEN.findall(path.name))
        if found != 1:
            raise SequencePatternError(
                f"{path.name!r} needs exactly one frame token: ####, @@@@, %04d or $F4 (found {found})"
            )
        seq = _fileseq(str(path))
        head = seq.basename()
        tail = seq.extension()
        if not seq.padding():
            raise SequencePatternError(f"{path.name!r}: can't find the frame token; write it like name.####.exr")
        return cls(path.parent, head, max(seq.zfill(), 1), tail)

    def frame_name(self, frame: int) -> str:
        return f"{self.head}{frame:0{self.padding}d}{self.tail}"

    def path_for(self, frame: int) -> Path:
        return self.directory / self.frame_name(frame)

    @property
    def display(self) -> str:
        """The pattern as Nuke writes it: one ``#`` per digit."""
        return str(self.directory / f"{self.head}{'#' * self.padding}{self.tail}")

    def frames_on_disk(self) -> list[int]:
        """Frames whose files exist with exactly this padding (``01001`` is not frame 1001 of
        ``####``; 10000 is, as Nuke writes it). One listing of the folder, no parser."""
        name = re.compile(f"^{re.escape(self.head)}(-?)([0-9]+){re.escape(self.tail)}$")
        frames = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError:
            return []
        for entry in entries:
            match = name.match(entry.name)
            if match is None:
                continue
            sign, digits = match.group(1), match.group(2)
            width = len(sign) + len(digits)  # the sign takes a place of the padding: -001 is frame -1 of ####
            if width == self.padding or (width > self.padding and not digits.startswith("0")):
                frames.append(-int(digits) if sign else int(digits))
        return sorted(frames)


@functools.lru_cache(maxsize=1024)
def _parse(pattern: str) -> SequencePattern:
    return SequencePattern._parse(pattern)


def missing_frames(requested: list[int], present: list[int]) -> list[int]:
    have = set(present)
    return [f for f in requested if f not in have]


def _fileseq(pattern: str) -> fileseq.FileSequence:
    try:
        return fileseq.FileSequence(pattern, pad_style=fileseq.PAD_STYLE_HASH1)
    except fileseq.ParseException as exc:
        raise SequencePatternError(f"can't read {Path(pattern).name!r} as a frame sequence ({exc})") from None
