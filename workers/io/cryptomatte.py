"""Cryptomatte (spec v1.2.0) encoding of per-object mattes: ids, ranks, manifest, header.

Pure numpy plus MurmurHash3; no files. The per-object half layers stay the authoritative mattes:
Cryptomatte is a partition, so overlapping coverage is normalised per pixel before ranking.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence

import mmh3
import numpy as np

TYPENAME = "CryptoObject"
LEVELS = 6  # the spec's suggested default: 3 RGBA layers
HASH = "MurmurHash3_32"
CONVERSION = "uint32_to_float32"
BAND_ROWS = 256  # rows ranked at a time, so a 4K frame with many layers stays small in memory


def name_hash(name: str) -> int:
    """The uint32 id of ``name`` after the exponent fix-up (never a denormal, inf or NaN)."""
    h = mmh3.hash(name.encode("utf-8"), 0, signed=False)
    exponent = (h >> 23) & 0xFF
    if exponent in (0, 255):
        h ^= 1 << 23
    return h


def name_id(name: str) -> float:
    """The float32 id stored in the ``.R``/``.B`` channels."""
    return struct.unpack("<f", struct.pack("<I", name_hash(name)))[0]


def manifest(names: Sequence[str]) -> dict[str, str]:
    return {name: f"{name_hash(name):08x}" for name in names}


def layer_key(typename: str = TYPENAME) -> str:
    """The metadata key: the first 7 hex digits of the typename's hash (Encryptomatte's rule)."""
    return f"{name_hash(typename):08x}"[:7]


def channel_names(typename: str = TYPENAME, levels: int = LEVELS) -> list[str]:
    return [f"{typename}{i:02d}.{c}" for i in range((levels + 1) // 2) for c in "RGBA"]


def header(names: Sequence[str], typename: str = TYPENAME) -> dict[str, str]:
    key = f"cryptomatte/{layer_key(typename)}"
    return {
        f"{key}/name": typename,
        f"{key}/hash": HASH,
        f"{key}/conversion": CONVERSION,
        f"{key}/manifest": json.dumps(manifest(names), ensure_ascii=False, separators=(",", ":")),
    }


def normalised_coverage(mattes: np.ndarray) -> np.ndarray:
    """(N, H, W) mattes → coverage summing to at most 1 per pixel; the rest is background."""
    total = mattes.sum(axis=0, dtype=np.float32)
    scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-12), 1.0).astype(np.float32)
    return mattes * scale[None]


def encode(
    mattes: np.ndarray, names: Sequence[str], typename: str = TYPENAME, levels: int = LEVELS
) -> dict[str, np.ndarray]:
    """Float32 Cryptomatte channels for ``mattes`` (N, H, W) in [0, 1], one per name.

    Each pixel keeps its ``levels`` largest coverages, in descending order; empty ranks hold
    id 0.0 with coverage 0.
    """
    count, height, width = mattes.shape if mattes.ndim == 3 else (0, *mattes.shape[-2:])
    if count != len(names):
        raise ValueError(f"{count} mattes but {len(names)} names")
    ranks_id = np.zeros((levels, height, width), np.float32)
    ranks_cov = np.zeros((levels, height, width), np.float32)
    if count:
        ids = np.array([name_id(n) for n in names], np.float32)
        keep = min(levels, count)
        for y0 in range(0, height, BAND_ROWS):
            band = mattes[:, y0 : y0 + BAND_ROWS].astype(np.float32, copy=False).reshape(count, -1)
            # Only pixels some object covers are ranked; mattes are mostly empty.
            covered = np.flatnonzero(band.max(axis=0) > 0.0)
            if covered.size == 0:
                continue
            coverage = normalised_coverage(band[:, covered])
            # Stable on ties, so equal coverages keep layer order frame after frame.
            order = np.argsort(-coverage, axis=0, kind="stable")[:keep]
            ranked = np.take_along_axis(coverage, order, axis=0)
            present = ranked > 0.0
            for rank in range(keep):
                ranks_cov[rank, y0 : y0 + BAND_ROWS].reshape(-1)[covered] = np.where(present[rank], ranked[rank], 0.0)
                ranks_id[rank, y0 : y0 + BAND_ROWS].reshape(-1)[covered] = np.where(
                    present[rank], ids[order[rank]], 0.0
                )
    channels: dict[str, np.ndarray] = {}
    for level in range(0, levels, 2):
        layer = f"{typename}{level // 2:02d}"
        channels[f"{layer}.R"] = ranks_id[level]
        channels[f"{layer}.G"] = ranks_cov[level]
        if level + 1 < levels:
            channels[f"{layer}.B"] = ranks_id[level + 1]
            channels[f"{layer}.A"] = ranks_cov[level + 1]
        else:
            channels[f"{layer}.B"] = np.zeros((height, width), np.float32)
            channels[f"{layer}.A"] = np.zeros((height, width), np.float32)
    return channels


def decode(channels: dict[str, np.ndarray], name: str, typename: str = TYPENAME) -> np.ndarray:
    """Σ coverage over ranks whose id is ``name``'s: what Nuke's gizmo computes."""
    target = np.float32(name_id(name))
    out: np.ndarray | None = None
    level = 0
    while f"{typename}{level:02d}.R" in channels:
        layer = f"{typename}{level:02d}"
        part = np.where(channels[f"{layer}.R"] == target, channels[f"{layer}.G"], 0.0) + np.where(
            channels[f"{layer}.B"] == target, channels[f"{layer}.A"], 0.0
        )
        out = part if out is None else out + part
        level += 1
    if out is None:
        raise KeyError(f"no {typename}00 channels")
    return out.astype(np.float32)
