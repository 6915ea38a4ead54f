"""OpenEXR reading and atomic writing."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import OpenEXR


def read_exr_header(path: Path) -> dict[str, Any]:
    return OpenEXR.File(str(path), header_only=True).header()


def read_exr_channels(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """All channels (separately named) and the header of a single-part EXR."""
    exr = OpenEXR.File(str(path), separate_channels=True)
    return {name: ch.pixels for name, ch in exr.channels().items()}, exr.header()


def read_exr_rgb(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    """Scene-linear RGB float32 (H, W, 3) of the data window, and the header."""
    channels, header = read_exr_channels(path)
    if all(c in channels for c in "RGB"):
        rgb = np.stack([channels["R"], channels["G"], channels["B"]], axis=-1)
    elif "Y" in channels:
        rgb = np.repeat(channels["Y"][..., None], 3, axis=-1)
    else:
        raise ValueError(f"{path.name} has no R, G, B or Y channels (has {sorted(channels)})")
    return rgb.astype(np.float32, copy=False), header


def to_half(array: np.ndarray) -> np.ndarray:
    """float32 → float16; torch's vectorised conversion is ~6× numpy's where torch is installed."""
    try:
        import torch
    except ImportError:
        return array.astype(np.float16)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).half().numpy()


def write_exr_atomic(path: Path, channels: dict[str, np.ndarray], header: dict[str, Any]) -> None:
    """Write a ZIP scanline EXR to a temporary file beside ``path``, then rename it into place.

    A crash leaves either the old file or the new one, never half a frame.
    """
    header = {
        **header,
        "compression": OpenEXR.ZIP_COMPRESSION,
        "type": OpenEXR.scanlineimage,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        OpenEXR.File(header, channels).write(tmp_name)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
