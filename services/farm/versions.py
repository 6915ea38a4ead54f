"""The next free ``v###`` folder of a shot's roto output: the one home of that rule.

A version is one past the highest the farm recorded and the highest folder on disk (a folder an
artist or another tool made counts, so "latest version" tools never see the farm go backwards),
and is made with ``mkdir`` so two submissions never share one. Listing a shot's folder costs
what its versions number (6,500 folders: 16 ms a submit), so the highest one seen is kept with
the folder's mtime and link count: while nothing else changed the folder, the next submit does
not list it, and when a few folders were added just above it (the other API processes'
submissions) it checks those by name. The cache only picks where to start; ``mkdir`` still
decides."""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from pathlib import Path

VERSION_DIR = re.compile(r"^v(\d{3,})$")
CACHED_FOLDERS = 1024
PROBED_FOLDERS = 8  # folders added since the last look that are checked one by one, not listed


class VersionFolders:
    def __init__(self) -> None:
        # folder → (mtime_ns, link count, highest version folder in it)
        self._seen: OrderedDict[Path, tuple[int, int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def _highest_on_disk(self, roto_dir: Path) -> tuple[int, int]:
        """The highest version folder, and the folder's link count when it was read."""
        st = roto_dir.stat()
        with self._lock:
            cached = self._seen.get(roto_dir)
        if cached is not None:
            mtime, links, highest = cached
            if (mtime, links) == (st.st_mtime_ns, st.st_nlink):
                return highest, links
            # Another API process (or the farm elsewhere) added folders: a directory's link count
            # grows by one per subfolder, so k new links with v(h+1)..v(h+k) all present means
            # those are the new ones. Anything else (a removal, another name, a gap) lists again.
            added = st.st_nlink - links
            if 0 < added <= PROBED_FOLDERS and all(
                (roto_dir / f"v{highest + i:03d}").is_dir() for i in range(1, added + 1)
            ):
                self._remember(roto_dir, st.st_mtime_ns, st.st_nlink, highest + added)
                return highest + added, st.st_nlink
        with os.scandir(roto_dir) as entries:
            highest = max((int(m.group(1)) for e in entries if (m := VERSION_DIR.match(e.name))), default=0)
        self._remember(roto_dir, st.st_mtime_ns, st.st_nlink, highest)
        return highest, st.st_nlink

    def make(self, roto_dir: Path, recorded: int) -> tuple[int, Path]:
        """Create and return the next free version folder above ``recorded`` and what is on
        disk. OSError other than "exists" is the caller's to report."""
        highest, links = self._highest_on_disk(roto_dir)
        version = max(recorded, highest) + 1
        while True:
            folder = roto_dir / f"v{version:03d}"
            try:
                folder.mkdir()
            except FileExistsError:  # another submission (or process) took it a moment ago
                version += 1
                continue
            after = roto_dir.stat()
            # Only our folder was added (a directory's link count is 2 + its subfolders): what is
            # on disk is known without listing it again. Elsewhere (another process made one too,
            # or a filesystem that doesn't count subfolders) the next submit lists the folder.
            if after.st_nlink == links + 1:
                self._remember(roto_dir, after.st_mtime_ns, after.st_nlink, max(version, highest))
            return version, folder

    def _remember(self, roto_dir: Path, mtime: int, links: int, highest: int) -> None:
        with self._lock:
            self._seen[roto_dir] = (mtime, links, highest)
            self._seen.move_to_end(roto_dir)
            while len(self._seen) > CACHED_FOLDERS:
                self._seen.popitem(last=False)
