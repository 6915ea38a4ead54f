"""Mask arithmetic shared by the stages. Pure numpy."""

from __future__ import annotations

import io

import cv2
import numpy as np

LOGIT_CLIP = 12.0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def grown(mask: np.ndarray, px: int) -> np.ndarray:
    """``mask`` dilated by a disc of radius ``px``."""
    if px <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def tolerant_overlap(a: np.ndarray, b: np.ndarray, px: int) -> float:
    """How much two masks agree when a boundary ``px`` pixels off still counts as agreeing: the
    share of each mask's pixels within ``px`` of the other, averaged over both (1: each lies along
    the other). Plain IoU cannot judge thin objects: a stick 3 px wide, segmented 2 px fat on one
    frame, has IoU 0.4 with itself. With ``px`` 0 this is the Dice overlap."""
    area = int(a.sum()) + int(b.sum())
    if not area:
        return 0.0
    return float(((a & grown(b, px)).sum() + (b & grown(a, px)).sum()) / area)


def contained(inner: np.ndarray, outer: np.ndarray, px: int) -> float:
    """The share of ``inner``'s pixels within ``px`` of ``outer`` (1: it lies inside it)."""
    area = int(inner.sum())
    return float((inner & grown(outer, px)).sum() / area) if area else 0.0


def sigmoid(logits: np.ndarray) -> np.ndarray:
    out: np.ndarray = (1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))).astype(np.float32)
    return out


def mask_to_logits(mask: np.ndarray) -> np.ndarray:
    """A hard mask as logits with a one-pixel soft edge, like a segmenter's output."""
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 0.7)
    soft = np.clip(soft, 1e-5, 1 - 1e-5)
    logits: np.ndarray = np.clip(np.log(soft / (1 - soft)), -LOGIT_CLIP, LOGIT_CLIP).astype(np.float32)
    return logits


def pack_masks(positions: list[int], masks: list[np.ndarray], shape: tuple[int, int]) -> bytes:
    """Masks at some positions as compact bytes (bit-packed, compressed): a propagation's result,
    kept in the database so any process can apply it."""
    stack = np.stack(masks).astype(bool) if masks else np.zeros((0, *shape), bool)
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer, positions=np.array(positions, np.int32), shape=np.array(shape, np.int32), masks=np.packbits(stack, -1)
    )
    return buffer.getvalue()


def unpack_masks(data: bytes) -> list[tuple[int, np.ndarray]]:
    with np.load(io.BytesIO(data)) as packed:
        _, width = packed["shape"].tolist()
        masks = np.unpackbits(packed["masks"], axis=-1, count=width).astype(bool)
        return list(zip(packed["positions"].tolist(), masks, strict=True))
