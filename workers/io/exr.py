"""OpenEXR reading and atomic, convention-checked writing of single-part scanline files."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import OpenEXR

from workers.io.atomic import atomic_path

COMPRESSIONS = {
    "none": OpenEXR.NO_COMPRESSION,
    "rle": OpenEXR.RLE_COMPRESSION,
    "zips": OpenEXR.ZIPS_COMPRESSION,
    "zip": OpenEXR.ZIP_COMPRESSION,
    "piz": OpenEXR.PIZ_COMPRESSION,
    "pxr24": OpenEXR.PXR24_COMPRESSION,
    "b44": OpenEXR.B44_COMPRESSION,
    "b44a": OpenEXR.B44A_COMPRESSION,
    "dwaa": OpenEXR.DWAA_COMPRESSION,
    "dwab": OpenEXR.DWAB_COMPRESSION,
    "htj2k32": OpenEXR.HTJ2K32_COMPRESSION,
    "htj2k256": OpenEXR.HTJ2K256_COMPRESSION,
    "zstd": OpenEXR.ZSTD_COMPRESSION,
}
# Lossy ones corrupt Cryptomatte ids (PXR24 rounds float to 24 bits, DWA is lossy for .R/.B);
# HTJ2K and ZSTD are lossless but readers built on OpenEXR < 3.4 can't open them.
NOT_FOR_CRYPTOMATTE = {"pxr24", "b44", "b44a", "dwaa", "dwab", "htj2k32", "htj2k256", "zstd"}


class ExrWriteError(ValueError):
    """A write that would break the delivery conventions; the message says which and why."""


def set_exr_threads(threads: int) -> None:
    """OpenEXR compresses line blocks in parallel; its Python binding starts with none."""
    OpenEXR.set_global_thread_count(threads or os.cpu_count() or 1)


def read_exr_header(path: Path) -> dict[str, Any]:
    return OpenEXR.File(str(path), header_only=True).header()


def read_exr_channels(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All channels (separately named) and the header of a single-part EXR."""
    exr = OpenEXR.File(str(path), separate_channels=True)
    return {name: ch.pixels for name, ch in exr.channels().items()}, exr.header()


def to_half(array: np.ndarray) -> np.ndarray:
    """float32 → float16; torch's vectorised conversion is ~6× numpy's where torch is installed."""
    try:
        import torch
    except ImportError:
        return array.astype(np.float16)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).half().numpy()


def capture_date(now: datetime | None = None) -> dict[str, Any]:
    """``capDate`` (local time, EXR's "YYYY:MM:DD hh:mm:ss") and ``utcOffset`` (seconds, UTC − local)."""
    local = (now or datetime.now()).astimezone()
    offset = local.utcoffset()
    return {
        "capDate": local.strftime("%Y:%m:%d %H:%M:%S"),
        # The standard defines utcOffset as UTC minus local time.
        "utcOffset": float(-offset.total_seconds()) if offset is not None else 0.0,
    }


def write_exr_atomic(
    path: Path, channels: dict[str, np.ndarray], header: dict[str, Any], compression: str = "zip"
) -> None:
    """Write a single-part scanline EXR to a temporary file beside ``path``, then rename it.

    A crash leaves either the old file or the new one, never half a frame.
    """
    compression = compression.lower()
    if compression not in COMPRESSIONS:
        raise ExrWriteError(f"compression {compression!r} is unknown; use one of {sorted(COMPRESSIONS)}")
    has_crypto = any(name.startswith("Crypto") for name in channels) or any(
        key.startswith("cryptomatte/") for key in header
    )
    if has_crypto and compression in NOT_FOR_CRYPTOMATTE:
        raise ExrWriteError(
            f"compression {compression!r} can't carry Cryptomatte channels (lossy, or unreadable by older "
            "OpenEXR); use zip"
        )
    header = {
        **header,
        "compression": COMPRESSIONS[compression],
        "type": OpenEXR.scanlineimage,
        "lineOrder": OpenEXR.INCREASING_Y,
        "screenWindowCenter": np.zeros(2, np.float32),
        "screenWindowWidth": 1.0,
    }
    header.pop("name", None)  # single-part files carry no part name
    # OpenEXR.File replaces the dict's values with Channel objects; give it a copy.
    with atomic_path(path) as temporary, OpenEXR.File(header, dict(channels)) as exr:
        exr.write(str(temporary))
