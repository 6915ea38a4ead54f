"""The one atomic writer: every file the farm writes (mattes, scratch, manifests, review media,
checksum records) appears under its name whole or not at all.

A temporary file is made beside the target (same folder, so the rename is atomic on POSIX),
written, made world-readable and renamed over the target; on any error it is removed. The
temporaries are named ``.<name>.<random><suffix>`` so a killed writer's leftovers can be found
(:func:`remove_partial_writes`) by the one task allowed to write that file.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_SUFFIX = ".tmp"


def temporary_beside(path: Path, suffix: str = TEMP_SUFFIX) -> Path:
    """A new, empty temporary file in ``path``'s folder (created if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    return Path(name)


def commit(temporary: Path, path: Path, mode: int = 0o644) -> None:
    """Rename a finished temporary over ``path`` (mkstemp makes files 0600; mattes are shared)."""
    os.chmod(temporary, mode)
    os.replace(temporary, path)


@contextmanager
def atomic_path(path: Path, suffix: str = TEMP_SUFFIX) -> Iterator[Path]:
    """Yields a temporary path to write; on success it replaces ``path``, on error it is removed.
    ``suffix`` matters to writers that pick a format by extension (OpenCV's JPEG)."""
    temporary = temporary_beside(path, suffix)
    try:
        yield temporary
        commit(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any, *, sort_keys: bool = False, indent: int | None = 2) -> None:
    with atomic_path(path) as temporary, temporary.open("w") as fh:
        json.dump(data, fh, indent=indent, sort_keys=sort_keys, default=str)


def remove_partial_writes(path: Path, suffix: str = TEMP_SUFFIX) -> int:
    """Delete temporaries a killed writer left beside ``path``; returns how many. Only the task
    that owns the file may call this (its attempt token makes it the only writer)."""
    stale = leftover_temporaries(path, suffix)
    for leftover in stale:
        leftover.unlink(missing_ok=True)
    return len(stale)


def leftover_temporaries(path: Path, suffix: str = TEMP_SUFFIX) -> list[Path]:
    """Temporaries a killed writer of ``path`` left behind."""
    return sorted(path.parent.glob(f".{path.name}.*{suffix}"))
