"""The plate as the models see it: frames decoded lazily by position, a few kept in memory."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from workers.io.plate import PlateInfo, read_frame_linear, to_model_frame
from workers.models.interfaces import ModelFrame


class FrameSource:
    """Working-resolution frames of a plate by position; holds at most ``keep`` decoded frames,
    so memory does not grow with shot length."""

    def __init__(self, plate: PlateInfo, max_side: int, keep: int = 24) -> None:
        self.plate, self.max_side, self.keep = plate, max_side, keep
        self._frames: OrderedDict[int, ModelFrame] = OrderedDict()
        self.decoded = 0

    def __len__(self) -> int:
        return len(self.plate.frames)

    def number(self, pos: int) -> int:
        return self.plate.frames[pos]

    def at(self, pos: int) -> ModelFrame:
        if pos in self._frames:
            self._frames.move_to_end(pos)
            return self._frames[pos]
        path = self.plate.path_for(self.plate.frames[pos])
        frame = ModelFrame(self.plate.frames[pos], to_model_frame(read_frame_linear(path), self.max_side), path)
        self.decoded += 1
        self._frames[pos] = frame
        while len(self._frames) > self.keep:
            self._frames.popitem(last=False)
        return frame

    def window(self, positions: Sequence[int]) -> WindowFrames:
        return WindowFrames(self, list(positions))


class WindowFrames(Sequence[ModelFrame]):
    """A tracking window's frames, decoded only when a model asks for one."""

    def __init__(self, source: FrameSource, positions: list[int]) -> None:
        self.source, self.positions = source, positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int | slice) -> ModelFrame | list[ModelFrame]:  # type: ignore[override]
        if isinstance(index, slice):
            return [self.source.at(p) for p in self.positions[index]]
        return self.source.at(self.positions[index])
