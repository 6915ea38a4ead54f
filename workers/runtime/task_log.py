"""A task's log: this process's records while the task runs, buffered and flushed to the database
with each heartbeat, so ``GET /tasks/{id}/log`` shows every attempt wherever it ran."""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime

from services.store.tables import utcnow


class TaskLogHandler(logging.Handler):
    """Buffers this process's log records for the running task; flushed with each heartbeat."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        self._lines: list[tuple[datetime, str, str]] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.process != os.getpid():
            return
        with self._lock:
            self._lines.append((utcnow(), record.levelname, self.format(record)))

    def take(self) -> list[tuple[datetime, str, str]]:
        with self._lock:
            lines, self._lines = self._lines, []
        return lines
