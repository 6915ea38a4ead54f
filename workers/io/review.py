"""Review media for dailies: an H.264 overlay movie (PyAV) and a contact-sheet JPEG.

The plate is shown in display colour with each layer tinted in a colour derived from its name
(stable across versions and shots), outlined, and burnt in with shot, version, source frame
number, timecode and a legend. Movies lose their start frame, so the first and last frame and
the source go into the container's metadata as well; a source frame the job skipped (missing on
disk) is held as a slate, so the movie's frame N is always source frame first + N.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from workers.core.masks import sigmoid
from workers.io.atomic import atomic_path, commit, temporary_beside
from workers.io.cryptomatte import name_hash
from workers.io.plate import PlateDecoder, working_size

FILL = 0.45
OUTLINE_PX = 2
THUMB_WIDTH = 384
SHEET_COLUMNS = 4
SHEET_FRAMES = 12
FONT = cv2.FONT_HERSHEY_SIMPLEX


def layer_colour(name: str) -> tuple[int, int, int]:
    """A saturated RGB colour from the layer name's hash: the same layer, the same colour."""
    hue = (name_hash(name) & 0xFFFF) / 0xFFFF
    r, g, b = colorsys.hsv_to_rgb(hue, 0.8, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def even_size(size: tuple[int, int]) -> tuple[int, int]:
    """H.264 in yuv420p needs even dimensions."""
    return max(2, size[0] - size[0] % 2), max(2, size[1] - size[1] % 2)


def overlay(display: np.ndarray, mattes: Mapping[str, np.ndarray]) -> np.ndarray:
    """Tint each layer over the display-referred plate and outline it (uint8 RGB in and out)."""
    out: np.ndarray = display.astype(np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * OUTLINE_PX + 1, 2 * OUTLINE_PX + 1))
    edges: list[tuple[np.ndarray, tuple[int, int, int]]] = []
    for name, matte in mattes.items():
        colour = np.array(layer_colour(name), np.float32)
        alpha = (FILL * matte)[..., None]
        out = out * (1.0 - alpha) + colour * alpha
        inside = (matte > 0.5).astype(np.uint8)
        edges.append((cv2.morphologyEx(inside, cv2.MORPH_GRADIENT, kernel) > 0, layer_colour(name)))
    for edge, edge_colour in edges:
        out[edge] = edge_colour
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _text(image: np.ndarray, text: str, origin: tuple[int, int], scale: float, colour: tuple[int, int, int]) -> None:
    thickness = max(1, round(scale * 2))
    cv2.putText(image, text, origin, FONT, scale, (0, 0, 0), thickness + 2, cv2.LINE_AA)
    cv2.putText(image, text, origin, FONT, scale, colour, thickness, cv2.LINE_AA)


def burn_in(image: np.ndarray, top_left: str, top_right: str, legend: list[tuple[str, bool]]) -> None:
    """Shot/version/frame at the top, the layer legend along the bottom (absent layers dimmed)."""
    h, w = image.shape[:2]
    scale = max(0.35, min(1.0, w / 1600))
    line = int(28 * scale) + 6
    _text(image, top_left, (8, line), scale, (255, 255, 255))
    (tw, _), _ = cv2.getTextSize(top_right, FONT, scale, max(1, round(scale * 2)))
    _text(image, top_right, (w - tw - 8, line), scale, (255, 255, 255))
    x, y = 8, h - 10
    swatch = int(16 * scale) + 4
    for name, present in legend:
        colour = layer_colour(name) if present else (110, 110, 110)
        (tw, _), _ = cv2.getTextSize(name, FONT, scale * 0.8, 1)
        if x + swatch + tw + 16 > w:
            x, y = 8, y - line
        cv2.rectangle(image, (x, y - swatch), (x + swatch, y), colour, -1)
        _text(image, name, (x + swatch + 4, y), scale * 0.8, (255, 255, 255) if present else (150, 150, 150))
        x += swatch + tw + 20


