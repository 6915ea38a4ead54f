"""Lighter settings for a retry after a GPU out-of-memory error, one step per failed attempt."""

from __future__ import annotations

from farm_config.settings import Sam2Size, Settings

SAM2_SMALLER: dict[Sam2Size, Sam2Size] = {"large": "base_plus", "base_plus": "small", "small": "tiny", "tiny": "tiny"}


def lighter_settings(settings: Settings, level: int, allow_smaller_model: bool) -> tuple[Settings, list[str]]:
    """Settings for ``level`` steps lighter, and what changed, in words for the task log."""
    if level <= 0:
        return settings, []
    changes: dict[str, object] = {}
    said: list[str] = []
    cache = max(0, settings.feature_cache_mb >> level)
    changes["feature_cache_mb"] = cache
    said.append(f"feature cache {settings.feature_cache_mb} → {cache} MB")
    changes["offload_state_to_cpu"] = True
    said.append("tracking state offloaded to host memory")
    if allow_smaller_model and level >= 2:
        size = settings.sam2_size
        for _ in range(level - 1):
            size = SAM2_SMALLER[size]
        if size != settings.sam2_size:
            changes["sam2_size"] = size
            said.append(f"SAM2 {settings.sam2_size} → {size}")
    return settings.model_copy(update=changes), said
