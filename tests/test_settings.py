"""Configuration: read from MATTEFARM_* variables, refused with a message naming the variable."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from farm_config import Settings, get_settings
from farm_config.celery_config import celery_config
from farm_config.profiles import get_profile


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MATTEFARM_READ_ROOTS", f"{tmp_path},/tmp")
    monkeypatch.setenv("MATTEFARM_TOKENS", "abcdefghijklmnop:alice,qrstuvwxyz012345:ops:admin")
    monkeypatch.setenv("MATTEFARM_SAM2_SIZE", "tiny")
    settings = get_settings()
    assert settings.read_roots[0] == tmp_path.resolve()
    assert settings.sam2_size == "tiny"
    grants = settings.token_grants()
    assert grants["abcdefghijklmnop"].user == "alice" and not grants["abcdefghijklmnop"].is_admin
    assert grants["qrstuvwxyz012345"].is_admin


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"MATTEFARM_TOKENS": "short:alice"}, "at least 16"),
        ({"MATTEFARM_TOKENS": "abcdefghijklmnop"}, "token:user"),
        ({"MATTEFARM_TOKENS": "abcdefghijklmnop:alice:root"}, "token:user:admin"),
        ({"MATTEFARM_VISIBILITY_TIMEOUT_S": "3600"}, "VISIBILITY_TIMEOUT_S must be above"),
        (
            {"MATTEFARM_TASK_TIME_LIMIT_S": "100", "MATTEFARM_TASK_SOFT_TIME_LIMIT_S": "200"},
            "TIME_LIMIT_S must be above",
        ),
        ({"MATTEFARM_ENVIRONMENT": "production"}, "MATTEFARM_DATABASE_URL"),
        ({"MATTEFARM_SAM2_SIZE": "huge"}, "sam2_size"),
        ({"MATTEFARM_DB_PING_IDLE_S": "-1"}, "db_ping_idle_s"),
    ],
)
def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], words: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=words):
        Settings()


def test_celery_is_configured_for_long_gpu_tasks() -> None:
    settings = Settings(
        broker_url="redis://127.0.0.1:6379/0",
        visibility_timeout_s=30000,
        task_time_limit_s=20000,
        task_soft_time_limit_s=19000,
    )
    conf = celery_config(settings)
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["worker_send_task_events"] and conf["task_send_sent_event"]
    # Every place Celery reads the visibility timeout, above the hard limit.
    for value in (
        conf["visibility_timeout"],
        conf["broker_transport_options"]["visibility_timeout"],
        conf["result_backend_transport_options"]["visibility_timeout"],
    ):
        assert value == 30000 > conf["task_time_limit"] > conf["task_soft_time_limit"]
    assert "task_routes" not in conf  # the dispatcher names each message's queue
    assert conf["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert conf["result_backend"] is None and conf["task_ignore_result"]


def test_embedded_default_uses_a_local_broker(tmp_path: Path) -> None:
    conf = celery_config(Settings(data_dir=tmp_path))
    assert conf["broker_url"] == "filesystem://"
    assert conf["broker_transport_options"]["data_folder_in"].startswith(str(tmp_path.resolve()))
    assert Settings(data_dir=tmp_path).resolved_database_url.startswith("sqlite:///")


def test_a_worker_consumes_its_profile_queue(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).consumed_queues == ["gpu", "cpu"]  # propagations come on "gpu" too
    assert Settings(data_dir=tmp_path, worker_profile="a4000").consumed_queues == ["gpu.a4000", "gpu"]
    assert Settings(data_dir=tmp_path, worker_profile="cpu").consumed_queues == ["cpu"]
    refine_own = Settings(data_dir=tmp_path, refine_queue="refine")
    assert refine_own.consumed_queues == ["gpu", "cpu", "refine"]
    assert Settings(data_dir=tmp_path, worker_queues="gpu.h100,cpu").consumed_queues == ["gpu.h100", "cpu"]


def test_worker_profiles() -> None:
    assert get_profile("a4000").gpu_memory_gb == 16.0
    with pytest.raises(ValueError, match="choose one of"):
        get_profile("v100")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MATTEFARM_WORKER_PROFILE": "v100"}, "MATTEFARM_WORKER_PROFILE"),
        ({"MATTEFARM_FAULT": "explode@segment"}, "MATTEFARM_FAULT"),
        ({"MATTEFARM_FAULT": "crash@render"}, "MATTEFARM_FAULT"),
        ({"MATTEFARM_SHOW_GPU_CAPS": "showA=4"}, "show_gpu_caps"),
        ({"MATTEFARM_TASK_FRAMES": "0"}, "task_frames"),
        ({"MATTEFARM_DB_POOL_SIZE": "0"}, "db_pool_size"),
        ({"MATTEFARM_TOKEN_CACHE_S": "-1"}, "token_cache_s"),
        ({"MATTEFARM_REVIEW_LINK_TTL_S": "9999999"}, "review_link_ttl_s"),
        ({"MATTEFARM_WORKER_FORGET_AFTER_S": "5"}, "worker_forget_after_s"),
        ({"MATTEFARM_HISTORY_SAMPLE_S": "0"}, "history_sample_s"),
    ],
)
def test_bad_farm_operations_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=named):
        Settings()


@pytest.mark.parametrize("fault", ["kill@track", "kill@track:x", "kill@nowhere:3", "crash@track:3", "boom@track"])
def test_a_malformed_fire_drill_is_refused_naming_the_variable(tmp_path: Path, fault: str) -> None:
    with pytest.raises(ValueError, match="MATTEFARM_FAULT must be"):
        Settings(data_dir=tmp_path, fault=fault)
    assert Settings(data_dir=tmp_path, fault="kill@finalise:12").fault == "kill@finalise:12"


def test_webhook_hosts_and_api_workers_are_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATTEFARM_WEBHOOK_HOSTS", "hooks.studio, 10.0.0.0/8")
    monkeypatch.setenv("MATTEFARM_API_WORKERS", "0")
    with pytest.raises(ValueError, match="api_workers"):
        Settings(data_dir=tmp_path)
    monkeypatch.setenv("MATTEFARM_API_WORKERS", "3")
    loaded = Settings(data_dir=tmp_path)
    assert loaded.webhook_hosts == ["hooks.studio", "10.0.0.0/8"] and loaded.api_workers == 3


def test_plate_checks_cached_is_bounded_and_read_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MATTEFARM_PLATE_CHECKS_CACHED", "-1")
    with pytest.raises(ValueError, match="plate_checks_cached"):
        Settings(data_dir=tmp_path)
    monkeypatch.setenv("MATTEFARM_PLATE_CHECKS_CACHED", "0")  # 0: every submit checks its plate
    assert Settings(data_dir=tmp_path).plate_checks_cached == 0
