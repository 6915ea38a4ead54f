"""Frame-sequence patterns with Nuke semantics, on top of ``fileseq``.

``####`` and ``@@@@`` are one digit per character (fileseq's ``PAD_STYLE_HASH1``; its default
reads ``#`` as four digits), ``%04d`` and ``$F4`` are printf/Houdini padding. Nothing here opens
an image.
"""

from __future__ import annotations

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
        """Frames whose files exist with exactly this padding (``01001`` is not frame 1001 of ``####``)."""
        try:
            found = fileseq.findSequenceOnDisk(
                str(self.directory / f"{self.head}{'#' * self.padding}{self.tail}"),
                pad_style=fileseq.PAD_STYLE_HASH1,
                strictPadding=True,
            )
        except (fileseq.FileSeqException, OSError):
            return []
        frames = found.frameSet()
        return sorted(int(frame) for frame in frames) if frames is not None else []


def missing_frames(requested: list[int], present: list[int]) -> list[int]:
    have = set(present)
    return [f for f in requested if f not in have]


def _fileseq(pattern: str) -> fileseq.FileSequence:
    try:
        return fileseq.FileSequence(pattern, pad_style=fileseq.PAD_STYLE_HASH1)
    except fileseq.ParseException as exc:
        raise SequencePatternError(f"can't read {Path(pattern).name!r} as a frame sequence ({exc})") from None
