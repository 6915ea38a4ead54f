"""Plate colour → what the models see: scene light, then display-referred sRGB.

Two steps, so resizing happens in light (linear) and the view transform runs on the small frame:
``to_linear`` decodes the plate's encoding (Cineon log, sRGB, a camera log via OCIO) into a linear
working space; ``to_display`` applies the view transform to sRGB. OpenColorIO runs with a built-in
config pinned by URI (no files to download); without OCIO a plain linear→sRGB curve is used.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from farm_config.colour_defaults import DEFAULT_DISPLAY, DEFAULT_OCIO_CONFIG, DEFAULT_VIEW

# Pinned, not ocio://default, which moves with the OCIO version (2.6 made it ACES 2.1).

ACESCG = "ACEScg"
LINEAR_REC709 = "Linear Rec.709 (sRGB)"
SRGB = "sRGB Encoded Rec.709 (sRGB)"
CINEON = "Cineon"  # Kodak printing density, decoded with nuke-default's formula

# Short names people type, mapped to the pinned config's colour-space names.
ALIASES = {
    "acescg": ACESCG,
    "aces2065-1": "ACES2065-1",
    "aces": "ACES2065-1",
    "linear": LINEAR_REC709,
    "scene-linear": LINEAR_REC709,
    "scene_linear": LINEAR_REC709,
    "lin_rec709": LINEAR_REC709,
    "linear rec.709": LINEAR_REC709,
    "srgb": SRGB,
    "srgb_texture": SRGB,
    "srgb - texture": SRGB,
    "cineon": CINEON,
    "log": CINEON,
}
DISPLAY_REFERRED = {SRGB}
DEFAULT_BY_FORMAT = {"dpx": CINEON, "tiff": SRGB, "png": SRGB, "jpeg": SRGB}

# AP1 → linear Rec.709 (D60→D65 Bradford), for the no-OCIO fallback.
_AP1_TO_REC709 = np.array(
    [
        [1.70505, -0.62179, -0.08326],
        [-0.13026, 1.14080, -0.01055],
        [-0.02400, -0.12897, 1.15297],
    ],
    np.float32,
)
_AP0_TO_REC709 = np.array(
    [
        [2.52169, -1.13413, -0.38756],
        [-0.27648, 1.37272, -0.09624],
        [-0.01538, -0.15298, 1.16835],
    ],
    np.float32,
)


class ColourError(ValueError):
    """A colour space the farm can't convert; the message lists what it can."""


def canonical_colourspace(name: str) -> str:
    return ALIASES.get(name.strip().lower(), name.strip())


def default_colourspace(fmt: str, colour_hint: str | None, exr_default: str) -> str:
    """The plate's colour space when the job does not say: header hints first, then the format."""
    if fmt == "exr":
        return (
            colour_hint if colour_hint in (ACESCG, LINEAR_REC709, "ACES2065-1") else canonical_colourspace(exr_default)
        )
    if fmt == "dpx" and colour_hint and "linear" in colour_hint.lower():
        return LINEAR_REC709
    return DEFAULT_BY_FORMAT.get(fmt, SRGB)


