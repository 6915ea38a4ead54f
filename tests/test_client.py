"""The Python client's contract for TDs: one error tree (FarmError), path refusals as spec
problems, and waits that ride out a restarted API and wait on many jobs."""

from __future__ import annotations

import json
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


def _cli(api: TestClient, monkeypatch: pytest.MonkeyPatch, *args: str):
    from click.testing import CliRunner

    from services.cli import control, jobs, refine_bench
    from services.cli.main import cli

    for module in (control, jobs, refine_bench):
        monkeypatch.setattr(module, "client", lambda: _client(api))
    return CliRunner().invoke(cli, list(args))


def test_the_cli_takes_abbreviated_job_ids(
    api: TestClient, shot: Path, farm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = {"plate": str(shot), "prompt": "ball", "output_root": str(farm_root / "renders")}
    with _client(api) as client:
        ids = [client.submit(spec).id for _ in range(17)]  # 17 hex ids: two share a first character
        assert client.resolve_job(ids[0]) == ids[0]
    # a prefix only one job has, found the way a person would: the shortest that is unique
    unique = next(i[:n] for n in range(4, 12) for i in [ids[0]] if sum(j.startswith(i[:n]) for j in ids) == 1)
    shown = _cli(api, monkeypatch, "status", unique, "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["id"] == ids[0]
    tasks = _cli(api, monkeypatch, "tasks", unique, "--json")
    assert tasks.exit_code == 0 and all(t["job_id"] == ids[0] for t in json.loads(tasks.output))
    canceled = _cli(api, monkeypatch, "cancel", unique, "--reason", "abbreviated")
    assert canceled.exit_code == 0, canceled.output
    with _client(api) as client:
        assert client.job(ids[0]).state in ("canceled", "canceling")
    none = _cli(api, monkeypatch, "status", "zzzz")
    assert none.exit_code == 1 and "no job id starts with 'zzzz'" in none.output
    first = {i[0] for i in ids}
    shared = next(c for c in sorted(first) if sum(i.startswith(c) for i in ids) > 1)
    several = _cli(api, monkeypatch, "status", shared)
    assert several.exit_code == 1 and "matches" in several.output and "give more of the id" not in several.output


def test_the_job_list_filters_sorts_and_pages_on_the_farm(
    api: TestClient, shot: Path, farm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = {"plate": str(shot), "output_root": str(farm_root / "renders")}
    with _client(api) as client:
        made = [
            client.submit(base | {"prompt": p, "priority": pri, "show": show}).id
            for p, pri, show in [
                ("ball", 10, "alpha"),
                ("box", 70, "beta"),
                ("car", 40, "alpha"),
                ("ball, box", 90, "gamma"),
            ]
        ]
        by_priority = client.jobs(sort="priority")
        assert [j.priority for j in by_priority.items] == [90, 70, 40, 10]
        assert [j.priority for j in client.jobs(sort="priority", order="asc").items] == [10, 40, 70, 90]
        found = client.jobs(q="BOX")  # prompt text, case-insensitive
        assert {j.id for j in found.items} == {made[1], made[3]} and found.total == 2
        assert client.jobs(q="alpha").total == 2  # show
        only_failed = client.jobs(state="failed")
        assert only_failed.total == 0 and sum(only_failed.states.values()) == 4  # counts ignore the state filter
        assert client.jobs(id_prefix=made[2][:12]).items[0].id == made[2]
        page = client.jobs(limit=3, offset=3)
        assert page.total == 4 and len(page.items) == 1 and page.items[0].id == made[0]  # newest first
        future = client.jobs(since="2999-01-01")
        assert future.total == 0 and client.jobs(until="2999-01-01").total == 4
        one = client.jobs(limit=1).items[0]
        assert one.version >= 1 and one.frames_total == 8 and one.frames_done == 0  # plate frames, not stage sums
    listed = _cli(api, monkeypatch, "jobs", "--sort", "priority", "--since", "1d", "-q", "alpha")
    assert listed.exit_code == 0, listed.output
    assert "ver" in listed.output and "v00" in listed.output and "0/8" in listed.output and "2 of 2" in listed.output
    bad = _cli(api, monkeypatch, "jobs", "--since", "last week")
    assert bad.exit_code == 2 and "--since" in bad.output
    with _client(api) as client, pytest.raises(FarmInvalidSpec) as refused:
        client.jobs(sort="colour")
    assert "sort" in str(refused.value.problems[0].field)


def test_submit_sets_options_webhook_task_size_and_gpu_memory(
    api: TestClient, shot: Path, farm_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = [
        "submit", str(shot), "-p", "ball", "-o", str(farm_root / "renders"),
        "--option", "window_frames=30", "--option", "box_threshold=0.4", "--option", "strategy=per-frame",
        "--notify-url", "http://127.0.0.1:9/hook", "--task-frames", "4", "--min-gpu-memory-gb", "12",
        "--allow-smaller-model",
    ]  # fmt: skip
    submitted = _cli(api, monkeypatch, *args)
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.output.split()[1]
    with _client(api) as client:
        spec = client.job(job_id).spec
        tasks = client.tasks(job_id)
    assert spec.options.window_frames == 30 and spec.options.box_threshold == 0.4
    assert spec.options.strategy == "per-frame" and spec.notify_url == "http://127.0.0.1:9/hook"
    assert spec.task_frames == 4 and spec.min_gpu_memory_gb == 12 and spec.allow_smaller_model
    assert len([t for t in tasks if t.stage == "detect"]) == 2  # 8 frames in chunks of 4
    wrong = _cli(api, monkeypatch, "submit", str(shot), "-p", "ball", "--option", "windw_frames=30")
    assert wrong.exit_code == 1 and "options.windw_frames" in wrong.output
    malformed = _cli(api, monkeypatch, "submit", str(shot), "-p", "ball", "--option", "window_frames")
    assert malformed.exit_code == 2 and "KEY=VALUE" in malformed.output
