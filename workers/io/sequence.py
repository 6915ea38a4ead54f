"""Frame-sequence patterns with Nuke semantics (one digit per ``#`` or ``@``, ``%04d``, ``$F4``).

Pure string logic plus a directory listing; nothing here opens an image.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_TOKEN = re.compile(r"(?P<hash>[#@]+)|%(?P<printf>0?\d*)d|\$F(?P<houdini>\d*)")


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
        tokens = list(_TOKEN.finditer(path.name))
        if str(path.parent) != "." and _TOKEN.search(str(path.parent)):
            raise SequencePatternError("the frame token must be in the file name, not a folder")
        if len(tokens) != 1:
            raise SequencePatternError(
                f"{path.name!r} needs exactly one frame token: ####, %04d or $F4 (found {len(tokens)})"
            )
        token = tokens[0]
        if token.group("hash"):
            padding = len(token.group("hash"))
        elif token.group("printf") is not None:
            padding = int(token.group("printf") or 1)
        else:
            padding = int(token.group("houdini") or 1)
        return cls(path.parent, path.name[: token.start()], max(padding, 1), path.name[token.end() :])

    def frame_name(self, frame: int) -> str:
        return f"{self.head}{frame:0{self.padding}d}{self.tail}"

    def path_for(self, frame: int) -> Path:
        return self.directory / self.frame_name(frame)

    @property
    def display(self) -> str:
        return str(self.directory / f"{self.head}{'#' * self.padding}{self.tail}")

    def frames_on_disk(self) -> list[int]:
        """Frames whose files exist, read from one directory listing."""
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        matcher = re.compile(rf"^{re.escape(self.head)}(-?\d+){re.escape(self.tail)}$")
        frames = []
        for name in names:
            match = matcher.match(name)
            # Only the canonical spelling counts, so 01001 and 1001 are not both frame 1001.
            if match and self.frame_name(int(match.group(1))) == name:
                frames.append(int(match.group(1)))
        return sorted(frames)
