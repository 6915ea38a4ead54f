"""A worker whose models will not load marks itself unhealthy, hands back what reaches it without
costing the job an attempt, takes no work from the dispatcher, and says why on /farm; the first
``mattefarm up`` without the checkpoints says so at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farm_config import Settings
from schemas import WorkerState
from schemas.task import TaskState
from tests.factories import auth, submit


def test_a_worker_without_its_models_is_unhealthy_and_costs_no_attempt(
    settings: Settings, shot: Path, farm_root: Path, api: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.composition import build_worker
    from workers.runtime import worker as worker_module

    monkeypatch.setattr(worker_module, "UNHEALTHY_BACKOFF_S", 0.0)
    sick = Settings(**(settings.model_dump() | {"model_backend": "sam2-gdino", "weights": "official"}))
    sick.models_dir = farm_root / "no-models-here"
    job_id = submit(settings, shot, farm_root)
    worker = build_worker(sick, register=True, broker=False, name="sick@h1:1")
    try:
        with pytest.raises(Exception, match="would not load"):
            worker.models  # noqa: B018 - what the warm start does
        info = next(w for w in worker.stores.workers.all() if w.name == "sick@h1:1")
        assert info.state == WorkerState.UNHEALTHY and "mattefarm models download" in (info.problem or "")
        assert worker.stores.workers.free() == []  # the dispatcher sends it nothing
        # a message that reaches it anyway (a shared queue) goes back, uncounted
        first = next(c for c in worker.tasks.candidates() if c.job_id == job_id)
        token = worker.tasks.mark_queued(first.task_id, "gpu")
        assert token is not None
        worker.run_task(first.task_id, token)
        task = worker.tasks.get(first.task_id)
        assert task is not None and task.state == TaskState.WAITING and task.attempts == 0
        assert "unhealthy" in (task.error or "")
        farm = api.get("/farm", headers=auth()).json()
        row = next(w for w in farm["workers"] if w["name"] == "sick@h1:1")
        assert row["state"] == "unhealthy" and row["problem"]
        (stuck,) = farm["unplaceable"]
        assert stuck["job_id"] == job_id and "sick@h1:1 is unhealthy" in stuck["why"]
    finally:
        worker.close()


def test_up_without_the_checkpoints_says_so_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from services.cli.main import cli

    monkeypatch.setenv("MATTEFARM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MATTEFARM_MODELS_DIR", str(tmp_path / "models"))
    result = CliRunner().invoke(cli, ["up", "--backend", "sam2-gdino", "--weights", "official", "--port", "18999"])
    assert result.exit_code == 1, result.output
    assert "the models are not here" in result.output and "mattefarm models download" in result.output
    assert "--backend synthetic" in result.output