@dataclass
class ReviewWriter:
    """Receives each exported frame's logits; writes the movie as it goes and the sheet at the end."""

    decoder: PlateDecoder
    movie_path: Path
    sheet_path: Path
    layer_names: list[str]
    shot: str
    version: int
    fps: Fraction
    max_side: int = 1920
    timecode_text: Callable[[int], str | None] = lambda frame: None
    _container: Any = field(default=None, init=False, repr=False)
    _stream: Any = field(default=None, init=False, repr=False)
    _tmp_movie: Path | None = field(default=None, init=False, repr=False)
    _thumbs: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _sheet_frames: set[int] = field(default_factory=set, init=False, repr=False)
    frames_written: int = field(default=0, init=False)
    slates: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        geo = self.decoder.plate.geometry
        self.size = even_size(working_size(geo.width, geo.height, self.max_side, geo.pixel_aspect))
        frames = self.decoder.plate.frames
        picks = np.linspace(0, len(frames) - 1, min(SHEET_FRAMES, len(frames))).round().astype(int)
        self._sheet_frames = {frames[i] for i in picks}

    def _open(self) -> None:
        import av

        self._tmp_movie = temporary_beside(self.movie_path, ".mp4")
        plate = self.decoder.plate
        self._container = av.open(str(self._tmp_movie), mode="w", format="mp4")
        self._container.metadata.update(
            {
                "title": f"{self.shot} roto v{self.version:03d}",
                "comment": f"first_frame={plate.frames[0]} last_frame={plate.frames[-1]} "
                f"source={plate.pattern.display}",
            }
        )
        stream = self._container.add_stream("libx264", rate=self.fps)
        stream.width, stream.height = self.size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "medium", "profile": "high", "bf": "0"}
        stream.codec_context.color_primaries = 1  # bt709
        stream.codec_context.color_trc = 1
        stream.codec_context.colorspace = 1
        self._stream = stream

    def add(self, frame: int, logits: Mapping[str, np.ndarray]) -> None:
        if self._container is None:
            self._open()
        display = self.decoder.model_frame(frame, self.size)
        mattes = {
            name: sigmoid(cv2.resize(lg, self.size, interpolation=cv2.INTER_LINEAR)) for name, lg in logits.items()
        }
        image = overlay(display, mattes)
        timecode = self.timecode_text(frame)
        right = f"{frame}" + (f"  {timecode}" if timecode else "")
        burn_in(
            image,
            f"{self.shot}  roto v{self.version:03d}",
            right,
            [(name, name in logits) for name in self.layer_names],
        )
        self._encode(image)
        if frame in self._sheet_frames:
            scale = THUMB_WIDTH / image.shape[1]
            self._thumbs[frame] = cv2.resize(
                image, (THUMB_WIDTH, max(2, round(image.shape[0] * scale))), interpolation=cv2.INTER_AREA
            )

    def add_slate(self, frame: int) -> None:
        """A held slate for a source frame the job skipped (not on disk), so the movie's frame
        index keeps matching source frames: frame N of the movie is source frame first + N."""
        if self._container is None:
            self._open()
        width, height = self.size
        image = np.full((height, width, 3), 40, np.uint8)
        cv2.line(image, (0, 0), (width - 1, height - 1), (90, 90, 90), 2)
        cv2.line(image, (0, height - 1), (width - 1, 0), (90, 90, 90), 2)
        scale = max(0.5, min(1.6, width / 900))
        message = f"frame {frame} not in the plate"
        (tw, th), _ = cv2.getTextSize(message, FONT, scale, max(1, round(scale * 2)))
        _text(image, message, ((width - tw) // 2, (height + th) // 2), scale, (255, 200, 60))
        burn_in(
            image, f"{self.shot}  roto v{self.version:03d}", f"{frame}  (missing)", []
        )  # no header to read a timecode from
        self._encode(image)
        self.slates += 1

    def _encode(self, image: np.ndarray) -> None:
        import av

        for packet in self._stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
            self._container.mux(packet)
        self.frames_written += 1

    def close(self) -> tuple[Path, Path] | None:
        """Finish the movie and write the sheet; both appear under their names only when complete."""
        if self._container is None:
            return None
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None
        assert self._tmp_movie is not None
        commit(self._tmp_movie, self.movie_path)
        self._tmp_movie = None
        write_contact_sheet(self.sheet_path, self._thumbs, f"{self.shot} roto v{self.version:03d}")
        return self.movie_path, self.sheet_path

    def abort(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._tmp_movie is not None:
            self._tmp_movie.unlink(missing_ok=True)
            self._tmp_movie = None


def write_contact_sheet(path: Path, thumbs: Mapping[int, np.ndarray], title: str) -> None:
    """A JPEG grid of the picked frames, each labelled with its source frame number."""
    frames = sorted(thumbs)
    if not frames:
        return
    th, tw = thumbs[frames[0]].shape[:2]
    columns = min(SHEET_COLUMNS, len(frames))
    rows = -(-len(frames) // columns)
    pad, header, caption = 8, 40, 24
    cell = th + caption + pad
    sheet = np.full((header + rows * cell + pad, columns * (tw + pad) + pad, 3), 24, np.uint8)
    _text(sheet, title, (pad, 28), 0.8, (255, 255, 255))
    for i, frame in enumerate(frames):
        y = header + (i // columns) * cell
        x = pad + (i % columns) * (tw + pad)
        _text(sheet, str(frame), (x, y + caption - 6), 0.6, (255, 255, 0))  # the source frame number
        sheet[y + caption : y + caption + th, x : x + tw] = thumbs[frame]
    with atomic_path(path, suffix=".jpg") as temporary:  # OpenCV picks the encoder by extension
        if not cv2.imwrite(str(temporary), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"could not write {path}")
