"""I/O throughput: plate decode (EXR and 10-bit DPX, raw and all the way to model input) and matte
EXR write (half layers + Cryptomatte, ZIP), at given plate sizes. Prints what it measures."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from farm_config.settings import Settings
from workers.io import cryptomatte
from workers.io.exr import set_exr_threads, to_half, write_exr_atomic
from workers.io.images import read_image
from workers.io.plate import PlateDecoder, PlateInfo, resolve_plate
from workers.pipeline.export import matte_channels
from workers.pipeline.frames import FrameSource
from workers.pipeline.scratch import LayerStore, TrackedMask, quantize_logits


@dataclass
class IoResult:
    size: str
    operation: str
    frames: int
    seconds: float
    file_mb: float  # bytes on disk touched, MB (10^6)
    pixel_mb: float  # uncompressed pixel bytes produced or consumed, MB

    @property
    def fps(self) -> float:
        return self.frames / self.seconds

    @property
    def file_mb_s(self) -> float:
        return self.file_mb / self.seconds

    @property
    def pixel_mb_s(self) -> float:
        return self.pixel_mb / self.seconds


def _plate_rgb(width: int, height: int, seed: int) -> np.ndarray:
    """Textured, grainy, scene-linear: compresses like a real plate, not like a flat card."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0.02, 1.2, (height // 16 + 1, width // 16 + 1, 3)).astype(np.float32)
    rgb: np.ndarray = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    grain: np.ndarray = rng.normal(0, 0.01, rgb.shape).astype(np.float32)
    return rgb + grain


def _mattes(width: int, height: int, layers: int, step: int) -> list[np.ndarray]:
    """Soft ellipses that move ``step`` × 3 px, one per layer, as half. ``step`` counts from the
    shot's first frame: moved by the frame number (1001…), every ellipse lay off-frame, the mattes
    were all zero and Cryptomatte's write figure read 1.6× too fast."""
    yy, xx = np.ogrid[0:height, 0:width]
    out = []
    for i in range(layers):
        cx = width * (0.2 + 0.6 * i / max(1, layers - 1)) + 3 * step
        cy = height * 0.5
        d = np.sqrt(((xx - cx) / (0.12 * width)) ** 2 + ((yy - cy) / (0.3 * height)) ** 2)
        out.append(to_half(np.clip((1.0 - d) * 40.0, 0.0, 1.0).astype(np.float32)))
    return out


