"""Mask arithmetic shared by the stages. Pure numpy."""

from __future__ import annotations

import numpy as np


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def sigmoid(logits: np.ndarray) -> np.ndarray:
    out: np.ndarray = (1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))).astype(np.float32)
    return out
