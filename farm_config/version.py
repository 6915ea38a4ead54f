"""The farm's version: one string for the CLI, the API, EXR headers and manifests."""

from __future__ import annotations

VERSION = "0.1.0"
