"""GroundingDINO Swin-T as the farm's detector."""

from __future__ import annotations

import contextlib
import io
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from workers.models.interfaces import Detection, ModelFrame

log = logging.getLogger(__name__)
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def build_gdino_model(config_name: str, checkpoint: Path | None, text_encoder: Path, device: str) -> torch.nn.Module:
    """The GroundingDINO network; ``checkpoint=None`` keeps the random initialisation."""
    import groundingdino
    from groundingdino.models import build_model
    from groundingdino.util.slconfig import SLConfig
    from groundingdino.util.utils import clean_state_dict

    args = SLConfig.fromfile(str(Path(groundingdino.__file__).parent / "config" / config_name))
    args.device = device
    args.text_encoder_type = str(text_encoder)
    # groundingdino prints from inside its builders; keep the worker log readable.
    with contextlib.redirect_stdout(io.StringIO()):
        model = build_model(args)
    if checkpoint is not None:
        state = torch.load(str(checkpoint), map_location="cpu", weights_only=False)
        missing = model.load_state_dict(clean_state_dict(state["model"]), strict=False)
        if missing.missing_keys:
            log.warning("GroundingDINO checkpoint lacks %d keys", len(missing.missing_keys))
    return model.to(device).eval()


def caption_for(classes: Sequence[str]) -> str:
    return " . ".join(classes) + " ."


def label_for(phrase: str, classes: Sequence[str]) -> str | None:
    """The prompt class a predicted phrase names (GroundingDINO returns sub-phrases)."""
    phrase = phrase.strip().lower()
    for name in classes:
        if phrase == name:
            return name
    for name in classes:
        if phrase and (phrase in name or name in phrase):
            return name
    return None


def detector_size(width: int, height: int, short_side: int, max_side: int) -> tuple[int, int]:
    """GroundingDINO's own resize rule (short side to ``short_side``, long side at most ``max_side``).

    The model was trained at this scale, and its 900 queries need at least as many encoder
    tokens, which frames much under ~320 px do not give.
    """
    scale = min(short_side / min(width, height), max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


class TextOnce(torch.nn.Module):
    """GroundingDINO's text encoder (BERT) run once per prompt: it encoded the same caption again
    on every frame of a job, and on every row of a batch of frames. The latest caption's output is
    kept; another caption is encoded anew. A batch whose rows are all one caption is encoded as one
    row and the output shared by every row."""

    def __init__(self, bert: torch.nn.Module, counters: Counter[str]) -> None:
        super().__init__()
        self.bert, self.config, self.counters = bert, bert.config, counters
        self._key: tuple[object, ...] | None = None
        self._output: Any = None

    def forward(self, **inputs: torch.Tensor) -> Any:
        rows = {len(t) for t in inputs.values()}
        batch = rows.pop() if len(rows) == 1 else 1
        if batch > 1 and all(bool((t == t[:1]).all()) for t in inputs.values()):
            hidden = self.forward(**{name: t[:1] for name, t in inputs.items()})["last_hidden_state"]
            # GroundingDINO reads only ``last_hidden_state`` from the encoder's output
            return {"last_hidden_state": hidden.expand(batch, *hidden.shape[1:])}
        key = tuple((name, tuple(t.shape), t.cpu().numpy().tobytes()) for name, t in sorted(inputs.items()))
        if key != self._key:
            self._output, self._key = self.bert(**inputs), key
            self.counters["text_encoder_passes"] += 1
        return self._output


class GroundingDinoDetector:
    """GroundingDINO over a batch of frames per forward (``batch_frames``): one caption, frames of
    one plate (one size), so the batch needs no padding."""

    def __init__(
        self,
        model: torch.nn.Module,
        device: str,
        name: str,
        short_side: int = 800,
        max_side: int = 1333,
        batch_frames: int = 1,
    ) -> None:
        self.model, self.device, self.name = model, device, name
        self.short_side, self.max_side, self.batch_frames = short_side, max_side, batch_frames
        self.counters: Counter[str] = Counter()
        bert = model.bert
        if isinstance(bert, torch.nn.Module) and not isinstance(bert, TextOnce):
            model.bert = TextOnce(bert, self.counters)

    def detect(
        self, frame: ModelFrame, classes: Sequence[str], box_threshold: float, text_threshold: float
    ) -> list[Detection]:
        return self.detect_many([frame], classes, box_threshold, text_threshold)[0]

    def detect_many(
        self, frames: Sequence[ModelFrame], classes: Sequence[str], box_threshold: float, text_threshold: float
    ) -> list[list[Detection]]:
        from groundingdino.util.inference import preprocess_caption
        from groundingdino.util.utils import get_phrases_from_posmap

        if not frames:
            return []
        # groundingdino's own predict() takes one image; its caption rule and phrase read-out are
        # the same below, over a batch
        caption = preprocess_caption(caption_for(classes))
        images = torch.stack([self._pixels(frame) for frame in frames]).to(self.device)
        with torch.inference_mode():
            outputs = self.model(images, captions=[caption] * len(frames))
        self.counters["detector_calls"] += len(frames)
        self.counters["detector_forwards"] += 1
        all_logits = outputs["pred_logits"].float().cpu().sigmoid()  # (B, queries, 256)
        all_boxes = outputs["pred_boxes"].float().cpu()  # (B, queries, 4) cx, cy, w, h in 0..1
        tokenizer: Any = self.model.tokenizer  # a Hugging Face tokenizer, not a submodule
        tokenized = tokenizer(caption)
        found: list[list[Detection]] = []
        for frame, logits, boxes in zip(frames, all_logits, all_boxes, strict=True):
            keep = logits.max(dim=1)[0] > box_threshold
            phrases = [
                get_phrases_from_posmap(logit > text_threshold, tokenized, tokenizer).replace(".", "")
                for logit in logits[keep]
            ]
            found.append(self._detections(frame, boxes[keep], logits[keep].max(dim=1)[0], phrases, classes))
        return found

    def _pixels(self, frame: ModelFrame) -> torch.Tensor:
        w, h = frame.size
        pixels = cv2.resize(
            frame.image, detector_size(w, h, self.short_side, self.max_side), interpolation=cv2.INTER_LINEAR
        )
        image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0
        return (image - _MEAN) / _STD

    @staticmethod
    def _detections(
        frame: ModelFrame, boxes: torch.Tensor, scores: torch.Tensor, phrases: list[str], classes: Sequence[str]
    ) -> list[Detection]:
        w, h = frame.size
        found: list[Detection] = []
        for (cx, cy, bw, bh), score, phrase in zip(boxes.tolist(), scores.tolist(), phrases, strict=True):
            label = label_for(phrase, classes)
            if label is None:
                continue
            x0, y0 = np.clip([(cx - bw / 2) * w, (cy - bh / 2) * h], 0, [w, h])
            x1, y1 = np.clip([(cx + bw / 2) * w, (cy + bh / 2) * h], 0, [w, h])
            if x1 - x0 >= 1 and y1 - y0 >= 1:
                found.append(Detection((float(x0), float(y0), float(x1), float(y1)), label, float(score)))
        return found
