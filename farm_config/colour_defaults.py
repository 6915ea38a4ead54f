"""What the models see by default: OpenColorIO's built-in ACES studio config, pinned (nothing is
downloaded), its sRGB display and the SDR video view. Settings and the colour converter share these."""

from __future__ import annotations

DEFAULT_OCIO_CONFIG = "ocio://studio-config-v2.2.0_aces-v1.3_ocio-v2.4"
DEFAULT_DISPLAY = "sRGB - Display"
DEFAULT_VIEW = "ACES 1.0 - SDR Video"
