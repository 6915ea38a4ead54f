"""A worker process's models: built once after the fork, one set per backend/size/weights (an
out-of-memory retry may ask for a smaller SAM2)."""

from __future__ import annotations

import logging
import time

from farm_config.settings import Settings
from workers.models.builder import build_models
from workers.models.interfaces import ModelSet

log = logging.getLogger(__name__)


def models_key(settings: Settings) -> str:
    return f"{settings.model_backend}/{settings.sam2_size}/{settings.weights}"


class ModelCache:
    def __init__(self) -> None:
        self._models: dict[str, ModelSet] = {}

    def get(self, settings: Settings) -> ModelSet:
        """The models for these settings, built on first use."""
        key = models_key(settings)
        if key not in self._models:
            started = time.monotonic()
            self._models[key] = build_models(settings)
            log.info("models %s loaded in %.1fs", key, time.monotonic() - started)
        return self._models[key]

    def put(self, settings: Settings, models: ModelSet) -> None:
        """Use an already built set (tests build real architectures once per module)."""
        self._models[models_key(settings)] = models

    def names(self) -> list[str]:
        return sorted(self._models)
