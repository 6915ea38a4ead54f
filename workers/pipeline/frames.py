"""The plate as the models see it: frames decoded lazily by position, a few kept in memory,
the next few decoded ahead on a small thread pool so the GPU does not wait on disk."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import overload

import numpy as np

from workers.io.plate import PlateDecoder
from workers.models.interfaces import ModelFrame


class FrameSource:
    """Working-resolution frames of a plate by position; holds at most ``keep`` decoded frames
    (plus ``ahead`` in flight), so memory does not grow with shot length.

    Decoding (EXR/DPX read, colour, resize) releases the GIL, so ``threads`` decoders overlap
    with model calls. Prefetch follows the direction of access, since tracking also runs backward.
    """

    def __init__(
        self,
        decoder: PlateDecoder,
        keep: int = 24,
        threads: int = 2,
        ahead: int = 4,
        within: Collection[int] | None = None,
    ) -> None:
        """``within``: the positions this task will read (default all); nothing outside them is
        decoded ahead, so a task over a chunk of frames decodes that chunk and no more."""
        self.decoder, self.keep, self.ahead = decoder, keep, ahead if threads else 0
        self.within = frozenset(within) if within is not None else None
        self.frames = decoder.plate.frames
        self._cache: OrderedDict[int, ModelFrame] = OrderedDict()
        self._pending: dict[int, Future[np.ndarray]] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="plate-decode") if threads else None
        self._last = -1
        self.decoded = 0
        self.wait_s = 0.0  # time the caller spent blocked on decoding

    def __len__(self) -> int:
        return len(self.frames)

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending.clear()

    def number(self, pos: int) -> int:
        return self.frames[pos]

    def at(self, pos: int) -> ModelFrame:
        step = -1 if pos < self._last else 1
        self._last = pos
        frame = self._cache.get(pos)
        if frame is not None:
            self._cache.move_to_end(pos)
        else:
            started = time.monotonic()
            future = self._pending.pop(pos, None)
            image = future.result() if future is not None else self._decode(pos)
            self.wait_s += time.monotonic() - started
            frame = self._keep(pos, image)
        self._prefetch(pos, step)
        return frame

    def _keep(self, pos: int, image: np.ndarray) -> ModelFrame:
        frame = ModelFrame(self.frames[pos], image, self.decoder.plate.path_for(self.frames[pos]))
        self._cache[pos] = frame
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return frame

    def _decode(self, pos: int) -> np.ndarray:
        self.decoded += 1
        return self.decoder.model_frame(self.frames[pos])

    def _prefetch(self, pos: int, step: int) -> None:
        if self._pool is None:
            return
        wanted = [
            p
            for p in range(pos + step, pos + step * (self.ahead + 1), step)
            if 0 <= p < len(self.frames) and (self.within is None or p in self.within)
        ]
        for stale in [p for p in self._pending if p not in wanted]:
            future = self._pending[stale]
            if future.done():
                # Decoded already: keep it (a stage reading every 5th frame left four behind each
                # time, and dropping them made the track stage decode them again: 5.4 decodes a frame).
                del self._pending[stale]
                if future.exception() is None:
                    self._keep(stale, future.result())
            elif future.cancel():  # a running decode finishes and is dropped later
                del self._pending[stale]
        for p in wanted:
            if p not in self._cache and p not in self._pending:
                self._pending[p] = self._pool.submit(self._decode, p)

    def window(self, positions: Sequence[int]) -> WindowFrames:
        return WindowFrames(self, list(positions))


class WindowFrames(Sequence[ModelFrame]):
    """A tracking window's frames, decoded only when a model asks for one."""

    def __init__(self, source: FrameSource, positions: list[int]) -> None:
        self.source, self.positions = source, positions

    def __len__(self) -> int:
        return len(self.positions)

    @overload
    def __getitem__(self, index: int) -> ModelFrame: ...

    @overload
    def __getitem__(self, index: slice) -> list[ModelFrame]: ...

    def __getitem__(self, index: int | slice) -> ModelFrame | list[ModelFrame]:
        if isinstance(index, slice):
            return [self.source.at(p) for p in self.positions[index]]
        return self.source.at(self.positions[index])
