"""Engine, sessions and migrations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, CursorResult, Engine, Executable, create_engine, event, exc, text
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL + a busy timeout let the API and a worker process write the same file.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
    # SQLAlchemy emits BEGIN itself (below) instead of pysqlite's deferred one.
    dbapi_connection.isolation_level = None


def _sqlite_begin_immediate(connection: Any) -> None:
    # Take the write lock at BEGIN: a deferred transaction that reads, then writes after another
    # process committed, fails instead of waiting. Task changes read the job, then write.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class _PingWhenIdle:
    """Pessimistic disconnect handling, paid only where it can matter: a connection back in use
    within ``idle_s`` of its last use is not pinged (under load every checkout is, and the ping was
    a round trip on every request); one that sat idle longer is pinged, and a dead one is replaced
    before the request sees it (a database restart, an idle timeout). 0 pings on every checkout."""

    def __init__(self, engine: Engine, idle_s: float) -> None:
        self.engine, self.idle_s = engine, idle_s
        event.listen(engine, "checkin", self.checked_in)
        event.listen(engine, "checkout", self.checked_out)

    @staticmethod
    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["last_used"] = time.monotonic()

    def checked_out(self, dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get("last_used")
        if last is not None and time.monotonic() - last < self.idle_s:
            return
        try:
            self.engine.dialect.do_ping(dbapi_connection)
        except Exception as error:
            # the pool discards this connection and checks out another (a fresh one if need be)
            raise exc.DisconnectionError(f"connection failed its ping: {error}") from error


class Database:
    """One engine and session factory per process; build it where the process starts."""

    def __init__(self, url: str, pool_size: int = 5, ping_idle_s: float = 1.0) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(url, connect_args={"timeout": 30})
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin_immediate)
        else:
            # pool_size: about the API's thread pool's concurrency, so requests don't queue for a
            # connection (measured: 13 % of an API process's time under 20 clients at the default 5)
            self.engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
            _PingWhenIdle(self.engine, ping_idle_s)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_options: dict[str, Any] = {} if url.startswith("sqlite") else {"isolation_level": "AUTOCOMMIT"}

    def upgrade(self) -> None:
        """Apply Alembic migrations up to head."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                # Processes starting together (API workers, workers) must not migrate at once: the
                # first takes the lock and migrates, the others wait and find nothing left to do.
                # A transaction-level lock, released when this transaction ends.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: committed on success, rolled back on error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only unit on a plain connection: no ORM session, so the API's hottest reads
        (a job's status) skip the session's bookkeeping (about 0.4 ms of CPU each). It runs in
        autocommit: each SELECT is one round trip, with no BEGIN before it and no ROLLBACK after.
        Each statement sees its own snapshot, as each did under READ COMMITTED in a transaction.
        (SQLite keeps its transaction: the farm's BEGIN IMMEDIATE is what orders its writers.)"""
        with self.engine.connect().execution_options(**self._read_options) as connection:
            yield connection

    def dispose(self) -> None:
        self.engine.dispose()


MIGRATION_LOCK = 0x6D617474  # 'matt': the advisory lock key the farm's migrations take


def rows_changed(session: Session, statement: Executable) -> int:
    """Rows an UPDATE changed: the answer of a compare-and-set (0 means someone else moved first)."""
    return cast("CursorResult[Any]", session.execute(statement)).rowcount
