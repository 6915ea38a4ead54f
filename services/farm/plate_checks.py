"""Plates a submission validated, remembered while nothing changed them on disk.

A TD's script that submits one plate many times (a wedge of prompts, a retry loop, a shot's
versions) made every submit list the plate's folder, check each frame for a symlink, read two EXR
headers and build the colour transform again: a sixth of a submission's CPU. A check is kept with
the plate folder's and its first and last frames' ``stat`` (inode, size, mtime): adding, removing,
renaming or relinking a frame changes the folder's mtime, and rewriting the first or last frame
changes its own, so any of these makes the next submit check the plate again. Confinement of the
plate's folder to the read roots is not cached (the caller confines it on every submit). A change
within the filesystem's timestamp granularity of the last check can go unseen; the worker's own
reads still refuse a frame that is gone or unreadable, naming it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from workers.io.plate import PlateInfo

Fingerprint = tuple[tuple[int, int, int, int], ...]


def plate_fingerprint(plate: PlateInfo) -> Fingerprint | None:
    """What must stay the same for a check of ``plate`` to hold; None when a file is gone."""
    paths = (plate.pattern.directory, plate.path_for(plate.frames[0]), plate.path_for(plate.frames[-1]))
    try:
        stats = [os.stat(path) for path in paths]
    except OSError:
        return None
    return tuple((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for st in stats)


class PlateChecks:
    """The last ``size`` plate checks, by the spec fields that decide them."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._kept: OrderedDict[Hashable, tuple[PlateInfo, Fingerprint]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def check(self, key: Hashable, run: Callable[[], PlateInfo]) -> PlateInfo:
        """The plate ``run`` validates, or the one it validated last time for ``key`` while its
        files are unchanged. ``run`` raises for a bad plate; a refusal is never kept."""
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None and plate_fingerprint(kept[0]) == kept[1]:
            with self._lock:
                self.hits += 1
                self._kept.move_to_end(key)
            return kept[0]
        plate = run()
        fingerprint = plate_fingerprint(plate)
        with self._lock:
            self.misses += 1
            if fingerprint is not None and self.size:
                self._kept[key] = (plate, fingerprint)
                self._kept.move_to_end(key)
                while len(self._kept) > self.size:
                    self._kept.popitem(last=False)
        return plate
