"""Plates on disk: resolve a pattern and range to files, check them, turn frames into model input.

Plates are only ever opened for reading.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from farm_config.settings import Settings
from schemas.frames import format_frame_range
from workers.io.colour import ColourConverter, ColourError, default_colourspace
from workers.io.images import EXR_SUFFIXES, OIIO_SUFFIXES, Geometry, ImageInfo, ImageReadError, probe_image, read_image
from workers.io.sequence import SequencePattern, SequencePatternError, missing_frames

IMAGE_SUFFIXES = EXR_SUFFIXES | OIIO_SUFFIXES


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
    frames: list[int]  # the frames that will be read and written, in order
    info: ImageInfo  # header facts of the first frame

    @property
    def geometry(self) -> Geometry:
        return self.info.geometry

    @property
    def width(self) -> int:
        return self.info.geometry.width

    @property
    def height(self) -> int:
        return self.info.geometry.height

    @property
    def format(self) -> str:
        return self.info.format

    def path_for(self, frame: int) -> Path:
        return self.pattern.path_for(frame)


def resolve_plate(
    pattern_text: str,
    frames: list[int] | None,
    *,
    skip_missing: bool = False,
    part: str | None = None,
    before_open: Callable[[list[Path]], None] | None = None,
) -> PlateInfo:
    """Resolve the frames, check the files exist and the first and last decode alike.
    ``before_open`` sees every frame file on disk before any is opened (the API's confinement:
    a frame symlinked out of the read roots is refused before a byte of it is read)."""
    try:
        pattern = SequencePattern.parse(pattern_text)
    except SequencePatternError as exc:
        raise PlateError("plate", str(exc)) from None
    suffix = "." + pattern.tail.rsplit(".", 1)[-1].lower() if "." in pattern.tail else ""
    if suffix not in IMAGE_SUFFIXES:
        raise PlateError("plate", f"'{suffix or pattern.tail}' is not a plate format; use EXR, DPX, TIFF, PNG or JPEG")
    on_disk = pattern.frames_on_disk()
    if not on_disk:
        raise PlateError(
            "plate",
            f"no files match {pattern.display}; check the folder and the frame token "
            "(#### is one digit per #, %04d and $F4 are four digits)",
        )
    if before_open is not None:
        before_open([pattern.path_for(f) for f in on_disk])
    # No range given: the span on disk, so a hole inside the plate is noticed, not silently jumped.
    requested = frames if frames is not None else list(range(on_disk[0], on_disk[-1] + 1))
    absent = missing_frames(requested, on_disk)
    if absent and not skip_missing:
        raise PlateError(
            "frames",
            f"{len(absent)} frame(s) missing from the plate: {format_frame_range(absent)}; "
            f"frames on disk: {format_frame_range(on_disk)}. Render them, narrow the range, "
            "or set on_missing_frames to 'skip'",
        )
    gone = set(absent)
    frames = [f for f in requested if f not in gone]
    if not frames:
        raise PlateError("frames", f"none of the requested frames exist; frames on disk: {format_frame_range(on_disk)}")
    try:
        first = probe_image(pattern.path_for(frames[0]), part)
        last = probe_image(pattern.path_for(frames[-1]), part) if len(frames) > 1 else first
    except ImageReadError as exc:
        field_name = "plate_part" if part and "part" in str(exc) else "plate"
        raise PlateError(field_name, str(exc)) from None
    if last.geometry != first.geometry:
        raise PlateError(
            "plate",
            f"frames {frames[0]} and {frames[-1]} differ in size or windows "
            f"({first.geometry.data_window} vs {last.geometry.data_window}); a plate must keep one format",
        )
    return PlateInfo(pattern, frames, first)


def plate_colourspace(plate: PlateInfo, requested: str | None, exr_default: str) -> str:
    """The job's colour space, or the plate's default by header and format."""
    return requested or default_colourspace(plate.format, plate.info.colour_hint, exr_default)


def working_size(width: int, height: int, max_side: int, pixel_aspect: float = 1.0) -> tuple[int, int]:
    """(w, h) for inference: de-squeezed by the pixel aspect, longest side at most ``max_side``."""
    wide = width * pixel_aspect
    scale = min(1.0, max_side / max(wide, height))
    return max(1, round(wide * scale)), max(1, round(height * scale))


@dataclass
class PlateDecoder:
    """Plate frame → display sRGB uint8 at working resolution: decode, to light, resize, view."""

    plate: PlateInfo
    colour: ColourConverter
    max_side: int

    @classmethod
    def open(
        cls,
        plate: PlateInfo,
        max_side: int,
        colourspace: str,
        *,
        ocio_config: str,
        display: str,
        view: str,
        use_ocio: bool = True,
    ) -> PlateDecoder:
        try:
            colour = ColourConverter(colourspace, ocio_config, display, view, use_ocio)
        except ColourError as exc:
            raise PlateError("colourspace", str(exc)) from None
        return cls(plate, colour, max_side)

    @classmethod
    def configured(cls, plate: PlateInfo, max_side: int, colourspace: str | None, settings: Settings) -> PlateDecoder:
        """A decoder with the farm's OCIO settings; ``colourspace`` None means the plate's default."""
        return cls.open(
            plate,
            max_side,
            plate_colourspace(plate, colourspace, settings.exr_colourspace),
            ocio_config=settings.ocio_config,
            display=settings.ocio_display,
            view=settings.ocio_view,
            use_ocio=settings.use_ocio,
        )

    @property
    def size(self) -> tuple[int, int]:
        geo = self.plate.geometry
        return working_size(geo.width, geo.height, self.max_side, geo.pixel_aspect)

    def linear(self, frame: int) -> np.ndarray:
        try:
            pixels = read_image(self.plate.path_for(frame), self.plate.info.part)
        except ImageReadError as exc:
            raise PlateError("plate", str(exc)) from None
        if pixels.shape[:2] != (self.plate.height, self.plate.width):
            raise PlateError(
                "plate",
                f"frame {frame} is {pixels.shape[1]}x{pixels.shape[0]}, the plate is "
                f"{self.plate.width}x{self.plate.height}; a plate must keep one format",
            )
        return self.colour.to_linear(pixels)

    def model_frame(self, frame: int, size: tuple[int, int] | None = None) -> np.ndarray:
        return to_display_uint8(self.linear(frame), size or self.size, self.colour)


def resize_linear(linear: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resample in light; area filter going down, bilinear going up, pixel centres aligned."""
    h, w = linear.shape[:2]
    if (w, h) == size:
        return linear
    down = size[0] <= w and size[1] <= h
    return cv2.resize(linear, size, interpolation=cv2.INTER_AREA if down else cv2.INTER_LINEAR)


def to_display_uint8(linear: np.ndarray, size: tuple[int, int], colour: ColourConverter) -> np.ndarray:
    """Downscale in linear light, then the view transform, clip and quantise."""
    small = np.ascontiguousarray(resize_linear(linear, size), dtype=np.float32)
    return (np.clip(colour.to_display(small), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
