"""Decoding plate frames: EXR with OpenEXR, DPX/TIFF/PNG/JPEG with OpenImageIO.

Readers return the file's own encoding as float32 RGB of the data window (log stays log, sRGB
stays sRGB); turning that into light is ``workers.io.colour``'s job. Nothing here writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import OpenEXR

Window = tuple[tuple[int, int], tuple[int, int]]  # ((x0, y0), (x1, y1)), inclusive like EXR

EXR_SUFFIXES = {".exr"}
OIIO_SUFFIXES = {".dpx", ".tif", ".tiff", ".png", ".jpg", ".jpeg"}


class ImageReadError(ValueError):
    """A frame that can't be decoded; the message names the file and what to do."""


@dataclass(frozen=True)
class Geometry:
    """Where a frame's pixels sit: EXR's display and data windows plus the pixel aspect."""

    display_window: Window
    data_window: Window
    pixel_aspect: float = 1.0

    @classmethod
    def full(cls, width: int, height: int, pixel_aspect: float = 1.0) -> Geometry:
        window = ((0, 0), (width - 1, height - 1))
        return cls(window, window, pixel_aspect)

    @property
    def width(self) -> int:
        """Data-window width: the pixels that are stored and that mattes are written for."""
        return self.data_window[1][0] - self.data_window[0][0] + 1

    @property
    def height(self) -> int:
        return self.data_window[1][1] - self.data_window[0][1] + 1

    @property
    def display_size(self) -> tuple[int, int]:
        (x0, y0), (x1, y1) = self.display_window
        return x1 - x0 + 1, y1 - y0 + 1

    def exr_header(self) -> dict[str, Any]:
        return {
            "displayWindow": self.display_window,
            "dataWindow": self.data_window,
            "pixelAspectRatio": float(self.pixel_aspect),
        }


@dataclass(frozen=True)
class ImageInfo:
    """What a header says about a frame, read without decoding pixels."""

    format: str  # exr, dpx, tiff, png, jpeg
    geometry: Geometry
    channels: tuple[str, ...]
    bits: int  # integer bits per sample as stored (10 for 10-bit DPX); 0 for EXR's floats
    part: str | None = None  # the EXR part read, when the file has several
    colour_hint: str | None = None  # what the file says about its encoding (chromaticities, DPX transfer)
    fps: Fraction | None = None
    timecode: Any = None  # OpenEXR.TimeCode, copied to the mattes untouched


def probe_image(path: Path, part: str | None = None) -> ImageInfo:
    suffix = path.suffix.lower()
    try:
        if suffix in EXR_SUFFIXES:
            return _probe_exr(path, part)
        if suffix in OIIO_SUFFIXES:
            return _probe_oiio(path)
    except ImageReadError:
        raise
    except Exception as exc:  # every decoder failure means the same thing to the user
        raise ImageReadError(f"{path.name} is not a readable image ({exc}); re-render or replace it") from None
    raise ImageReadError(f"'{suffix}' is not a plate format; use EXR, DPX, TIFF, PNG or JPEG frames")


def read_image(path: Path, part: str | None = None) -> np.ndarray:
    """The frame's data window as float32 (H, W, 3) in the file's own encoding."""
    suffix = path.suffix.lower()
    try:
        if suffix in EXR_SUFFIXES:
            return _read_exr(path, part)
        return _read_oiio(path)
    except ImageReadError:
        raise
    except Exception as exc:
        raise ImageReadError(f"{path.name} can't be decoded ({exc}); re-render or replace it") from None


# --- EXR ------------------------------------------------------------------------------------


def _exr_part_index(headers: list[dict[str, Any]], channel_names: list[list[str]], part: str | None, name: str) -> int:
    if part is not None:
        names = [str(h.get("name", "")) for h in headers]
        if part not in names:
            raise ImageReadError(f"{name} has no part {part!r}; its parts are {names}. Set plate_part to one of them")
        return names.index(part)
    for index, channels in enumerate(channel_names):
        if _rgb_names(channels):
            return index
    raise ImageReadError(f"{name} has no part with R, G, B (or Y) channels; its channels are {channel_names}")


def _rgb_names(channels: list[str] | tuple[str, ...]) -> tuple[str, str, str] | None:
    """The R/G/B channel names of the unlayered (or only) RGB layer, or Y for luminance."""
    have = set(channels)
    if {"R", "G", "B"} <= have:
        return ("R", "G", "B")
    layered = sorted({c.rsplit(".", 1)[0] for c in channels if "." in c})
    for layer in layered:
        names = (f"{layer}.R", f"{layer}.G", f"{layer}.B")
        if set(names) <= have:
            return names
    if "Y" in have:
        return ("Y", "Y", "Y")
    return None


def _probe_exr(path: Path, part: str | None) -> ImageInfo:
    exr = OpenEXR.File(str(path), header_only=True)
    headers = [p.header for p in exr.parts]
    names = [[c.name for c in h.get("channels", [])] for h in headers]
    index = _exr_part_index(headers, names, part, path.name)
    header = headers[index]
    geometry = Geometry(
        display_window=_window(header["displayWindow"]),
        data_window=_window(header["dataWindow"]),
        pixel_aspect=float(header.get("pixelAspectRatio", 1.0)),
    )
    return ImageInfo(
        format="exr",
        geometry=geometry,
        channels=tuple(names[index]),
        bits=0,  # floating point; a header-only read can't tell half from float
        part=str(header.get("name")) if len(headers) > 1 else None,
        colour_hint=_exr_colour_hint(header),
        fps=header.get("framesPerSecond"),
        timecode=header.get("timeCode"),
    )


