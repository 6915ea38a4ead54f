"""Plates on disk: resolve a pattern and range to files, check them, read frames.

Plates are only ever opened for reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from schemas.frames import format_frame_range
from workers.io.exr import read_exr_header, read_exr_rgb
from workers.io.sequence import SequencePattern

IMAGE_SUFFIXES = {".exr", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dpx"}


class PlateError(ValueError):
    """A plate problem, tied to the job-spec field a person must change."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@dataclass(frozen=True)
class PlateInfo:
    """What the farm needs to know about a plate before it runs."""

    pattern: SequencePattern
    frames: list[int]
    width: int
    height: int
    format: str
    exr_header: dict | None = None

    def path_for(self, frame: int) -> Path:
        return self.pattern.path_for(frame)


def resolve_plate(pattern_text: str, frames: list[int] | None) -> PlateInfo:
    """Resolve the frames, check every file exists and the first and last decode."""
    from workers.io.sequence import SequencePatternError

    try:
        pattern = SequencePattern.parse(pattern_text)
    except SequencePatternError as exc:
        raise PlateError("plate", str(exc)) from None
    suffix = pattern.tail.lower().rsplit(".", 1)[-1]
    if f".{suffix}" not in IMAGE_SUFFIXES:
        raise PlateError("plate", f"'.{suffix}' is not a plate format; use EXR, DPX, TIFF, PNG or JPEG frames")
    on_disk = pattern.frames_on_disk()
    if not on_disk:
        raise PlateError(
            "plate",
            f"no files match {pattern.display}; check the folder and the frame token "
            "(#### is one digit per #, %04d and $F4 are four digits)",
        )
    if frames is None:
        frames = on_disk
    else:
        present = set(on_disk)
        missing = [f for f in frames if f not in present]
        if missing:
            raise PlateError(
                "frames",
                f"{len(missing)} frame(s) missing from the plate: {format_frame_range(missing)}; "
                f"frames on disk: {format_frame_range(on_disk)}",
            )
    width = height = 0
    for frame in {frames[0], frames[-1]}:
        height, width = _probe_size(pattern.path_for(frame))
    header = None
    if suffix == "exr":
        header = read_exr_header(pattern.path_for(frames[0]))
    return PlateInfo(pattern, frames, width, height, suffix, header)


def _probe_size(path: Path) -> tuple[int, int]:
    try:
        if path.suffix.lower() == ".exr":
            lo, hi = read_exr_header(path)["dataWindow"]
            return int(hi[1] - lo[1] + 1), int(hi[0] - lo[0] + 1)
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    except Exception as exc:  # any decoder failure means the same thing to the user
        raise PlateError("plate", f"{path.name} is not a readable image ({exc})") from None
    if image is None:
        raise PlateError("plate", f"{path.name} is not a readable image; re-render or replace it")
    return int(image.shape[0]), int(image.shape[1])


def read_frame_linear(path: Path) -> np.ndarray:
    """A plate frame as float32 RGB; EXR stays scene-linear, other formats are linearised from sRGB."""
    if path.suffix.lower() == ".exr":
        rgb, _ = read_exr_rgb(path)
        return rgb
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED | cv2.IMREAD_ANYDEPTH)
    if image is None:
        raise PlateError("plate", f"{path.name} is not a readable image")
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    image = cv2.cvtColor(image[..., :3], cv2.COLOR_BGR2RGB)
    scale = float(np.iinfo(image.dtype).max) if image.dtype.kind in "ui" else 1.0
    return srgb_to_linear(image.astype(np.float32) / scale)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((np.clip(x, 0, None) + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) scaled so the longest side is at most ``max_side``, aspect kept."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def to_model_frame(linear_rgb: np.ndarray, max_side: int) -> np.ndarray:
    """Downscale in linear light, then encode to display sRGB uint8 for the models."""
    h, w = linear_rgb.shape[:2]
    ww, wh = working_size(w, h, max_side)
    if (ww, wh) != (w, h):
        linear_rgb = cv2.resize(linear_rgb, (ww, wh), interpolation=cv2.INTER_AREA)
    return (linear_to_srgb(linear_rgb) * 255.0 + 0.5).astype(np.uint8)
