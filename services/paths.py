"""Path confinement: plates only from read roots, outputs only under write roots.

Paths must be absolute and free of ``..``; the real path (symlinks followed) must stay
inside a root, so a link inside a root that points outside it is refused too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from services.errors import PathNotAllowed


def _within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def confine(raw: str, roots: Sequence[Path], field: str, kind: str) -> Path:
    """The real path of ``raw`` if it is allowed; PathNotAllowed naming ``field`` if not."""
    roots_text = ", ".join(str(r) for r in roots) or "(none configured)"
    if not raw.startswith("/"):
        raise PathNotAllowed.on_field(field, f"must be an absolute path under the {kind} roots: {roots_text}")
    if ".." in PurePosixPath(raw).parts:
        raise PathNotAllowed.on_field(field, "must not contain '..'; give the full path from its root")
    real = Path(os.path.realpath(raw))
    if not _within(real, roots):
        via = f" (it resolves to {real} through a symlink)" if real != Path(os.path.normpath(raw)) else ""
        raise PathNotAllowed.on_field(field, f"{raw} is outside the {kind} roots{via}; allowed: {roots_text}")
    return real


def confine_existing(paths: Sequence[Path], roots: Sequence[Path], field: str, kind: str) -> None:
    """Refuse any file whose real path leaves the roots (a symlinked frame, say). Each folder is
    resolved once; a file is resolved only if it is a link (a plate of 10,000 frames costs 10,000
    ``lstat`` calls, not 10,000 walks of the whole path)."""
    folders: dict[Path, bool] = {}
    for path in paths:
        if path.parent not in folders:
            folders[path.parent] = _within(Path(os.path.realpath(path.parent)), roots)
        if folders[path.parent] and not os.path.islink(path):
            continue
        real = Path(os.path.realpath(path))
        if not _within(real, roots):
            raise PathNotAllowed.on_field(
                field, f"{path.name} links to {real}, outside the {kind} roots; copy the file in instead"
            )


def kept_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in ``path`` (mode 0600), made by ``make`` the first time: the embedded
    farm's token, the farm's webhook key."""
    if path.exists() and path.read_text().strip():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret
