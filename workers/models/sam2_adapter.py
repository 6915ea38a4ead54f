"""SAM 2.1 as the farm's segmenter and tracker, sharing one model and one feature cache.

Each frame's image-encoder output is computed once and reused by the per-frame box segmentation
and by every tracking window in both directions. The stock video predictor re-encodes every frame
of every window (≈9 encoder passes per frame with 20/5 windows forward and backward); here the
predictor reads features from :class:`FeatureCache` instead, and frames reach it lazily from the
plate (no JPEG folder, no whole-shot tensor). The cache lives in host memory within a byte budget;
a frame evicted and needed again is recomputed and counted.

This leans on two private parts of sam2 1.1.0 (pinned): the video predictor's
``_get_image_feature`` and the image predictor's feature fields. Both are kept in this file.
"""

from __future__ import annotations

import contextlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

from workers.models.interfaces import Detection, ModelFrame

VIDEO_PREDICTOR = f"{__name__}.CachedFeatureVideoPredictor"


def build_sam2_model(
    config: str, checkpoint: Path | None, device: str, image_size: int | None = None
) -> CachedFeatureVideoPredictor:
    """The SAM2 network as a video predictor that reads cached features; ``checkpoint=None`` keeps
    the random initialisation. The same instance also serves box prompts on single frames."""
    from sam2.build_sam import build_sam2_video_predictor

    overrides = [f"++model._target_={VIDEO_PREDICTOR}"]
    if image_size:
        overrides.append(f"++model.image_size={image_size}")
    return build_sam2_video_predictor(
        config, ckpt_path=str(checkpoint) if checkpoint else None, device=device, hydra_overrides_extra=overrides
    )


def autocast_for(device: str) -> contextlib.AbstractContextManager[None]:
    if device.startswith("cuda") and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


FrameKey = tuple[Path, int]


class FeatureCache:
    """Image-encoder outputs by frame, in host memory (float16) within ``budget_bytes``."""

    def __init__(self, model: SAM2VideoPredictor, device: str, budget_bytes: int, counters: Counter[str]) -> None:
        from sam2.utils.transforms import SAM2Transforms

        self.model, self.device, self.budget_bytes, self.counters = model, device, budget_bytes, counters
        self.transforms = SAM2Transforms(resolution=model.image_size, mask_threshold=0.0)
        self._features: OrderedDict[FrameKey, list[torch.Tensor]] = OrderedDict()
        self._bytes = 0
        self._seen: set[FrameKey] = set()
        self._pos_enc: list[torch.Tensor] | None = None  # the same for every frame: kept once

    @property
    def bytes_held(self) -> int:
        return self._bytes

    def backbone(self, frame: ModelFrame) -> dict[str, list[torch.Tensor]]:
        """``backbone_out`` for the frame on the model's device, encoding it only on a miss."""
        key = (frame.plate_path, frame.frame)
        fpn = self._features.get(key)
        if fpn is None:
            fpn = self._encode(frame, key)
        else:
            self._features.move_to_end(key)
            self.counters["feature_cache_hits"] += 1
        dtype = torch.float32
        assert self._pos_enc is not None
        return {
            "backbone_fpn": [t.to(self.device, dtype=dtype, non_blocking=True) for t in fpn],
            "vision_pos_enc": list(self._pos_enc),
        }

    def _encode(self, frame: ModelFrame, key: FrameKey) -> list[torch.Tensor]:
        image = self.transforms(frame.image)[None].to(self.device)
        with torch.inference_mode(), autocast_for(self.device):
            out = self.model.forward_image(image)
        self.counters["image_encoder_passes"] += 1
        if key in self._seen:
            self.counters["image_encoder_recomputes"] += 1
        self._seen.add(key)
        if self._pos_enc is None:
            self._pos_enc = [t.to(self.device, dtype=torch.float32) for t in out["vision_pos_enc"]]
        fpn = [t.detach().to("cpu", dtype=torch.float16) for t in out["backbone_fpn"]]
        size = sum(t.numel() * t.element_size() for t in fpn)
        while self._features and self._bytes + size > self.budget_bytes:
            _, old = self._features.popitem(last=False)
            self._bytes -= sum(t.numel() * t.element_size() for t in old)
        if size <= self.budget_bytes:
            self._features[key] = fpn
            self._bytes += size
        return fpn


