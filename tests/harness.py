"""A live farm on loopback for integration tests: a real redis-server (restartable, AOF on), the API
under uvicorn, and real Celery worker processes that a test can start, kill and replace."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from schemas import JobStatus
from services.client import FarmClient
from services.embedded import api_command, worker_command, worker_env
from tests.factories import ALICE, TOKENS

MATTEFARM = [sys.executable, "-m", "services.cli"]
_redis_db = itertools.count(1)  # each farm on the shared server gets its own database: no stray messages


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


class RedisServer:
    """redis-server as production runs it (AOF everysec, noeviction), on a fixed port and folder."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail("redis-server is missing: scripts/install.sh installs it")
            pytest.skip("redis-server is not installed")
        self.binary, self.workdir, self.port = binary, workdir, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir)]
        args += ["--appendonly", "yes", "--appendfsync", "everysec", "--maxmemory-policy", "noeviction", "--save", ""]
        self.proc = subprocess.Popen([self.binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if not _wait_port(self.port, 10):
            self.proc.kill()
            pytest.fail("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: Redis flushes the AOF and exits
            self.proc.wait(timeout=10)


@dataclass
class LiveFarm:
    root: Path
    env: dict[str, str]
    logs: Path
    url: str = ""
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_api(self) -> None:
        port = int(self.env["MATTEFARM_API_PORT"])
        self._spawn("api", api_command("127.0.0.1", port), {})
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.processes["api"].poll() is not None:
                pytest.fail("the API did not start:\n" + self.log("api")[-3000:])
            time.sleep(0.2)

    def start_worker(self, name: str, queues: str = "gpu,cpu", **extra_env: str) -> subprocess.Popen[bytes]:
        node = f"{name}@localhost"
        env = worker_env(node) | {f"MATTEFARM_{k.upper()}": v for k, v in extra_env.items()}
        return self._spawn(name, worker_command(queues, node), env)

    def _spawn(self, name: str, command: list[str], extra: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.logs / f"{name}.log").open("ab") as log:  # the child keeps its own copy of the fd
            proc = subprocess.Popen(
                command, env=self.env | extra, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the process group: with SIGKILL the worker and its pool child die at once."""
        proc = self.processes[name]
        os.killpg(proc.pid, sig)
        proc.wait(timeout=60)

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self, token: str = ALICE) -> FarmClient:
        return FarmClient(self.url, token)

    def cli(self, *args: str, token: str = ALICE) -> subprocess.CompletedProcess[str]:
        env = self.env | {"MATTEFARM_API_URL": self.url, "MATTEFARM_TOKEN": token, "COLUMNS": "200"}
        return subprocess.run([*MATTEFARM, *args], env=env, capture_output=True, text=True, timeout=120)

    def wait_for(self, job_id: str, until: Callable[[JobStatus], bool], timeout: float = 120) -> JobStatus:
        with self.client() as client:
            deadline = time.monotonic() + timeout
            while True:
                job = client.job(job_id)
                if until(job):
                    return job
                if time.monotonic() > deadline:
                    pytest.fail(f"job {job_id} stuck in {job.state}: {job.error}\n" + self.log_tails())
                time.sleep(0.1)

    def log_tails(self) -> str:
        return "\n".join(f"--- {n}.log ---\n{self.log(n)[-2500:]}" for n in self.processes)

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextmanager
def live_farm(root: Path, redis: RedisServer, database_url: str, **settings: str) -> Iterator[LiveFarm]:
    """The API started; workers are the test's to start. ``settings``: MATTEFARM_* overrides."""
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith("MATTEFARM_")}
        | {
            "MATTEFARM_BROKER_URL": redis.url(next(_redis_db) % 16),
            "MATTEFARM_DATABASE_URL": database_url,
            "MATTEFARM_DATA_DIR": str(root / ".mattefarm"),
            "MATTEFARM_READ_ROOTS": str(root),
            "MATTEFARM_WRITE_ROOTS": str(root),
            "MATTEFARM_TOKENS": ",".join(TOKENS),
            "MATTEFARM_MODEL_BACKEND": "synthetic",
            "MATTEFARM_API_PORT": str(free_port()),
            # fast failure detection for tests; production defaults are in farm_config/settings.py
            "MATTEFARM_HEARTBEAT_S": "0.3",
            "MATTEFARM_HEARTBEAT_TIMEOUT_S": "3",
            "MATTEFARM_LOST_MESSAGE_S": "3",
            "MATTEFARM_DISPATCH_EVERY_S": "0.3",
            "MATTEFARM_RETRY_BACKOFF_S": "0.2",
            "MATTEFARM_REVIEW": "false",
        }
        | {f"MATTEFARM_{k.upper()}": v for k, v in settings.items()}
    )
    logs = root / "logs"
    logs.mkdir(exist_ok=True)
    farm = LiveFarm(root, env, logs)
    try:
        farm.start_api()
        yield farm
    finally:
        farm.stop()
