"""Test factories: tokens, small shots, a recording queue."""

from __future__ import annotations

from pathlib import Path

from workers.synthetic.shot import write_shot

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"
ADMIN = "ops-token-0123456789ab"
TOKENS = [f"{ALICE}:alice", f"{BOB}:bob", f"{ADMIN}:ops:admin"]


def auth(token: str = ALICE) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def write_small_shot(root: Path, name: str, frames: int = 8, **kwargs: int) -> Path:
    """A quick shot: 160×96, three objects."""
    return write_shot(
        root,
        name,
        frames=frames,
        width=kwargs.get("width", 160),
        height=kwargs.get("height", 96),
        objects=kwargs.get("objects", 3),
        seed=kwargs.get("seed", 1),
    )


class RecordingQueue:
    """Stands in for the broker where a test is about the API, not the queue."""

    def __init__(self) -> None:
        self.enqueued: list[tuple[str, int]] = []

    def enqueue(self, job_id: str, priority: int) -> None:
        self.enqueued.append((job_id, priority))

    def depth(self) -> dict[str, int]:
        return {"gpu": len(self.enqueued), "cpu": 0}


class DownQueue:
    def enqueue(self, job_id: str, priority: int) -> None:
        from services.errors import QueueUnavailable

        raise QueueUnavailable("the queue is unreachable (test)")