class CachedFeatureVideoPredictor(SAM2VideoPredictor):
    """SAM2's video predictor, reading each frame's features from the state's feature source."""

    def _get_image_feature(self, inference_state: dict[str, Any], frame_idx: int, batch_size: int) -> tuple:
        backbone_out = inference_state["feature_source"](frame_idx)
        image = inference_state["placeholder_image"]  # the predictor never reads its pixels
        expanded = {
            "backbone_fpn": [f.expand(batch_size, -1, -1, -1) for f in backbone_out["backbone_fpn"]],
            "vision_pos_enc": [p.expand(batch_size, -1, -1, -1) for p in backbone_out["vision_pos_enc"]],
        }
        return (image.expand(batch_size, -1, -1, -1), *self._prepare_backbone_features(expanded))


def window_state(
    predictor: SAM2VideoPredictor, frames: Sequence[ModelFrame], cache: FeatureCache, offload_state: bool = False
) -> dict[str, Any]:
    """A fresh inference state for one window (what ``init_state`` builds, minus loading frames).
    ``offload_state`` keeps the per-object memory in host RAM (16 GB cards, or after an OOM)."""
    device = torch.device(cache.device)
    height, width = frames[0].image.shape[:2]
    return {
        "images": None,
        "num_frames": len(frames),
        "offload_video_to_cpu": False,
        "offload_state_to_cpu": offload_state,
        "video_height": height,
        "video_width": width,
        "device": device,
        "storage_device": torch.device("cpu") if offload_state else device,
        "point_inputs_per_obj": {},
        "mask_inputs_per_obj": {},
        "cached_features": {},
        "constants": {},
        "obj_id_to_idx": OrderedDict(),
        "obj_idx_to_id": OrderedDict(),
        "obj_ids": [],
        "output_dict_per_obj": {},
        "temp_output_dict_per_obj": {},
        "frames_tracked_per_obj": {},
        "feature_source": _latest_frame(lambda idx: cache.backbone(frames[idx])),
        "placeholder_image": torch.zeros(1, 3, 1, 1, device=device),
    }


def _latest_frame(
    fetch: Callable[[int], dict[str, list[torch.Tensor]]],
) -> Callable[[int], dict[str, list[torch.Tensor]]]:
    """``fetch`` remembering its latest frame: SAM2 asks for a frame's features once per object,
    and each ask copied them host→device and half→float again (8 MiB per object per frame)."""
    latest: dict[int, dict[str, list[torch.Tensor]]] = {}

    def features(idx: int) -> dict[str, list[torch.Tensor]]:
        if idx not in latest:
            latest.clear()
            latest[idx] = fetch(idx)
        return latest[idx]

    return features


class Sam2Segmenter:
    """Box-prompted masks on single frames, from cached features."""

    def __init__(self, model: SAM2VideoPredictor, cache: FeatureCache, name: str) -> None:
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.predictor = SAM2ImagePredictor(model)
        self.model, self.cache, self.name = model, cache, name
        self.counters = cache.counters  # encoder passes are counted by the cache

    def _set_features(self, frame: ModelFrame) -> None:
        # What SAM2ImagePredictor.set_image does after its encoder call (sam2 1.1.0).
        backbone_out = self.cache.backbone(frame)
        predictor, model = self.predictor, self.model
        predictor.reset_predictor()
        predictor._orig_hw = [frame.image.shape[:2]]
        _, vision_feats, _, _ = model._prepare_backbone_features(backbone_out)
        if model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
        # The predictor hard-codes sizes for 1024 px input; take them from the features instead.
        sizes = [tuple(f.shape[-2:]) for f in backbone_out["backbone_fpn"]]
        feats = [feat.permute(1, 2, 0).reshape(1, -1, *size) for feat, size in zip(vision_feats, sizes, strict=True)]
        predictor._features = {"image_embed": feats[-1], "high_res_feats": feats[:-1]}
        predictor._is_image_set = True

    def segment(self, frame: ModelFrame, boxes: Sequence[Detection]) -> np.ndarray:
        h, w = frame.image.shape[:2]
        if not boxes:
            return np.zeros((0, h, w), np.float32)
        with torch.inference_mode(), autocast_for(self.cache.device):
            self._set_features(frame)
            box_array = np.array([d.box for d in boxes], dtype=np.float32)
            logits, _, _ = self.predictor.predict(box=box_array, multimask_output=False, return_logits=True)
        self.counters["mask_decoder_calls"] += len(boxes)
        return np.asarray(logits, dtype=np.float32).reshape(len(boxes), -1, h, w)[:, 0]