def _scratch_logits(width: int, height: int, layers: int, step: int, seed: int) -> list[np.ndarray]:
    """Tracked logits at working size as SAM2 hands them over: the ellipses above as smooth logits
    of varying strength, made at a quarter of the size and upsampled (SAM2's decoder works at a
    quarter of its input), so they deflate as poorly as real ones (a hard ±8 mask would not)."""
    rng = np.random.default_rng(seed)
    small_w, small_h = max(8, width // 4), max(8, height // 4)
    yy, xx = np.ogrid[0:small_h, 0:small_w]
    out = []
    for i in range(layers):
        cx = small_w * (0.2 + 0.6 * i / max(1, layers - 1)) + 0.75 * step
        d = np.sqrt(((xx - cx) / (0.12 * small_w)) ** 2 + ((yy - 0.5 * small_h) / (0.3 * small_h)) ** 2)
        low = ((1.0 - d) * 20.0 + rng.normal(0.0, 3.0, (small_h, small_w))).astype(np.float32)
        out.append(quantize_logits(cv2.resize(low, (width, height), interpolation=cv2.INTER_LINEAR)))
    return out


def write_plates(folder: Path, width: int, height: int, frames: int) -> tuple[Path, Path]:
    """``frames`` EXR (half RGB, ZIP) and 10-bit DPX plate frames; returns both patterns."""
    import OpenImageIO as oiio

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        rgb = _plate_rgb(width, height, i)
        channels = {c: rgb[..., k].astype(np.float16) for k, c in enumerate("RGB")}
        write_exr_atomic(folder / f"plate.{1001 + i}.exr", channels, {})
        spec = oiio.ImageSpec(width, height, 3, oiio.UINT16)
        spec.attribute("oiio:BitsPerSample", 10)
        out = oiio.ImageOutput.create(str(folder / f"scan.{1001 + i}.dpx"))
        if out is None:
            raise OSError(f"OpenImageIO can't write DPX here: {oiio.geterror()}")
        out.open(str(folder / f"scan.{1001 + i}.dpx"), spec)
        out.write_image((np.clip(rgb / 1.3, 0, 1) * 65535).astype(np.uint16))
        out.close()
    return folder / "plate.####.exr", folder / "scan.####.dpx"


def _decode(plate: PlateInfo, frame: int) -> object:
    return read_image(plate.path_for(frame))


def _write_mattes(
    paths: list[Path],
    mattes: dict[int, list[np.ndarray]],
    names: list[str],
    size: tuple[int, int],
    crypto_header: dict[str, Any] | None,
    frame: int,
) -> None:
    """One frame's matte EXR; ``crypto_header`` None writes it without Cryptomatte."""
    channels = matte_channels(names, mattes[frame], size, crypto_header is not None)
    write_exr_atomic(paths[frame - 1001], channels, crypto_header or {}, "zip")


def _timed(frames: list[int], run: Callable[[int], object]) -> float:
    started = time.perf_counter()
    for frame in frames:
        run(frame)
    return time.perf_counter() - started


def measure(
    workdir: Path,
    width: int,
    height: int,
    settings: Settings,
    *,
    frames: int = 8,
    layers: int = 4,
    max_side: int = 1024,
    threads: int = 2,
    progress: Callable[[str], None] | None = None,
) -> list[IoResult]:
    set_exr_threads(settings.exr_threads)
    size = f"{width}x{height}"
    folder = workdir / size
    say = progress or (lambda _: None)
    say(f"{size}: writing {frames} plate frames")
    exr_pattern, dpx_pattern = write_plates(folder, width, height, frames)
    numbers = list(range(1001, 1001 + frames))
    results: list[IoResult] = []
    rgb_mb = width * height * 3 * 4 / 1e6  # float32 RGB out of the decoder

    for label, pattern, colourspace in (("EXR", exr_pattern, "ACEScg"), ("DPX 10-bit", dpx_pattern, "cineon")):
        plate = resolve_plate(str(pattern), None)
        disk = sum(plate.path_for(f).stat().st_size for f in numbers) / 1e6
        say(f"{size}: decoding {label}")
        seconds = _timed(numbers, functools.partial(_decode, plate))
        results.append(IoResult(size, f"{label} decode", frames, seconds, disk, rgb_mb * frames))
        decoder = PlateDecoder.configured(plate, max_side, colourspace, settings)
        seconds = _timed(numbers, decoder.model_frame)
        results.append(IoResult(size, f"{label} → model input", frames, seconds, disk, rgb_mb * frames))
        with FrameSource(decoder, keep=frames, threads=threads, ahead=threads * 2) as source:
            started = time.perf_counter()
            for pos in range(frames):
                source.at(pos)
            seconds = time.perf_counter() - started
        results.append(IoResult(size, f"{label} → model input ×{threads}", frames, seconds, disk, rgb_mb * frames))

    names = [f"object_{i + 1:02d}" for i in range(layers)]
    out = folder / "mattes"
    header = cryptomatte.header(names) | {"displayWindow": ((0, 0), (width - 1, height - 1))}
    for crypto in (False, True):
        say(f"{size}: writing mattes{' + Cryptomatte' if crypto else ''}")
        paths = [out / f"{'crypto' if crypto else 'plain'}.{f}.exr" for f in numbers]
        mattes = {f: _mattes(width, height, layers, f - numbers[0]) for f in numbers}
        seconds = _timed(
            numbers,
            functools.partial(_write_mattes, paths, mattes, names, (width, height), header if crypto else None),
        )
        disk = sum(p.stat().st_size for p in paths) / 1e6
        pixel_bytes = width * height * ((layers + 1) * 2 + (12 * 4 if crypto else 0))
        label = f"write {layers} layers{' + crypto' if crypto else ''}"
        results.append(IoResult(size, label, frames, seconds, disk, pixel_bytes * frames / 1e6))
    say(f"{size}: layer scratch at working size")
    results += _scratch_rows(folder / "scratch", size, width, height, frames, layers, max_side)
    return results


def _scratch_rows(
    folder: Path, size: str, width: int, height: int, frames: int, layers: int, max_side: int
) -> list[IoResult]:
    """What the track stage pays to hand its layers to the next stage: each frame's tracked logits
    written to the scratch store (``LayerStore.flush``) and read back by a fresh one."""
    scale = min(1.0, max_side / max(width, height))
    work_w, work_h = max(1, round(width * scale)), max(1, round(height * scale))
    store = LayerStore(folder, keep=frames)
    for pos in range(frames):
        logits = _scratch_logits(work_w, work_h, layers, pos, seed=pos)
        store.put(pos, {i + 1: TrackedMask(lg, 0.9) for i, lg in enumerate(logits)})
    started = time.perf_counter()
    store.flush()
    written = time.perf_counter() - started
    disk = sum(store.path(pos).stat().st_size for pos in range(frames)) / 1e6
    pixel_mb = work_w * work_h * 2 * layers * frames / 1e6
    reader = LayerStore(folder, keep=1)
    started = time.perf_counter()
    for pos in range(frames):
        reader.get(pos)
    loaded = time.perf_counter() - started
    label = f"{layers} layers at {work_w}x{work_h}"
    return [
        IoResult(size, f"scratch write, {label}", frames, written, disk, pixel_mb),
        IoResult(size, f"scratch load, {label}", frames, loaded, disk, pixel_mb),
    ]