def cineon_to_linear(code: np.ndarray) -> np.ndarray:
    """nuke-default Cineon: code values 95 → 0, 685 → 1 (input is code / 1023)."""
    offset = 10.0 ** ((95.0 - 685.0) / 300.0)
    lin = (np.power(10.0, (1023.0 * code.astype(np.float32) - 685.0) / 300.0) - offset) / (1.0 - offset)
    return lin.astype(np.float32)


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    return np.where(x <= 0.04045, x / 12.92, ((np.clip(x, 0, None) + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1 / 2.4) - 0.055).astype(np.float32)


@dataclass
class ColourConverter:
    """One plate's conversion, built once per job (OCIO processors are costly to build)."""

    colourspace: str
    config: str = DEFAULT_OCIO_CONFIG
    display: str = DEFAULT_DISPLAY
    view: str = DEFAULT_VIEW
    use_ocio: bool = True

    def __post_init__(self) -> None:
        self.colourspace = canonical_colourspace(self.colourspace)
        self._ocio: Any = _load_ocio() if self.use_ocio else None
        self.engine = "ocio" if self._ocio is not None else "fallback"
        self._to_linear: Any = None
        self._to_display: Any = None
        if self.colourspace in DISPLAY_REFERRED:
            self.working = LINEAR_REC709
        elif self.colourspace == CINEON:
            self.working = LINEAR_REC709  # nuke-default's Cineon decodes to linear Rec.709
        elif self.colourspace in (ACESCG, LINEAR_REC709, "ACES2065-1"):
            self.working = self.colourspace
        elif self._ocio is None:
            raise ColourError(
                f"colourspace {self.colourspace!r} needs OpenColorIO, which is not installed; "
                f"use one of {sorted({ACESCG, LINEAR_REC709, SRGB, CINEON, 'ACES2065-1'})}"
            )
        else:
            self.working = ACESCG
        if self._ocio is not None:
            self._build_processors()

    def _build_processors(self) -> None:
        self._to_linear, self._to_display = _processors(
            _config_key(self.config), self.colourspace, self.working, self.display, self.view
        )

    @property
    def scene_referred(self) -> bool:
        return self.colourspace not in DISPLAY_REFERRED

    def describe(self) -> str:
        if not self.scene_referred:
            return f"{self.colourspace} (display-referred, passed through)"
        if self.engine == "ocio":
            return f"{self.colourspace} → {self.display} / {self.view} via {self.config}"
        return f"{self.colourspace} → sRGB (plain curve, OpenColorIO not installed)"

    def to_linear(self, pixels: np.ndarray) -> np.ndarray:
        """The plate's encoding → linear light in ``self.working``."""
        if self.colourspace in DISPLAY_REFERRED:
            return srgb_to_linear(pixels)
        if self.colourspace == CINEON:
            return cineon_to_linear(pixels)
        if self._to_linear is not None:
            out = np.ascontiguousarray(pixels, dtype=np.float32).copy()
            self._to_linear.applyRGB(out)
            return out
        return pixels.astype(np.float32, copy=False)

    def to_display(self, linear: np.ndarray) -> np.ndarray:
        """Linear light → display sRGB in [0, 1]."""
        if not self.scene_referred:
            return linear_to_srgb(linear)  # the inverse of to_linear: PNG/JPEG look as they did
        if self._to_display is not None:
            out = np.ascontiguousarray(linear, dtype=np.float32).copy()
            self._to_display.applyRGB(out)
            return np.clip(out, 0.0, 1.0)
        if self.working == ACESCG:
            linear = linear @ _AP1_TO_REC709.T
        elif self.working == "ACES2065-1":
            linear = linear @ _AP0_TO_REC709.T
        return linear_to_srgb(linear)


def _load_ocio() -> Any:
    try:
        import PyOpenColorIO as ocio
    except ImportError:
        return None
    return ocio


def _config_key(config: str) -> tuple[str, int]:
    """A config and its file's modification time (0 for a built-in ocio:// URI), so a cached
    config is reloaded when its file changes."""
    try:
        return config, os.stat(config).st_mtime_ns
    except OSError:
        return config, 0


@functools.lru_cache(maxsize=64)
def _processors(
    config_key: tuple[str, int], colourspace: str, working: str, display: str, view: str
) -> tuple[Any, Any]:
    """The CPU processors of one conversion, built once per process: loading an OCIO config costs
    about 10 ms, a sixth of a submission's time when built per request. OCIO's CPU processors are
    immutable and safe to share between threads."""
    ocio = _load_ocio()
    path = config_key[0]
    try:
        config = ocio.Config.CreateFromFile(path)
    except Exception as exc:
        raise ColourError(f"OCIO config {path!r} can't be loaded ({exc}); use a built-in ocio:// URI") from None
    names = set(config.getColorSpaceNames())
    if colourspace not in (CINEON, *DISPLAY_REFERRED) and config.getColorSpace(colourspace) is None:
        raise ColourError(
            f"colourspace {colourspace!r} is not in {path}; pick one of its colour spaces, "
            f"e.g. {', '.join(sorted(n for n in names if 'Display' not in n)[:8])}, ..."
        )
    to_linear = to_display = None
    if colourspace not in (CINEON, *DISPLAY_REFERRED, working):
        to_linear = config.getProcessor(colourspace, working).getDefaultCPUProcessor()
    if colourspace not in DISPLAY_REFERRED:
        transform = ocio.DisplayViewTransform(src=working, display=display, view=view)
        try:
            to_display = config.getProcessor(transform).getDefaultCPUProcessor()
        except Exception as exc:
            raise ColourError(f"display {display!r} / view {view!r} is not in {path} ({exc})") from None
    return to_linear, to_display