class Sam2Refiner:
    """An artist's clicks on one frame, answered from the frame's cached features: the image
    encoder runs only the first time a frame is touched (the cache counts it), never per click.
    Its own image predictor, so box segmentation in between never leaves it the wrong frame."""

    def __init__(self, model: SAM2VideoPredictor, cache: FeatureCache, name: str) -> None:
        self.frames = Sam2Segmenter(model, cache, name)
        self.model, self.cache, self.name = model, cache, name
        self.counters: Counter[str] = Counter()
        self._frame: FrameKey | None = None

    def refine(
        self,
        frame: ModelFrame,
        points: np.ndarray,
        labels: np.ndarray,
        box: tuple[float, float, float, float] | None,
        mask_prompt: np.ndarray | None,
    ) -> np.ndarray:
        h, w = frame.image.shape[:2]
        with torch.inference_mode(), autocast_for(self.cache.device):
            key = (frame.plate_path, frame.frame)
            if self._frame != key:
                self.frames._set_features(frame)
                self._frame = key
            logits, _, _ = self.frames.predictor.predict(
                point_coords=points if len(points) else None,
                point_labels=labels if len(points) else None,
                box=np.array(box, np.float32) if box is not None else None,
                mask_input=self._low_res(mask_prompt) if mask_prompt is not None and mask_prompt.any() else None,
                multimask_output=False,
                return_logits=True,
            )
        self.counters["refine_calls"] += 1
        return np.asarray(logits, dtype=np.float32).reshape(-1, h, w)[0]

    def _low_res(self, mask: np.ndarray) -> np.ndarray:
        """The mask as SAM2's low-resolution mask prompt: logits at a quarter of the input size,
        over the whole (squashed) frame, as the model's own previous output would be."""
        side = self.model.image_size // 4
        coverage = cv2.resize(mask.astype(np.float32), (side, side), interpolation=cv2.INTER_AREA)
        coverage = np.clip(coverage, 1e-4, 1 - 1e-4)
        return np.log(coverage / (1 - coverage))[None].astype(np.float32)


class Sam2Describer:
    """Image-encoder features pooled inside a mask: the lowest-resolution level of the backbone
    (SAM2's image embedding, 1/16 of the input), averaged with the mask's area coverage of each
    feature cell as weights, then scaled to unit length. The frame's features come from the shared
    cache, which the track stage has just filled, so describing a layer's ends costs no encoder
    pass while the shot fits the cache."""

    def __init__(self, cache: FeatureCache, name: str) -> None:
        self.cache, self.name = cache, name
        self.counters: Counter[str] = Counter()

    def describe(self, frame: ModelFrame, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            embedding = self.cache.backbone(frame)["backbone_fpn"][-1][0].float()  # (C, H, W)
        channels, height, width = embedding.shape
        # the encoder saw the frame squashed to a square: the mask is squashed the same way
        weights = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
        self.counters["appearance_descriptors"] += 1
        if weights.sum() <= 0:
            return np.zeros(channels, np.float32)
        w = torch.from_numpy(weights).to(embedding.device)
        pooled = (embedding * w).sum(dim=(1, 2)) / w.sum()
        vector = pooled.cpu().numpy().astype(np.float32)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector


class Sam2Tracker:
    """Mask-prompted tracking through one window, state fresh per window."""

    def __init__(
        self, model: CachedFeatureVideoPredictor, cache: FeatureCache, name: str, offload_state: bool = False
    ) -> None:
        self.model, self.cache, self.name, self.offload_state = model, cache, name, offload_state
        self.counters: Counter[str] = Counter()

    def track(
        self, frames: Sequence[ModelFrame], prompts: dict[int, np.ndarray]
    ) -> Iterator[tuple[int, dict[int, np.ndarray]]]:
        if not frames or not prompts:
            return
        state = window_state(self.model, frames, self.cache, self.offload_state)
        # A backward window arrives as frames in reverse order: tracking it forward is the same.
        with torch.inference_mode(), autocast_for(self.cache.device):
            for obj_id, mask in prompts.items():
                self.model.add_new_mask(state, frame_idx=0, obj_id=obj_id, mask=torch.from_numpy(mask))
            for idx, obj_ids, logits in _quietly(
                self.model.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=len(frames) - 1)
            ):
                self.counters["tracking_steps"] += 1
                self.counters["object_frames_tracked"] += len(obj_ids)
                out = logits[:, 0].float().cpu().numpy()
                yield frames[idx].frame, {oid: out[i] for i, oid in enumerate(obj_ids)}
        del state

    def sweep(self, frames: Sequence[ModelFrame]) -> Sam2Sweep:
        return Sam2Sweep(self.model, frames, self.cache, self.counters, self.offload_state)


