"""Plates in every format the farm reads, written for tests (EXR via OpenEXR, others via OIIO)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import OpenEXR
import OpenImageIO as oiio

from workers.io.exr import read_exr_channels


def exr_timecode(frame: int, fps: int = 24) -> Any:
    tc = OpenEXR.TimeCode()
    tc.hours, rest = divmod(frame, 3600 * fps)
    tc.minutes, rest = divmod(rest, 60 * fps)
    tc.seconds, tc.frame = divmod(rest, fps)
    return tc


def write_exr_plate(
    path: Path,
    rgb: np.ndarray,
    *,
    data_origin: tuple[int, int] = (0, 0),
    display: tuple[int, int] | None = None,
    pixel_aspect: float = 1.0,
    compression: Any = OpenEXR.ZIP_COMPRESSION,
    tiled: bool = False,
    extra: dict[str, Any] | None = None,
    other_parts: bool = False,
    part_name: str = "beauty",
) -> None:
    """An RGB half EXR whose data window starts at ``data_origin`` (negative = overscan)."""
    h, w = rgb.shape[:2]
    x0, y0 = data_origin
    dw, dh = display or (w, h)
    header: dict[str, Any] = {
        "compression": compression,
        "type": OpenEXR.tiledimage if tiled else OpenEXR.scanlineimage,
        "dataWindow": ((x0, y0), (x0 + w - 1, y0 + h - 1)),
        "displayWindow": ((0, 0), (dw - 1, dh - 1)),
        "pixelAspectRatio": float(pixel_aspect),
        **(extra or {}),
    }
    if tiled:
        tiles = OpenEXR.TileDescription()
        tiles.xSize = tiles.ySize = 32
        tiles.mode = OpenEXR.ONE_LEVEL
        header["tiles"] = tiles
    channels = {c: rgb[..., i].astype(np.float16) for i, c in enumerate("RGB")}
    path.parent.mkdir(parents=True, exist_ok=True)
    if other_parts:
        depth = {**header, "type": OpenEXR.scanlineimage}
        depth.pop("tiles", None)
        parts = [
            OpenEXR.Part(depth, {"Z": np.ones((h, w), np.float32)}, "depth"),
            OpenEXR.Part(header, channels, part_name),
        ]
        OpenEXR.File(parts).write(str(path))
    else:
        OpenEXR.File(header, channels).write(str(path))


def write_oiio_plate(
    path: Path, rgb: np.ndarray, *, fmt: str, bits: int | None = None, attrs: dict | None = None
) -> None:
    """DPX/TIFF/PNG/JPEG from float RGB in [0, 1] (already in the file's encoding)."""
    h, w = rgb.shape[:2]
    pixel = {"uint8": oiio.UINT8, "uint16": oiio.UINT16}[fmt]
    spec = oiio.ImageSpec(w, h, 3, pixel)
    if bits:
        spec.attribute("oiio:BitsPerSample", bits)
    for key, value in (attrs or {}).items():
        spec.attribute(key, *value) if isinstance(value, tuple) else spec.attribute(key, value)  # (type, value)
    out = oiio.ImageOutput.create(str(path))
    assert out is not None, oiio.geterror()
    path.parent.mkdir(parents=True, exist_ok=True)
    assert out.open(str(path), spec), out.geterror()
    scale = 255.0 if fmt == "uint8" else 65535.0
    out.write_image(np.round(np.clip(rgb, 0, 1) * scale).astype(np.uint8 if fmt == "uint8" else np.uint16))
    out.close()


def restamp_exr(
    path: Path,
    *,
    data_origin: tuple[int, int] | None = None,
    display: tuple[int, int] | None = None,
    pixel_aspect: float | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    """Rewrite an EXR in place with new windows/aspect/attributes, pixels unchanged."""
    channels, header = read_exr_channels(path)
    h, w = next(iter(channels.values())).shape
    keep = {k: v for k, v in header.items() if k not in ("channels", "type", "tiles")}
    if data_origin is not None:
        x0, y0 = data_origin
        keep["dataWindow"] = ((x0, y0), (x0 + w - 1, y0 + h - 1))
    if display is not None:
        keep["displayWindow"] = ((0, 0), (display[0] - 1, display[1] - 1))
    if pixel_aspect is not None:
        keep["pixelAspectRatio"] = pixel_aspect
    keep.update(extra or {})
    keep["type"] = OpenEXR.scanlineimage
    OpenEXR.File(keep, dict(channels)).write(str(path))


NTSC_FILM = Fraction(24000, 1001)
