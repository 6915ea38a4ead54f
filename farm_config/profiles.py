"""Worker profiles: per-GPU-class defaults for model size, precision, batch and offload."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Precision = Literal["fp32", "bf16", "fp16"]


@dataclass(frozen=True)
class WorkerProfile:
    name: str
    queue: str
    gpu_memory_gb: float
    sam2_size: str
    precision: Precision
    detector_batch: int
    offload_state_to_cpu: bool


PROFILES: dict[str, WorkerProfile] = {
    # Image Engine's reference worker: 16 GB, so SAM2 large only with state offload.
    "a4000": WorkerProfile("a4000", "gpu.a4000", 16.0, "large", "fp16", 4, True),
    "h100": WorkerProfile("h100", "gpu.h100", 80.0, "large", "bf16", 16, False),
    "cpu": WorkerProfile("cpu", "cpu", 0.0, "tiny", "fp32", 1, False),
}


def get_profile(name: str) -> WorkerProfile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise ValueError(f"unknown worker profile {name!r}; choose one of: {known}") from None
