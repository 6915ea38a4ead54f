"""``mattefarm api``'s processes: one listening socket per process, so the kernel spreads
connections over them.

uvicorn's own ``workers=N`` hands one socket to every process, and whichever process is in
``accept`` first takes the connections arriving together: measured, all 20 keep-alive connections
of a 20-client load landed on one of two processes in half the runs (63 submits/s and p99
500 ms, against 135 submits/s when they split 7/13), the other process idle. With
``SO_REUSEPORT`` each process binds its own socket and the kernel hashes each new connection to
one of them, so the load is shared whatever the timing. A process that dies is started again.
"""

from __future__ import annotations

import multiprocessing
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

APP = "services.api.app:create_app"
RESTART_PAUSE_S = 1.0  # a process that dies at once (a bad setting) is not restarted in a tight loop
EARLY_EXIT_S = 20.0  # a process that ends this soon after it started failed to start
EARLY_EXITS_TO_GIVE_UP = 3  # in a row: the settings or the database are wrong, not the process


class ApiWontStart(RuntimeError):
    """The API's processes keep ending as they start (their log says why)."""


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP listener with TCP_NODELAY, which accepted connections inherit: without it every
    response waits ~40 ms for a delayed ACK (measured: /healthz 48 ms, 5 ms with it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def check_port_free(host: str, port: int) -> None:
    """OSError if something listens on ``host:port`` already. Sockets with SO_REUSEPORT share a
    port silently, so without this check a second farm on the port would split the first's
    traffic; a plain bind fails while any listener holds it."""
    probe = listening_socket(host, port, reuse_port=False)
    probe.close()


def _serve_one(host: str, port: int, access_log: bool) -> None:
    """One API process: its own socket on the shared port, one uvicorn server."""
    import uvicorn

    sock = listening_socket(host, port, reuse_port=True)
    config = uvicorn.Config(APP, factory=True, access_log=access_log)
    uvicorn.Server(config).run(sockets=[sock])


@dataclass
class ApiProcesses:
    """``count`` API processes on one port, kept running until a stop signal."""

    host: str
    port: int
    count: int
    access_log: bool = False
    log: Callable[[str], None] = print

    def run(self) -> None:
        check_port_free(self.host, self.port)
        ctx = multiprocessing.get_context("spawn")  # no fork of a parent that imported half the farm
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        processes: list[BaseProcess] = []
        started: list[float] = []
        for _ in range(self.count):
            processes.append(self._start(ctx))
            started.append(time.monotonic())
        self.log(f"API on http://{self.host}:{self.port} ({self.count} processes, one socket each)")
        early_exits = 0
        try:
            while not stop.wait(0.5):
                for i, process in enumerate(processes):
                    if process.is_alive():
                        continue
                    early_exits = early_exits + 1 if time.monotonic() - started[i] < EARLY_EXIT_S else 0
                    if early_exits >= EARLY_EXITS_TO_GIVE_UP:
                        raise ApiWontStart(
                            f"API processes ended at start-up {early_exits} times in a row (last exit "
                            f"{process.exitcode}); their log above says why (database, settings)"
                        )
                    self.log(f"API process {process.pid} ended (exit {process.exitcode}); starting another")
                    time.sleep(RESTART_PAUSE_S)
                    processes[i] = self._start(ctx)
                    started[i] = time.monotonic()
        finally:
            for process in processes:
                if process.is_alive():
                    process.terminate()  # uvicorn finishes the requests in flight on SIGTERM
            for process in processes:
                process.join(timeout=15)
                if process.is_alive():
                    process.kill()

    def _start(self, ctx: Any) -> BaseProcess:
        process: BaseProcess = ctx.Process(
            target=_serve_one, args=(self.host, self.port, self.access_log), daemon=False
        )
        process.start()
        return process
