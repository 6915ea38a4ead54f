"""Refinement's files: a finished version's layers read back as masks at working resolution, and
the next version written from an edited LayerBook.

Delivery copies every layer that no edit changed, byte for byte, from the parent version's EXRs
(merged layers: the parents' mattes combined; renamed: the same data under the new name); only
edited frames of edited layers are made anew from their masks. ``A`` and Cryptomatte follow the
layers, and the header records the parent version and the edits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from workers.core.masks import mask_to_logits
from workers.core.refine import LayerBook
from workers.io import cryptomatte
from workers.io.exr import read_exr_channels, to_half, write_exr_atomic
from workers.pipeline.export import EdgeRefinement, matte_channels, plate_matte, snap


def load_book(
    output_for: Callable[[int], Path], frames: Sequence[int], labels: dict[str, str], size: tuple[int, int]
) -> LayerBook:
    """The delivered layers (``labels``: name → label) as masks at working ``size`` (w, h): each
    ``<layer>.A`` area-averaged down, inside where coverage ≥ 0.5."""
    book = LayerBook((size[1], size[0]), len(frames))
    masks: dict[str, dict[int, np.ndarray]] = {name: {} for name in labels}
    for pos, frame in enumerate(frames):
        channels, _ = read_exr_channels(output_for(frame))
        for name in labels:
            matte = channels.get(f"{name}.A")
            if matte is None:
                continue
            small = cv2.resize(matte.astype(np.float32), size, interpolation=cv2.INTER_AREA)
            if (small >= 0.5).any():
                masks[name][pos] = small >= 0.5
    for name, label in labels.items():
        book.add(name, label, masks[name])
    book.changed.clear()
    return book


def deliver_version(
    book: LayerBook,
    frames: Sequence[int],
    parent_for: Callable[[int], Path],
    output_for: Callable[[int], Path],
    header: dict[str, Any],
    *,
    progress: Callable[[int], None] = lambda done: None,
    edges: EdgeRefinement | None = None,
    guide_for: Callable[[int], np.ndarray] | None = None,
) -> tuple[list[Path], int]:
    """Write every frame of the next version; returns the paths and how many frames had a layer
    made anew from its mask (the rest are the parent's mattes under the current layer names).
    ``edges`` refines the remade layers' edges as the export refined the automatic pass's, guided
    by ``guide_for(frame)``, so a fixed layer's edges match its neighbours'."""
    names = list(book.layers)
    written: list[Path] = []
    rewritten = 0
    for pos, frame in enumerate(frames):
        parent, parent_header = read_exr_channels(parent_for(frame))
        size = (parent["A"].shape[1], parent["A"].shape[0])
        empty = np.zeros((size[1], size[0]), np.float16)
        halves: list[np.ndarray] = []
        anew = False
        for name in names:
            layer = book.layers[name]
            if pos not in layer.masks:
                halves.append(empty)
            elif pos in book.changed.get(name, set()) or not layer.sources:
                matte = plate_matte(mask_to_logits(layer.masks[pos]), size)
                if edges is not None and guide_for is not None:
                    matte = snap(edges.refine(matte, guide_for(frame)))
                halves.append(to_half(matte))
                anew = True
            else:
                copied = [parent[f"{source}.A"] for source in sorted(layer.sources) if f"{source}.A" in parent]
                halves.append(np.maximum.reduce(copied) if len(copied) > 1 else (copied[0] if copied else empty))
        rewritten += anew
        crypto = any(key.startswith("Crypto") for key in parent)
        kept = {k: v for k, v in parent_header.items() if not k.startswith("cryptomatte/") and k not in _WRITTEN}
        frame_header = kept | header | (cryptomatte.header(names) if crypto else {})
        path = output_for(frame)
        write_exr_atomic(path, matte_channels(names, halves, size, crypto), frame_header)
        written.append(path)
        progress(pos + 1)
    return written, rewritten


# header fields the writer sets itself, never copied from the parent
_WRITTEN = {"channels", "compression", "type", "lineOrder", "screenWindowCenter", "screenWindowWidth", "name"}
