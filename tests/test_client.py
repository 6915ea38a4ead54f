"""The Python client's contract for TDs: one error tree (FarmError), path refusals as spec
problems, and waits that ride out a restarted API and wait on many jobs."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from services.client import FarmClient, FarmError, FarmInvalidSpec, FarmTimeout
from tests.factories import ALICE


def _client(api: TestClient, transport: httpx.BaseTransport | None = None) -> FarmClient:
    return FarmClient("http://testserver", ALICE, transport=transport or api._transport)


def test_a_path_outside_the_roots_is_a_spec_problem_naming_the_field(
    api: TestClient, shot: Path, farm_root: Path
) -> None:
    with _client(api) as client, pytest.raises(FarmInvalidSpec) as refused:
        client.submit({"plate": str(shot), "prompt": "ball", "output_root": "/etc/roto"})
    assert refused.value.status == 422 and [p.field for p in refused.value.problems] == ["output_root"]
    with _client(api) as client, pytest.raises(FarmInvalidSpec) as relative:
        client.submit({"plate": str(shot), "prompt": "ball", "output_root": "renders"})
    assert "absolute path" in relative.value.message


def test_wait_rides_out_a_dropped_connection_and_times_out_inside_the_error_tree(
    api: TestClient, shot: Path, farm_root: Path
) -> None:
    spec = {"plate": str(shot), "prompt": "ball", "output_root": str(farm_root / "renders")}
    with _client(api) as client:
        ids = [client.submit(spec).id for _ in range(2)]
    inner, calls = api._transport, {"n": 0}

    class Flaky(httpx.BaseTransport):
        """Every third request finds the API away (a restart)."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            calls["n"] += 1
            if calls["n"] % 3 == 0:
                raise httpx.ConnectError("connection refused")
            return inner.handle_request(request)

    with _client(api, Flaky()) as client, pytest.raises(FarmTimeout) as timed_out:  # queued, no worker: a timeout…
        client.wait_all(ids, timeout=0.3, poll=0.05)
    assert isinstance(timed_out.value, FarmError) and isinstance(timed_out.value, TimeoutError)  # …in both trees
    assert sorted(timed_out.value.pending) == sorted(ids) and calls["n"] >= 3  # it kept asking through the drops
    with _client(api) as client:
        for job_id in ids:
            client.control(job_id, "cancel", reason="done waiting")
        finished = client.wait_all(ids, timeout=5, poll=0.05)
    assert sorted(finished) == sorted(ids) and all(j.state == "canceled" for j in finished.values())


def test_tasks_and_workers_print_json_for_scripts(
    api: TestClient, shot: Path, farm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    from click.testing import CliRunner

    from services.cli import control
    from services.cli.main import cli

    spec = {"plate": str(shot), "prompt": "ball", "output_root": str(farm_root / "renders")}
    with _client(api) as client:
        job_id = client.submit(spec).id
    monkeypatch.setattr(control, "client", lambda: _client(api))
    listed = CliRunner().invoke(cli, ["tasks", job_id, "--json"])
    assert listed.exit_code == 0, listed.output
    tasks = json.loads(listed.output)
    assert {t["stage"] for t in tasks} == {"detect", "segment", "track", "export"} and all(
        t["job_id"] == job_id for t in tasks
    )
    farm = CliRunner().invoke(cli, ["workers", "--json"])
    assert farm.exit_code == 0, farm.output
    overview = json.loads(farm.output)
    assert overview["unplaceable"][0]["job_id"] == job_id and "workers" in overview


def test_log_follow_prints_each_line_once_and_fetches_only_new_lines(
    api: TestClient, shot: Path, farm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    import time
    from datetime import UTC, datetime

    from click.testing import CliRunner

    from services.cli import control
    from services.cli.main import cli

    spec = {"plate": str(shot), "prompt": "ball", "output_root": str(farm_root / "renders")}
    with _client(api) as client:
        job_id = client.submit(spec).id
        task_id = client.tasks(job_id)[0].id
    store = api.app.state.jobs.tasks
    store.append_log(task_id, 1, [(datetime.now(UTC), "INFO", f"line {i}") for i in range(300)])
    fetched: list[int] = []

    class Spy:
        def __init__(self) -> None:
            self.inner = _client(api)

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.inner.close()

        def task_log(self, task_id: int, tail: int = 200, after: int | None = None):
            page = self.inner.task_log(task_id, tail, after)
            fetched.append(len(page.lines))
            return page

        def task(self, task_id: int):
            return self.inner.task(task_id)

    def worker_logs_then_job_is_canceled() -> None:
        for batch in range(3):
            time.sleep(0.7)
            store.append_log(task_id, 1, [(datetime.now(UTC), "INFO", f"more {batch}.{i}") for i in range(5)])
        with _client(api) as client:
            client.cancel(job_id, reason="the test is done")

    monkeypatch.setattr(control, "client", Spy)
    thread = threading.Thread(target=worker_logs_then_job_is_canceled)
    thread.start()
    followed = CliRunner().invoke(cli, ["log", str(task_id), "--tail", "10", "--follow"])
    thread.join()
    assert followed.exit_code == 0, followed.output
    printed = [line.split(None, 3)[-1] for line in followed.output.splitlines()]
    expected = [f"line {i}" for i in range(290, 300)] + [f"more {b}.{i}" for b in range(3) for i in range(5)]
    assert printed == expected
    assert fetched[0] == 10 and sum(fetched) == len(expected)  # never the whole log again
