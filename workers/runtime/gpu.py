"""What a worker can say about its GPU. Reads torch only if the models already imported it."""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuFacts:
    name: str | None
    total_mb: int | None


def _cuda():
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda


def gpu_facts() -> GpuFacts:
    cuda = _cuda()
    if cuda is None:
        return GpuFacts(None, None)
    props = cuda.get_device_properties(cuda.current_device())
    return GpuFacts(props.name, props.total_memory // 2**20)


def used_mb() -> int | None:
    cuda = _cuda()
    if cuda is None:
        return None
    free, total = cuda.mem_get_info()
    return (total - free) // 2**20


def reset_peak() -> None:
    cuda = _cuda()
    if cuda is not None:
        cuda.reset_peak_memory_stats()


def peak_mb() -> int | None:
    """Peak memory PyTorch allocated since :func:`reset_peak` (the per-task figure)."""
    cuda = _cuda()
    return None if cuda is None else cuda.max_memory_allocated() // 2**20
