"""SAM 2.1 as the farm's segmenter (box prompts on one frame)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from workers.models.interfaces import Detection, ModelFrame


def build_sam2_model(config: str, checkpoint: Path | None, device: str) -> torch.nn.Module:
    """The SAM2 network; ``checkpoint=None`` keeps the random initialisation."""
    from sam2.build_sam import build_sam2

    return build_sam2(config, ckpt_path=str(checkpoint) if checkpoint else None, device=device, mode="eval")


def autocast_for(device: str) -> contextlib.AbstractContextManager[None]:
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


class Sam2Segmenter:
    """Box-prompted masks. The image embedding of the last frame is kept, so several calls
    on one frame cost one encoder pass."""

    def __init__(self, model: torch.nn.Module, device: str, name: str) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.predictor = SAM2ImagePredictor(model)
        self.device = device
        self.name = name
        self.counters: Counter[str] = Counter()
        self._encoded: tuple[Path, int] | None = None

    def segment(self, frame: ModelFrame, boxes: Sequence[Detection]) -> np.ndarray:
        h, w = frame.image.shape[:2]
        if not boxes:
            return np.zeros((0, h, w), np.float32)
        with torch.inference_mode(), autocast_for(self.device):
            key = (frame.plate_path, frame.frame)
            if self._encoded != key:
                self.predictor.set_image(frame.image)
                self._encoded = key
                self.counters["image_encoder_passes"] += 1
            box_array = np.array([d.box for d in boxes], dtype=np.float32)
            logits, _, _ = self.predictor.predict(box=box_array, multimask_output=False, return_logits=True)
        self.counters["mask_decoder_calls"] += len(boxes)
        return np.asarray(logits, dtype=np.float32).reshape(len(boxes), -1, h, w)[:, 0]