def _read_exr(path: Path, part: str | None) -> np.ndarray:
    exr = OpenEXR.File(str(path), separate_channels=True)
    parts = exr.parts
    headers = [p.header for p in parts]
    names = [list(p.channels.keys()) for p in parts]
    index = _exr_part_index(headers, names, part, path.name)
    channels = parts[index].channels
    rgb = _rgb_names(names[index])
    assert rgb is not None  # _exr_part_index only returns parts with RGB or Y
    planes = [channels[c].pixels for c in rgb]
    return np.stack(planes, axis=-1).astype(np.float32, copy=False)


def _window(box: Any) -> Window:
    (x0, y0), (x1, y1) = box
    return (int(x0), int(y0)), (int(x1), int(y1))


_AP1_RED = (0.713, 0.293)
_REC709_RED = (0.64, 0.33)
_AP0_RED = (0.7347, 0.2653)


def _exr_colour_hint(header: dict[str, Any]) -> str | None:
    """ACES containers and chromaticities say which linear space the plate is in."""
    if header.get("acesImageContainerFlag") == 1:
        return "ACES2065-1"
    chroma = header.get("chromaticities")
    if chroma is None:
        return None
    red = (float(chroma[0]), float(chroma[1]))
    for known, name in ((_AP1_RED, "ACEScg"), (_REC709_RED, "Linear Rec.709 (sRGB)"), (_AP0_RED, "ACES2065-1")):
        if abs(red[0] - known[0]) < 1e-3 and abs(red[1] - known[1]) < 1e-3:
            return name
    return None


# --- DPX, TIFF, PNG, JPEG through OpenImageIO ------------------------------------------------


def _oiio_open(path: Path) -> Any:
    import OpenImageIO as oiio

    image = oiio.ImageInput.open(str(path))
    if image is None:
        raise ImageReadError(f"{path.name} is not a readable image ({oiio.geterror()}); re-render or replace it")
    return image


def _probe_oiio(path: Path) -> ImageInfo:
    image = _oiio_open(path)
    try:
        spec = image.spec()
        x0, y0 = spec.x, spec.y
        data = ((x0, y0), (x0 + spec.width - 1, y0 + spec.height - 1))
        full_w, full_h = spec.full_width or spec.width, spec.full_height or spec.height
        display = ((spec.full_x, spec.full_y), (spec.full_x + full_w - 1, spec.full_y + full_h - 1))
        aspect = spec.get_float_attribute("PixelAspectRatio", 1.0) or 1.0
        bits = spec.get_int_attribute("oiio:BitsPerSample", 0) or spec.format.size() * 8
        transfer = spec.get_string_attribute("dpx:Transfer", "")
        colour = spec.get_string_attribute("oiio:ColorSpace", "")
        fmt = {"tif": "tiff", "jpg": "jpeg"}.get(path.suffix.lower()[1:], path.suffix.lower()[1:])
        return ImageInfo(
            format=fmt,
            geometry=Geometry(display, data, float(aspect)),
            channels=tuple(spec.channelnames),
            bits=int(bits),
            colour_hint=transfer or colour or None,
            fps=_oiio_fps(spec),
            timecode=_smpte_timecode(spec),
        )
    finally:
        image.close()


def _bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0x0F)


def _smpte_timecode(spec: Any) -> Any:
    """A DPX's SMPTE 12M timecode (OIIO's ``smpte:TimeCode``: time and flags as BCD, user bits)
    as an ``OpenEXR.TimeCode``, so it is copied into the mattes' ``timeCode`` as an EXR's is."""
    value = spec.getattribute("smpte:TimeCode")
    if not value:
        return None
    packed, user_bits = int(value[0]), int(value[1])
    if packed in (0, 0xFFFFFFFF):  # DPX writes all ones for "no timecode"
        return None
    timecode = OpenEXR.TimeCode()
    timecode.hours = _bcd((packed >> 24) & 0x3F)
    timecode.minutes = _bcd((packed >> 16) & 0x7F)
    timecode.seconds = _bcd((packed >> 8) & 0x7F)
    timecode.frame = _bcd(packed & 0x3F)
    timecode.dropFrame = bool(packed & 0x40)
    timecode.colorFrame = bool(packed & 0x80)
    timecode.userData = user_bits
    return timecode


def _oiio_fps(spec: Any) -> Fraction | None:
    rate = spec.get_float_attribute("dpx:FrameRate", 0.0) or spec.get_float_attribute("FramesPerSecond", 0.0)
    return Fraction(rate).limit_denominator(1001) if rate and rate > 0 else None


def _read_oiio(path: Path) -> np.ndarray:
    image = _oiio_open(path)
    try:
        spec = image.spec()
        pixels = image.read_image(0, 0, 0, min(spec.nchannels, 3), "float")
    finally:
        image.close()
    if pixels is None:
        raise ImageReadError(f"{path.name} can't be decoded; re-render or replace it")
    pixels = np.asarray(pixels, np.float32)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    elif pixels.shape[-1] == 2:  # grey + alpha
        pixels = np.repeat(pixels[..., :1], 3, axis=-1)
    if path.suffix.lower() == ".dpx" and spec.get_int_attribute("oiio:BitsPerSample", 0) == 10:
        # OIIO normalises 10-bit codes by 65535/64; snap back to exact code values / 1023.
        pixels = np.round(pixels * 1023.0) / 1023.0
    return np.ascontiguousarray(pixels, dtype=np.float32)