class Sam2Sweep:
    """One pass over a run of frames with one SAM2 state, prompted again where the caller says.

    The stock predictor cannot add objects or prompts once propagation has started, so this steps
    SAM2's per-object inference itself (``_run_single_frame_inference``, as ``propagate_in_video``
    does): each object keeps its own output dict; a prompt is a conditioning frame (its mask is
    used as the output and encoded into memory, ``use_mask_input_as_output_without_sam``), every
    other frame is tracked from memory. Memory stays bounded over any length of shot: per object
    only the outputs SAM2 can still attend to are kept, the last ``KEEP_RECENT`` tracked frames
    (memory frames and object pointers) and the ``KEEP_PROMPTS`` latest prompts."""

    KEEP_RECENT = 16  # SAM2 reads 6 memory frames and 16 object pointers back (num_maskmem 7, max_obj_ptrs 16)
    KEEP_PROMPTS = 2  # conditioning frames attended to: the latest refresh and the one before

    def __init__(
        self,
        model: CachedFeatureVideoPredictor,
        frames: Sequence[ModelFrame],
        cache: FeatureCache,
        counters: Counter[str],
        offload_state: bool = False,
    ) -> None:
        self.model, self.frames, self.cache, self.counters = model, frames, cache, counters
        self.state = window_state(model, frames, cache, offload_state)
        self.index = -1
        self.outputs: dict[int, dict[str, dict[int, Any]]] = {}

    def advance(self) -> tuple[int, dict[int, np.ndarray]]:
        self.index += 1
        frame = self.frames[self.index].frame
        if not self.outputs:
            return frame, {}
        with torch.inference_mode(), autocast_for(self.cache.device):
            predictions = [self._step(outputs, None) for outputs in self.outputs.values()]
            logits = self._logits(predictions)
        self.counters["tracking_steps"] += 1
        self.counters["object_frames_tracked"] += len(self.outputs)
        return frame, dict(zip(self.outputs, logits, strict=True))

    def prompt(self, prompts: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        if not prompts:
            return {}
        predictions = []
        with torch.inference_mode(), autocast_for(self.cache.device):
            for obj_id, mask in prompts.items():
                outputs = self.outputs.setdefault(obj_id, {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}})
                predictions.append(self._step(outputs, self._mask_input(mask)))
            logits = self._logits(predictions)
        self.counters["sweep_prompts"] += len(prompts)
        return dict(zip(prompts, logits, strict=True))

    def drop(self, obj_ids: Iterable[int]) -> None:
        for obj_id in obj_ids:
            self.outputs.pop(obj_id, None)

    def _step(self, outputs: dict[str, dict[int, Any]], mask_input: torch.Tensor | None) -> torch.Tensor:
        """One object on the current frame: tracked from memory, or (``mask_input``) a prompt,
        stored as a conditioning frame; its mask logits at SAM2's output size."""
        fresh = not outputs["cond_frame_outputs"] and not outputs["non_cond_frame_outputs"]
        current, masks = self.model._run_single_frame_inference(
            inference_state=self.state,
            output_dict=outputs,
            frame_idx=self.index,
            batch_size=1,
            is_init_cond_frame=fresh and mask_input is not None,
            point_inputs=None,
            mask_inputs=mask_input,
            reverse=False,
            run_mem_encoder=True,
        )
        if mask_input is None:
            outputs["non_cond_frame_outputs"][self.index] = current
        else:
            outputs["non_cond_frame_outputs"].pop(self.index, None)
            outputs["cond_frame_outputs"][self.index] = current
        self._forget(outputs)
        return masks

    def _mask_input(self, mask: np.ndarray) -> torch.Tensor:
        """The mask at the model's input size, as ``add_new_mask`` prepares it."""
        tensor = torch.from_numpy(mask)[None, None].float().to(self.state["device"])
        size = self.model.image_size
        if tensor.shape[-2:] != (size, size):
            tensor = torch.nn.functional.interpolate(
                tensor, size=(size, size), align_corners=False, mode="bilinear", antialias=True
            )
            tensor = (tensor >= 0.5).float()
        return tensor

    def _forget(self, outputs: dict[str, dict[int, Any]]) -> None:
        recent = outputs["non_cond_frame_outputs"]
        for idx in [i for i in recent if i <= self.index - self.KEEP_RECENT]:
            del recent[idx]
        prompts = outputs["cond_frame_outputs"]
        for idx in sorted(prompts)[: -self.KEEP_PROMPTS]:
            del prompts[idx]

    def _logits(self, predictions: list[torch.Tensor]) -> np.ndarray:
        _, video = self.model._get_orig_video_res_output(self.state, torch.cat(predictions, dim=0))
        return video[:, 0].float().cpu().numpy()


def _quietly(frames: Iterator[Any]) -> Iterator[Any]:
    """sam2 draws a tqdm bar per window; in a worker log that is noise, so turn it off here."""
    from functools import partialmethod

    from tqdm import tqdm

    original = tqdm.__init__
    tqdm.__init__ = partialmethod(original, disable=True)
    try:
        yield from frames
    finally:
        tqdm.__init__ = original
