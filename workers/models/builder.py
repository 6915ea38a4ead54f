"""The one place that turns settings into loaded models (called once per worker process)."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from farm_config.model_registry import MODELS, sam2_spec
from farm_config.settings import Settings
from workers.models.checksums import verify_recorded
from workers.models.interfaces import ModelSet

if TYPE_CHECKING:  # the synthetic models load only when asked for (they read truth with OpenEXR)
    from workers.models.synthetic import SyntheticNoise

log = logging.getLogger(__name__)


class ModelsMissingError(RuntimeError):
    """Checkpoints are not in the models directory."""


def resolve_device(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def build_models(settings: Settings) -> ModelSet:
    if settings.model_backend == "synthetic":
        return build_synthetic(settings.synthetic_delay_s)
    if settings.model_backend == "shadow":
        return build_shadow(_build_sam2_gdino(settings), build_synthetic())
    return _build_sam2_gdino(settings)


def build_shadow(real: ModelSet, truth: ModelSet) -> ModelSet:
    """Real networks for the cost, ground truth for the decisions (benchmarks on synthetic shots)."""
    from workers.models.shadow import ShadowDetector, ShadowSegmenter, ShadowTracker

    assert real.tracker is not None and truth.tracker is not None
    return ModelSet(
        detector=ShadowDetector(real.detector, truth.detector),
        segmenter=ShadowSegmenter(real.segmenter, truth.segmenter),
        tracker=ShadowTracker(real.tracker, truth.tracker),
        backend="shadow",
        weights=real.weights,
        device=real.device,
        checkpoints=real.checkpoints,
    )


def build_synthetic(delay_s: float = 0.0, noise: SyntheticNoise | None = None) -> ModelSet:
    from workers.models.synthetic import (
        SyntheticDetector,
        SyntheticNoise,
        SyntheticRefiner,
        SyntheticSegmenter,
        SyntheticTracker,
    )
    from workers.synthetic.truth import TruthReader

    truth, noise = TruthReader(), noise or SyntheticNoise()
    return ModelSet(
        detector=SyntheticDetector(truth, noise, delay_s),
        segmenter=SyntheticSegmenter(truth, noise, delay_s),
        tracker=SyntheticTracker(truth, noise),
        backend="synthetic",
        weights="ground-truth",
        device="cpu",
        refiner=SyntheticRefiner(truth, noise),
    )


def missing_checkpoints(settings: Settings) -> list[str]:
    """What a worker with these settings would fail to load, each with the fix; empty when it
    would load (or needs no files: the synthetic backend, random weights). Reads no file."""
    if settings.model_backend != "sam2-gdino" or settings.weights == "random":
        return []
    missing = []
    for spec in (sam2_spec(settings.sam2_size), MODELS["groundingdino-swint"]):  # as ``_checkpoint`` reads them
        if not (settings.models_dir / spec.checkpoint.name).exists():
            missing.append(f"{spec.description}: {spec.checkpoint.name} is not in {settings.models_dir}")
    return missing


def _checkpoint(settings: Settings, key: str) -> Path:
    spec = MODELS[key]
    path = settings.models_dir / spec.checkpoint.name
    if not path.exists():
        raise ModelsMissingError(
            f"{spec.description} is not in {settings.models_dir}; run `mattefarm models download` "
            "on a machine with network access, or set MATTEFARM_WEIGHTS=random for a speed test"
        )
    return path


def _build_sam2_gdino(settings: Settings) -> ModelSet:
    from workers.models.gdino import GroundingDinoDetector, build_gdino_model
    from workers.models.sam2_adapter import (
        FeatureCache,
        Sam2Describer,
        Sam2Refiner,
        Sam2Segmenter,
        Sam2Tracker,
        build_sam2_model,
    )
    from workers.models.text_encoder import random_text_encoder

    device = resolve_device(settings.device)
    sam2 = sam2_spec(settings.sam2_size)
    gdino = MODELS["groundingdino-swint"]
    checkpoints: dict[str, str] = {}
    if settings.weights == "random":
        import torch

        torch.manual_seed(0)  # the same untrained networks every time: benchmarks repeat
        sam2_ckpt = gdino_ckpt = None
        text_encoder = random_text_encoder(settings.models_dir, settings.gdino_text_encoder)
        checkpoints = {sam2.key: "random", gdino.key: "random", settings.gdino_text_encoder: "random"}
        log.warning("RANDOM WEIGHTS: models are untrained; masks are meaningless (speed tests only)")
    else:
        sam2_ckpt, gdino_ckpt = _checkpoint(settings, sam2.key), _checkpoint(settings, gdino.key)
        text_encoder = settings.models_dir / "bert-base-uncased"
        for spec in (sam2, gdino, MODELS["bert-base-uncased"]):
            for file in spec.files:
                checkpoints[file.name] = verify_recorded(settings.models_dir, file.name)
    sam2_model = build_sam2_model(sam2.config, sam2_ckpt, device, settings.sam2_image_size)
    features = FeatureCache(sam2_model, device, settings.feature_cache_mb << 20, Counter())
    return ModelSet(
        detector=GroundingDinoDetector(
            build_gdino_model(gdino.config, gdino_ckpt, text_encoder, device),
            device,
            gdino.key,
            short_side=settings.detector_short_side,
            max_side=settings.detector_max_side,
            batch_frames=settings.detector_batch_frames or (4 if device.startswith("cuda") else 1),
        ),
        segmenter=Sam2Segmenter(sam2_model, features, sam2.key),
        tracker=Sam2Tracker(sam2_model, features, sam2.key, settings.offload_state_to_cpu),
        refiner=Sam2Refiner(sam2_model, features, sam2.key),
        describer=Sam2Describer(features, sam2.key),
        backend="sam2-gdino",
        weights=settings.weights,
        device=device,
        checkpoints=checkpoints,
    )
