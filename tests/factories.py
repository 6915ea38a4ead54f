"""Test factories: tokens, small shots, a recording queue."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farm_config import Settings
from schemas import JobSpec
from workers.synthetic.shot import write_shot

if TYPE_CHECKING:
    from services.farm.worker_node import FarmWorker

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
        self.sent: list[tuple[int, str, str]] = []
        self.propagations: list[tuple[int, str]] = []

    def send(self, task_id: int, token: str, queue: str) -> None:
        self.sent.append((task_id, token, queue))

    def send_propagation(self, task_id: int, queue: str) -> None:
        self.propagations.append((task_id, queue))

    def depth(self, queues: list[str] = ()) -> dict[str, int]:  # type: ignore[assignment]
        counts = {q: 0 for q in ("gpu", "cpu", *queues)}
        for _, _, queue in self.sent:
            counts[queue] = counts.get(queue, 0) + 1
        return counts


class WorkerQueue(RecordingQueue):
    """A queue with a worker behind it for propagations, in this process: each runs as it is sent
    or, with ``background``, on a thread of its own, as a worker elsewhere would."""

    def __init__(self, settings: Settings, *, background: bool = False) -> None:
        super().__init__()
        self.settings, self.background = settings, background

    def send_propagation(self, task_id: int, queue: str) -> None:
        import threading

        super().send_propagation(task_id, queue)
        if self.background:
            threading.Thread(target=self._run, args=(task_id,), daemon=True).start()
        else:
            self._run(task_id)

    def _run(self, task_id: int) -> None:
        from services.composition import build_worker

        worker = build_worker(self.settings, register=False, broker=False)
        try:
            worker.run_propagation(task_id)
        finally:
            worker.close()


class DownQueue(RecordingQueue):
    def send(self, task_id: int, token: str, queue: str) -> None:
        from services.errors import QueueUnavailable

        raise QueueUnavailable("the queue is unreachable (test)")

    def send_propagation(self, task_id: int, queue: str) -> None:
        self.send(task_id, "", queue)

    def depth(self, queues: list[str] = ()) -> dict[str, int]:  # type: ignore[assignment]
        raise ConnectionError("broker down (test)")


def submit(settings: Settings, plate: Path, farm_root: Path, user: str = "alice", **extra: object) -> str:
    """Submit through the job service (validation, version folder, tasks), no API."""
    from farm_config import TokenGrant
    from services.composition import build_job_service, open_stores

    stores = open_stores(settings)
    try:
        service = build_job_service(settings, stores)
        spec = JobSpec(
            plate=str(plate),
            **({"prompt": "ball, box, car", "output_root": str(farm_root / "renders")} | extra),  # type: ignore[arg-type]
        )
        return service.submit(spec, TokenGrant(user, False)).id
    finally:
        stores.close()


def run_tasks(runtime: FarmWorker, job_id: str | None = None, limit: int = 500) -> int:
    """Run ready tasks in this process, in dispatch order, until none is ready; returns how many ran."""
    return runtime.run_inline(job_id, limit)


def finished_job(settings: Settings, plate: Path, farm_root: Path) -> str:
    """A job run to the end in this process (synthetic backend), for tests of what comes after."""
    from schemas import JobState
    from services.composition import build_worker

    job_id = submit(settings, plate, farm_root)
    worker = build_worker(settings, register=False, broker=False)
    try:
        run_tasks(worker, job_id)
        job = worker.store.get(job_id)
        assert job is not None and job.state == JobState.SUCCEEDED, job
    finally:
        worker.close()
    return job_id


def propagate(api: Any, settings: Settings, job_id: str, layer: str, token: str = ALICE) -> dict[str, Any]:
    """Ask for a propagation through the API, run it as a worker would (in this process), and
    return its progress once it is over."""
    from services.composition import build_worker

    asked = api.post(f"/jobs/{job_id}/refine/edits", json={"kind": "propagate", "layer": layer}, headers=auth(token))
    assert asked.status_code == 200, asked.text
    task = asked.json()["propagation"]
    assert task is not None and task["state"] == "queued", task
    worker = build_worker(settings, register=False, broker=False)
    try:
        worker.run_propagation(task["task_id"])
    finally:
        worker.close()
    done: dict[str, Any] = api.get(f"/jobs/{job_id}/refine/progress", headers=auth(token)).json()
    assert done["task_id"] == task["task_id"] and not done["running"], done
    return done


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on a free loopback port (for a real browser); yields its URL."""
    import uvicorn

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def relink_out_of_roots(frame: Path, outside: Path) -> None:
    """Replace a plate frame by a symlink to a copy of it in ``outside`` (a folder no root holds)."""
    outside.mkdir(exist_ok=True)
    (outside / "secret.exr").write_bytes(frame.read_bytes())
    frame.unlink()
    os.symlink(outside / "secret.exr", frame)
