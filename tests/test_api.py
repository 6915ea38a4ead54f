"""The HTTP API: submission checks, path confinement, tokens, ownership, listing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farm_config import Settings
from services.api.app import create_app
from tests.factories import ADMIN, BOB, DownQueue, RecordingQueue, auth


def spec(plate: Path | str, root: Path, **extra: object) -> dict[str, object]:
    return {"plate": str(plate), "prompt": "ball, box", "output_root": str(root / "renders"), **extra}


def problem_fields(response) -> list[str]:
    return [p["field"] for p in response.json()["problems"]]


def test_submit_stores_and_queues(api: TestClient, queue: RecordingQueue, shot: Path, farm_root: Path) -> None:
    response = api.post("/jobs", json=spec(shot, farm_root, priority=80, show="demo"), headers=auth())
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["version"] == 1 and body["output_dir"].endswith("renders/sh010/roto/v001")
    assert queue.sent == []  # no worker is free: the tasks wait in the database, in priority order
    job = api.get(f"/jobs/{body['id']}", headers=auth()).json()
    assert job["state"] == "queued" and job["user"] == "alice" and job["shot"] == "sh010"
    assert job["frames"] == list(range(1001, 1009))
    assert [s["name"] for s in job["stages"]] == ["detect", "segment", "track", "export"]
    assert job["output_pattern"].endswith("sh010_roto_v001.####.exr")
    # A second submission of the same shot gets the next version; nothing is reused.
    again = api.post("/jobs", json=spec(shot, farm_root), headers=auth()).json()
    assert again["version"] == 2 and Path(again["output_dir"]).is_dir()


@pytest.mark.parametrize("token", ["%04d", "$F4"])
def test_printf_and_houdini_patterns(api: TestClient, shot: Path, farm_root: Path, token: str) -> None:
    plate = str(shot).replace("####", token)
    response = api.post("/jobs", json=spec(plate, farm_root, frames="1002-1004"), headers=auth())
    assert response.status_code == 201, response.text
    assert api.get(f"/jobs/{response.json()['id']}", headers=auth()).json()["frames"] == [1002, 1003, 1004]


def test_bad_inputs_name_the_field(api: TestClient, shot: Path, farm_root: Path) -> None:
    cases: list[tuple[dict[str, object], str, str]] = [
        (spec(farm_root / "sh010/plate/nothing.####.exr", farm_root), "plate", "no files match"),
        (spec(shot, farm_root, frames="1001-1010"), "frames", "1009-1010"),
        (spec(shot, farm_root, frames="1005-1001"), "frames", "reversed"),
        (spec(shot, farm_root, prompt=" , ,"), "prompt", "prompt is empty"),
        (spec(shot, farm_root, prompt=""), "prompt", "prompt is empty"),
        (spec(farm_root / "sh010/plate/sh010.1001.exr", farm_root), "plate", "frame token"),
        (spec(shot, farm_root, priority=500), "priority", "less than or equal"),
        (spec(shot, farm_root, options={"max_side": 10}), "options.max_side", "greater than or equal"),
        (
            spec(shot, farm_root, options={"max_unsupported_windows": -1}),
            "options.max_unsupported_windows",
            "greater than or equal",
        ),
        (spec(shot, farm_root, options={"refresh_every": 30}), "options", "refresh_every"),
        (spec(shot, farm_root, options={"tracking": "loops"}), "options.tracking", "windows"),
        (spec(shot, farm_root, options={"detect": "sometimes"}), "options.detect", "refresh"),
        (
            spec(shot, farm_root, options={"strategy": "per-frame", "detect": "refresh"}),
            "options",
            "detect 'refresh' needs the farm strategy",
        ),
        (spec(shot, farm_root, colour="red"), "colour", "Extra inputs"),
        ({"prompt": "ball", "output_root": str(farm_root)}, "plate", "Field required"),
    ]
    for body, field, words in cases:
        response = api.post("/jobs", json=body, headers=auth())
        assert response.status_code == 422, (body, response.text)
        assert field in problem_fields(response), (field, response.json())
        assert words in response.json()["message"], (words, response.json()["message"])


def test_unreadable_and_non_image_frames_are_refused(api: TestClient, shot: Path, farm_root: Path) -> None:
    (shot.parent / "sh010.1008.exr").write_bytes(b"not an exr at all")
    response = api.post("/jobs", json=spec(shot, farm_root), headers=auth())
    assert response.status_code == 422 and problem_fields(response) == ["plate"]
    assert "sh010.1008.exr is not a readable image" in response.json()["message"]
    text_plate = farm_root / "notes" / "notes.####.txt"
    text_plate.parent.mkdir()
    (text_plate.parent / "notes.1001.txt").write_text("hello")
    response = api.post("/jobs", json=spec(text_plate, farm_root), headers=auth())
    assert response.status_code == 422 and "not a plate format" in response.json()["message"]


def test_output_root_must_be_writable_and_inside_the_write_roots(
    api: TestClient, shot: Path, farm_root: Path, tmp_path: Path
) -> None:
    outside = api.post(
        "/jobs", json={**spec(shot, farm_root), "output_root": str(tmp_path / "elsewhere")}, headers=auth()
    )
    assert outside.status_code == 422 and problem_fields(outside) == ["output_root"]
    assert "outside the write roots" in outside.json()["message"]
    a_file = farm_root / "renders_file"
    a_file.write_text("x")
    response = api.post("/jobs", json={**spec(shot, farm_root), "output_root": str(a_file)}, headers=auth())
    assert response.status_code == 422 and problem_fields(response) == ["output_root"]
    if os.geteuid() != 0:  # root writes anywhere; the permission check is meaningful for others
        locked = farm_root / "locked"
        locked.mkdir(mode=0o500)
        response = api.post("/jobs", json={**spec(shot, farm_root), "output_root": str(locked)}, headers=auth())
        assert response.status_code == 422 and "not writable" in response.json()["message"]


def test_paths_are_confined(api: TestClient, shot: Path, farm_root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.1001.exr").write_bytes((shot.parent / "sh010.1001.exr").read_bytes())
    # an absolute path outside the read roots
    response = api.post("/jobs", json=spec(outside / "secret.####.exr", farm_root), headers=auth())
    assert response.status_code == 422 and problem_fields(response) == ["plate"]
    # a '..' escape
    sneaky = f"{farm_root}/../outside/secret.####.exr"
    response = api.post("/jobs", json=spec(sneaky, farm_root), headers=auth())
    assert response.status_code == 422 and "must not contain '..'" in response.json()["message"]
    # a symlinked folder inside the root that points outside it
    (farm_root / "link").symlink_to(outside)
    response = api.post("/jobs", json=spec(farm_root / "link/secret.####.exr", farm_root), headers=auth())
    assert response.status_code == 422 and "through a symlink" in response.json()["message"]
    # a symlinked frame file inside a real plate folder
    (shot.parent / "sh010.1009.exr").symlink_to(outside / "secret.1001.exr")
    response = api.post("/jobs", json=spec(shot, farm_root), headers=auth())
    assert response.status_code == 422 and "links to" in response.json()["message"]
    (shot.parent / "sh010.1009.exr").unlink()
    # a relative path
    response = api.post("/jobs", json=spec("sh010/plate/sh010.####.exr", farm_root), headers=auth())
    assert response.status_code == 422 and "absolute path" in response.json()["message"]
    # output escapes too
    response = api.post("/jobs", json={**spec(shot, farm_root), "output_root": f"{farm_root}/../x"}, headers=auth())
    assert response.status_code == 422 and problem_fields(response) == ["output_root"]


def test_plates_are_never_written(api: TestClient, shot: Path, farm_root: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in shot.parent.iterdir()}
    api.post("/jobs", json=spec(shot, farm_root), headers=auth())
    assert {p: p.stat().st_mtime_ns for p in shot.parent.iterdir()} == before


def test_tokens_are_required(api: TestClient, shot: Path, farm_root: Path) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong-token-0000000000"}, {"Authorization": "Basic abc"}):
        response = api.post("/jobs", json=spec(shot, farm_root), headers=headers)
        assert response.status_code == 401, headers
        assert "token" in response.json()["message"]
    assert api.get("/jobs").status_code == 401
    health = api.get("/healthz").json()
    assert (health["status"], health["database"], health["broker"]) == ("ok", "ok", "ok")


def test_only_the_owner_or_an_admin_may_cancel(api: TestClient, shot: Path, farm_root: Path) -> None:
    job_id = api.post("/jobs", json=spec(shot, farm_root), headers=auth()).json()["id"]
    refused = api.post(f"/jobs/{job_id}/cancel", json={"reason": "mine now"}, headers=auth(BOB))
    assert refused.status_code == 403 and "belongs to alice" in refused.json()["message"]
    no_reason = api.post(f"/jobs/{job_id}/cancel", headers=auth())
    assert no_reason.status_code == 422 and problem_fields(no_reason) == ["reason"]
    canceled = api.post(f"/jobs/{job_id}/cancel", json={"reason": "wrong plate"}, headers=auth())
    assert canceled.status_code == 200 and canceled.json()["state"] == "canceled"
    assert canceled.json()["tasks_changed"] == 11  # 3 detect + 3 segment + 1 track + 3 export + finalise
    other = api.post("/jobs", json=spec(shot, farm_root), headers=auth()).json()["id"]
    assert api.post(f"/jobs/{other}/cancel", json={"reason": "ops"}, headers=auth(ADMIN)).json()["state"] == "canceled"
    events = api.get(f"/jobs/{job_id}/events", headers=auth()).json()
    assert events[-1]["actor"] == "alice" and "wrong plate" in events[-1]["message"]
    assert api.post("/jobs/missing/cancel", json={"reason": "x"}, headers=auth()).status_code == 404


def test_list_filters_and_pagination(api: TestClient, shot: Path, farm_root: Path) -> None:
    for token, show in ((None, "a"), (BOB, "b"), (BOB, "a")):
        api.post("/jobs", json=spec(shot, farm_root, show=show), headers=auth(token) if token else auth())
    assert api.get("/jobs", params={"user": "bob"}, headers=auth()).json()["total"] == 2
    assert api.get("/jobs", params={"show": "a"}, headers=auth()).json()["total"] == 2
    assert api.get("/jobs", params={"state": "queued", "shot": "sh010"}, headers=auth()).json()["total"] == 3
    page = api.get("/jobs", params={"limit": 2, "offset": 2}, headers=auth()).json()
    assert (page["total"], len(page["items"])) == (3, 1)
    bad = api.get("/jobs", params={"state": "sleeping"}, headers=auth())
    assert bad.status_code == 422 and problem_fields(bad) == ["query.state.0"]  # the first state= given
    assert api.get("/jobs/unknown", headers=auth()).status_code == 404


def test_a_down_broker_delays_a_job_and_loses_nothing(settings: Settings, shot: Path, farm_root: Path) -> None:
    with TestClient(create_app(settings, queue=DownQueue())) as client:
        response = client.post("/jobs", json=spec(shot, farm_root), headers=auth())
        assert response.status_code == 201  # the database holds the job; messages go out when the broker is back
        (job,) = client.get("/jobs", headers=auth()).json()["items"]
        assert job["state"] == "queued" and job["tasks"] == {"waiting": 11}
        farm = client.get("/farm", headers=auth()).json()
        assert farm["broker_up"] is False and farm["tasks_waiting"] == 11
        (stuck,) = farm["unplaceable"]  # no worker at all: the job says why it waits
        assert stuck["job_id"] == job["id"] and "no online worker serves a GPU queue" in stuck["why"]
        assert "mattefarm_jobs_unplaceable 1.0" in client.get("/metrics").text
        health = client.get("/healthz")  # the API is up, and says what it cannot reach
        assert health.status_code == 503 and health.json()["broker"].startswith("unreachable")
        assert health.json()["database"] == "ok"


def test_a_retried_submission_with_its_idempotency_key_returns_the_first_job(
    api: TestClient, shot: Path, farm_root: Path
) -> None:
    key = {"Idempotency-Key": "7f1c2a9e-retry-test"}
    first = api.post("/jobs", json=spec(shot, farm_root), headers=auth() | key)
    again = api.post("/jobs", json=spec(shot, farm_root), headers=auth() | key)
    assert first.status_code == 201 and again.status_code == 201
    assert again.json()["id"] == first.json()["id"] and again.json()["replayed"] and not first.json()["replayed"]
    roto = farm_root / "renders" / "sh010" / "roto"
    assert sorted(p.name for p in roto.iterdir()) == ["v001"]  # no second version folder either
    assert api.get("/jobs", headers=auth()).json()["total"] == 1
    # the key is the user's: another user's same key is another submission
    other = api.post("/jobs", json=spec(shot, farm_root), headers=auth(BOB) | key)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]
    # the same key with a different spec is refused, naming the header
    changed = api.post("/jobs", json=spec(shot, farm_root, priority=10), headers=auth() | key)
    assert changed.status_code == 409 and problem_fields(changed) == ["Idempotency-Key"]
    bad = api.post("/jobs", json=spec(shot, farm_root), headers=auth() | {"Idempotency-Key": "no spaces allowed"})
    assert bad.status_code == 422 and problem_fields(bad) == ["header.idempotency-key"]
    # without a key, two posts are two jobs
    assert api.post("/jobs", json=spec(shot, farm_root), headers=auth()).json()["id"] != first.json()["id"]


def test_the_client_retries_a_submission_without_making_a_twin(api: TestClient, shot: Path, farm_root: Path) -> None:
    import httpx

    from services.client import FarmClient

    calls = {"n": 0}
    inner = api._transport

    class DropsTheFirstReply(httpx.BaseTransport):
        """The API stores the job, then the connection dies before the reply (an API SIGKILL)."""

        def handle_request(self, request: httpx.Request) -> httpx.Response:
            response = inner.handle_request(request)
            calls["n"] += 1
            if calls["n"] == 1:
                raise httpx.ReadError("connection reset by peer")
            return response

    with FarmClient("http://testserver", auth()["Authorization"].split()[1], transport=DropsTheFirstReply()) as client:
        job = client.submit(spec(shot, farm_root), backoff_s=0.0)
    assert job.replayed and calls["n"] == 2
    assert api.get("/jobs", headers=auth()).json()["total"] == 1


def test_openapi_docs_are_served(api: TestClient) -> None:
    assert api.get("/docs").status_code == 200
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/jobs", "/jobs/{job_id}", "/jobs/{job_id}/{action}", "/tasks/{task_id}/log", "/healthz"} <= set(paths)


def test_bad_task_options_and_controls_name_the_field(api: TestClient, shot: Path, farm_root: Path) -> None:
    for extra, field in (({"task_frames": 0}, "task_frames"), ({"min_gpu_memory_gb": -1}, "min_gpu_memory_gb")):
        response = api.post("/jobs", json=spec(shot, farm_root, **extra), headers=auth())
        assert response.status_code == 422 and problem_fields(response) == [field]
    job_id = api.post("/jobs", json=spec(shot, farm_root), headers=auth()).json()["id"]
    no_priority = api.post(f"/jobs/{job_id}/priority", headers=auth())
    assert no_priority.status_code == 422 and problem_fields(no_priority) == ["priority"]
    rush = api.post(f"/jobs/{job_id}/priority", json={"priority": 95}, headers=auth())
    assert rush.status_code == 403 and "admins" in rush.json()["message"]
    assert api.post(f"/jobs/{job_id}/explode", headers=auth()).status_code == 422
    assert api.post(f"/jobs/{job_id}/stages/render/pause", headers=auth()).status_code == 422
    assert api.post("/tasks/999999/pause", headers=auth()).status_code == 404
    assert api.post("/workers/nobody/drain", headers=auth()).status_code == 403  # not an admin
    assert api.post("/workers/nobody/drain", headers=auth(ADMIN)).status_code == 404
    bulk = api.post("/jobs/bulk/pause", json={"job_ids": [job_id, "missing"]}, headers=auth(BOB)).json()
    assert [(r["target"], r["ok"]) for r in bulk["results"]] == [(job_id, False), ("missing", False)]
    assert "belongs to alice" in bulk["results"][0]["message"]
    mine = api.post("/jobs/bulk/pause", json={"job_ids": [job_id]}, headers=auth()).json()["results"][0]
    assert mine["ok"] and mine["state"] == "paused"
