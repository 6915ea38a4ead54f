"""The marker a version folder carries while it holds no finished delivery: a failed or canceled
job's folder must not pass for a version to a "latest version" tool (or a person in a browser).

The folder stays (its scratch lets an admin's retry resume); the marker says what happened, and
the finalise task of a successful retry removes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workers.io.atomic import write_json_atomic

MARKER = "INCOMPLETE.json"


def mark_incomplete(version_dir: Path, details: dict[str, Any]) -> Path | None:
    """Write the marker; None when the folder is gone (nothing to mark)."""
    if not version_dir.is_dir():
        return None
    exrs = sorted(p.name for p in version_dir.glob("*.exr"))
    path = version_dir / MARKER
    write_json_atomic(path, details | {"frames_on_disk": len(exrs), "note": "not a delivery: do not use"})
    return path


def clear_incomplete(version_dir: Path) -> None:
    (version_dir / MARKER).unlink(missing_ok=True)
