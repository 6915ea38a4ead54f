"""Shared fixtures: a clean environment, settings, synthetic shots, real Postgres and Redis."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from farm_config import Settings, get_settings
from tests.factories import TOKENS, RecordingQueue, write_small_shot
from tests.harness import RedisServer

IN_CI = os.environ.get("CI", "").lower() == "true"


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MATTEFARM_* variable from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("MATTEFARM_") and key != "MATTEFARM_TEST_POSTGRES_URL":
            monkeypatch.delenv(key)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def farm_root(tmp_path: Path) -> Path:
    """A folder that is both the read and the write root."""
    root = tmp_path / "farm"
    root.mkdir()
    return root.resolve()


@pytest.fixture
def settings(farm_root: Path, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        read_roots=[farm_root],
        write_roots=[farm_root],
        tokens=TOKENS,
        model_backend="synthetic",
        task_frames=3,  # 8-frame shots split into three chunks per stage
        retry_backoff_s=0.0,
        dispatch_every_s=0.2,
        webhook_hosts=["127.0.0.1"],  # the tests' receivers listen on loopback: allow-listed, as a studio's hook host
    )


@pytest.fixture(scope="session")
def shot_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic shot written once per session; tests copy it into their own roots."""
    root = tmp_path_factory.mktemp("shots")
    write_small_shot(root, "sh010", frames=8)
    return root


@pytest.fixture
def shot(shot_cache: Path, farm_root: Path) -> Path:
    """The plate pattern of a private copy of the small synthetic shot."""
    shutil.copytree(shot_cache / "sh010", farm_root / "sh010")
    return farm_root / "sh010" / "plate" / "sh010.####.exr"


@pytest.fixture
def queue() -> RecordingQueue:
    return RecordingQueue()


@pytest.fixture
def api(settings: Settings, queue: RecordingQueue) -> Iterator[TestClient]:
    """The API in-process, with a queue that records instead of sending."""
    from services.api.app import create_app

    with TestClient(create_app(settings, queue=queue)) as client:
        yield client


# --- Postgres ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of a real PostgreSQL server (scripts/test.sh starts one)."""
    admin_url = os.environ.get("MATTEFARM_TEST_POSTGRES_URL")
    if not admin_url:
        if IN_CI:
            pytest.fail("CI must test the store on PostgreSQL: scripts/test.sh sets MATTEFARM_TEST_POSTGRES_URL")
        pytest.skip("no PostgreSQL server (run the suite with scripts/test.sh)")
    return admin_url


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the server, dropped afterwards."""
    name = f"mattefarm_test_{uuid.uuid4().hex[:8]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: str) -> Iterator[str]:
    with fresh_database(postgres_server) as url:
        yield url


# --- Redis ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, AOF on, as production runs it."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    return redis_server.url()
