"""The embedded farm: the API and one worker on this machine, SQLite and a filesystem broker,
nothing to install. The worker is the same Celery worker production runs; only the transport
differs.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from farm_config.celery_config import prepare_local_broker
from farm_config.settings import Settings
from services.paths import kept_secret


def worker_command(queues: str, name: str, concurrency: int = 1, loglevel: str = "INFO") -> list[str]:
    """One worker node; run it with ``MATTEFARM_WORKER_NODE=name`` (see :func:`worker_env`)."""
    # prefork, not solo: time limits and a killed task's process need a parent to survive it.
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app:app", "worker",
        "-Q", queues, "-c", str(concurrency), "-P", "prefork", "-E", "-n", name,
        "--loglevel", loglevel, "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def worker_env(name: str) -> dict[str, str]:
    return {"MATTEFARM_WORKER_NODE": name}


def api_command(host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "uvicorn", "services.api.app:create_app", "--factory",
        "--host", host, "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip


def ensure_dev_token(settings: Settings) -> str:
    """The token the embedded farm accepts, made once and kept in data_dir (mode 0600)."""
    return kept_secret(settings.dev_token_path, lambda: secrets.token_urlsafe(24))


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) != 0


@dataclass
class EmbeddedFarm:
    settings: Settings
    env: dict[str, str] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    @property
    def log_dir(self) -> Path:
        return self.settings.data_dir / "logs"

    def start(self, timeout: float = 60.0) -> str:
        """Start the API and the worker; return the token to use."""
        s = self.settings
        if not port_is_free(s.api_host, s.api_port):
            raise RuntimeError(f"port {s.api_port} is in use; stop the other farm or set MATTEFARM_API_PORT")
        prepare_local_broker(s)
        token = ensure_dev_token(s) if not s.tokens else s.tokens[0].split(":")[0]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = os.environ | self.env | {"MATTEFARM_DATA_DIR": str(s.data_dir.resolve())}
        node = f"embedded@{socket.gethostname()}"
        for name, cmd, extra in (
            ("api", api_command(s.api_host, s.api_port), {}),
            ("worker", worker_command(",".join(s.consumed_queues), node), worker_env(node)),
        ):
            with (self.log_dir / f"{name}.log").open("ab") as log:  # the child keeps its own fd
                self.processes.append(subprocess.Popen(cmd, env=env | extra, stdout=log, stderr=subprocess.STDOUT))
        self._wait_healthy(timeout)
        return token

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.processes:
                if proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"a farm process exited early; see {self.log_dir}/*.log")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the API did not come up in {timeout:.0f}s; see {self.log_dir}/api.log")

    def running(self) -> bool:
        return bool(self.processes) and all(proc.poll() is None for proc in self.processes)

    def stop(self, grace: float = 20.0) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
