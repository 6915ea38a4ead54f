"""The production shape on loopback: a real Redis broker, a real Celery worker process, the API
under uvicorn, PostgreSQL as the store, and the ``mattefarm`` CLI talking to it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from schemas import JobState, StageState
from services.client import FarmClient
from services.embedded import api_command, worker_command
from tests.conftest import free_port, fresh_database
from tests.factories import ALICE, BOB, TOKENS, write_small_shot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
MATTEFARM = [sys.executable, "-m", "services.cli"]


@dataclass
class Farm:
    url: str
    root: Path
    env: dict[str, str]
    logs: Path

    def cli(self, *args: str, token: str = ALICE) -> subprocess.CompletedProcess[str]:
        env = self.env | {"MATTEFARM_API_URL": self.url, "MATTEFARM_TOKEN": token, "COLUMNS": "200"}
        return subprocess.run([*MATTEFARM, *args], env=env, capture_output=True, text=True, timeout=120)

    def client(self, token: str = ALICE) -> FarmClient:
        return FarmClient(self.url, token)


@pytest.fixture(scope="module")
def farm(redis_url: str, postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    root = tmp_path_factory.mktemp("redis_farm").resolve()
    write_small_shot(root, "sh020", frames=24)
    port = free_port()
    with fresh_database(postgres_server) as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MATTEFARM_")} | {
            "MATTEFARM_BROKER_URL": redis_url,
            "MATTEFARM_DATABASE_URL": database_url,
            "MATTEFARM_DATA_DIR": str(root / ".mattefarm"),
            "MATTEFARM_READ_ROOTS": str(root),
            "MATTEFARM_WRITE_ROOTS": str(root),
            "MATTEFARM_TOKENS": ",".join(TOKENS),
            "MATTEFARM_MODEL_BACKEND": "synthetic",
            "MATTEFARM_SYNTHETIC_DELAY_S": "0.08",
            "MATTEFARM_API_PORT": str(port),
        }
        logs = root / "logs"
        logs.mkdir()
        processes: list[subprocess.Popen[bytes]] = []
        try:
            for name, cmd in (
                ("api", api_command("127.0.0.1", port)),
                ("worker", worker_command("gpu,cpu", "test-worker@localhost")),
            ):
                with (logs / f"{name}.log").open("wb") as log:  # the child keeps its own copy of the fd
                    processes.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, processes, logs)
            yield Farm(url, root, env, logs)
        finally:
            for proc in processes:
                proc.terminate()
            for proc in processes:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _wait_healthy(url: str, processes: list[subprocess.Popen[bytes]], logs: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            pytest.fail("the farm did not start:\n" + (logs / "api.log").read_text()[-3000:])
        time.sleep(0.2)


def plate(farm: Farm) -> str:
    return str(farm.root / "sh020" / "plate" / "sh020.####.exr")


def test_a_job_runs_end_to_end_through_redis_and_a_worker_process(farm: Farm) -> None:
    submitted = farm.cli(
        "submit",
        plate(farm),
        "--prompt",
        "ball, box, car",
        "--output-root",
        str(farm.root / "renders"),
        "--show",
        "demo",
        "--priority",
        "70",
        "--colourspace",
        "linear",
        "--frames",
        "1001-1024",
        "--skip-missing",
    )
    assert submitted.returncode == 0, submitted.stderr + submitted.stdout
    job_id = submitted.stdout.split("submitted ", 1)[1].split()[0]

    seen_midway = None
    with farm.client() as client:
        deadline = time.monotonic() + 120
        while True:
            job = client.job(job_id)
            running = [s for s in job.stages if s.state == StageState.RUNNING and 0 < s.frames_done < s.frames_total]
            if running and seen_midway is None:
                seen_midway = (running[0].name, running[0].frames_done, running[0].frames_total)
            if job.state.is_final or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    worker_log = (farm.logs / "worker.log").read_text()
    assert job.state == JobState.SUCCEEDED, f"{job.error}\n{worker_log[-3000:]}"
    assert job.spec.colourspace == "linear" and job.spec.on_missing_frames == "skip" and job.missing_frames == []
    assert job.review is not None and Path(job.review.movie).is_file()  # the cpu-queue export made it
    assert seen_midway is not None, "status never showed a stage part-way through"
    assert seen_midway[2] in (24, 10)

    # Per-stage timings and model-call counts when done.
    assert [s.frames_done for s in job.stages] == [24, 24, 10, 24]  # track counts windows: 5 + 5
    assert all(s.seconds and s.seconds > 0 for s in job.stages)
    # A frame with no boxes needs no encoder pass.
    assert job.counters.detector_calls == 24 and 0 < job.counters.image_encoder_passes <= 24
    assert job.counters.frames_written == 24 and job.attempts == 1
    assert len(list(Path(job.output_dir).glob("sh020_roto_v001.*.exr"))) == 24
    # Both queues were used: detection on gpu, EXR packing on cpu.
    assert "mattefarm.run_job" in worker_log and "mattefarm.export_job" in worker_log

    status = farm.cli("status", job_id)
    assert status.returncode == 0 and "succeeded" in status.stdout and "detector 24" in status.stdout
    listed = farm.cli("jobs", "--show", "demo")
    assert job_id in listed.stdout and "1 of 1 job(s)" in listed.stdout
    followed = farm.cli("status", job_id, "--follow")
    assert followed.returncode == 0 and "24/24" in followed.stdout

    # Prometheus sees the finished job, and Redis answers for the queue depth (nothing left waiting).
    metrics = httpx.get(f"{farm.url}/metrics", timeout=10).text
    assert 'mattefarm_jobs{state="succeeded"} 1.0' in metrics
    assert "mattefarm_broker_up 1.0" in metrics and 'mattefarm_queue_messages{queue="gpu"} 0.0' in metrics


def test_cancel_a_running_job_from_the_cli(farm: Farm) -> None:
    with farm.client() as client:
        job = client.submit({"plate": plate(farm), "prompt": "ball", "output_root": str(farm.root / "renders")})
        deadline = time.monotonic() + 60
        while client.job(job.id).state != JobState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = farm.cli("cancel", job.id, token=BOB)
        assert refused.returncode == 1 and "belongs to alice" in refused.stderr
        canceled = farm.cli("cancel", job.id, "--reason", "wrong prompt")
        assert canceled.returncode == 0, canceled.stderr
        final = client.wait(job.id, timeout=60, poll=0.1)
    assert final.state == JobState.CANCELED
    assert not list(Path(final.output_dir).glob("*.exr"))


def test_cli_errors_are_one_readable_line(farm: Farm) -> None:
    bad = farm.cli(
        "submit", str(farm.root / "nowhere" / "x.####.exr"), "--prompt", "ball", "--output-root", str(farm.root)
    )
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr and "plate:" in bad.stderr and "no files match" in bad.stderr
    unauthorised = farm.cli("jobs", token="not-a-real-token-at-all")
    assert unauthorised.returncode == 1 and "token" in unauthorised.stderr
    unreachable = subprocess.run(
        [*MATTEFARM, "jobs"],
        capture_output=True,
        text=True,
        timeout=60,
        env=farm.env | {"MATTEFARM_API_URL": "http://127.0.0.1:9", "MATTEFARM_TOKEN": ALICE},
    )
    assert unreachable.returncode == 3 and "can't reach the farm" in unreachable.stderr
