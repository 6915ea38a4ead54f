"""What a worker reports about itself."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class WorkerInfo(BaseModel):
    hostname: str
    pid: int
    queues: list[str]
    device: str
    gpu_name: str | None = None
    gpu_memory_total_mb: int | None = None
    gpu_memory_used_mb: int | None = None
    models: list[str] = []
    current_job: str | None = None
    heartbeat_at: datetime | None = None
