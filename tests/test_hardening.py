"""Hostile and careless input: every one a 4xx naming the field (never a 500), and nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from farm_config import Settings
from tests.factories import ADMIN, auth, relink_out_of_roots, write_small_shot


def spec(plate: Path | str, root: Path, **extra: object) -> dict[str, object]:
    return {"plate": str(plate), "prompt": "ball, box", "output_root": str(root / "renders"), **extra}


def fields(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [p["field"] for p in response.json()["problems"]]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"prompt": "ball\x00, box"}, "prompt"),
        ({"show": "demo\x00"}, "show"),
        ({"shot": "sh\x00010"}, "shot"),
        ({"plate_part": "rgb\x00"}, "plate_part"),
        ({"prompt": "x" * 1_000_000}, "prompt"),
        ({"prompt": ", ".join(f"class{i}" for i in range(10_000))[:1999]}, "prompt"),
        ({"prompt": "a" * 200}, "prompt"),
        ({"task_frames": 0}, "task_frames"),
    ],
)
def test_bad_fields_are_422_naming_the_field_and_leave_no_folder(
    api: TestClient, shot: Path, farm_root: Path, change: dict[str, object], field: str
) -> None:
    response = api.post("/jobs", json=spec(shot, farm_root) | change, headers=auth())
    assert response.status_code == 422, response.text
    assert fields(response) == [field]
    assert not (farm_root / "renders").exists()  # refused before any version folder


def test_ids_and_offsets_past_the_databases_range_are_422_not_500(api: TestClient) -> None:
    for path in ("/tasks/99999999999999999999", "/tasks/99999999999", "/tasks/0/log"):
        response = api.get(path, headers=auth())
        assert response.status_code == 422 and fields(response) == ["path.task_id"], path
    for path in ("/jobs/ab%00cd", "/jobs/" + "x" * 40, "/jobs/ab%00cd/refine/state"):
        response = api.get(path, headers=auth())
        assert response.status_code == 422 and fields(response) == ["path.job_id"], path
    response = api.get("/jobs", params={"offset": 2**40}, headers=auth())
    assert response.status_code == 422 and fields(response) == ["query.offset"]
    response = api.get("/jobs", params={"show": "a\x00b"}, headers=auth())
    assert response.status_code == 422 and fields(response) == ["query.show"]


def test_malformed_json_says_so_with_the_byte_offset(api: TestClient) -> None:
    response = api.post(
        "/jobs", content=b'{"plate": "/x", "prompt": ', headers=auth() | {"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and fields(response) == ["body"]
    assert "not valid JSON at byte" in response.json()["message"]


def test_a_chunk_size_that_makes_thousands_of_tasks_is_refused(
    api: TestClient, settings: Settings, farm_root: Path
) -> None:
    settings.max_tasks_per_stage = 10
    plate = write_small_shot(farm_root, "sh200", frames=40)
    response = api.post(
        "/jobs",
        json=spec(plate.parent.parent.parent / "sh200/plate/sh200.####.exr", farm_root, task_frames=3),
        headers=auth(),
    )
    assert response.status_code == 422 and fields(response) == ["task_frames"]
    assert "14 tasks per stage" in response.json()["message"] and "at least 4" in response.json()["message"]


def test_rush_priority_is_for_admins_at_submit_too(api: TestClient, shot: Path, farm_root: Path) -> None:
    refused = api.post("/jobs", json=spec(shot, farm_root, priority=100), headers=auth())
    assert refused.status_code == 403 and fields(refused) == ["priority"]
    assert api.post("/jobs", json=spec(shot, farm_root, priority=100), headers=auth(ADMIN)).status_code == 201


def test_a_frame_symlinked_out_of_the_read_roots_is_refused_before_it_is_opened(
    api: TestClient, shot: Path, farm_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    relink_out_of_roots(shot.parent / "sh010.1004.exr", tmp_path / "outside")
    opened: list[str] = []
    from workers.io import plate as plate_module

    real = plate_module.probe_image

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(plate_module, "probe_image", spy)
    response = api.post("/jobs", json=spec(shot, farm_root), headers=auth())
    assert response.status_code == 422 and fields(response) == ["plate"]
    assert "links to" in response.json()["message"] and opened == []  # refused before any frame was opened


def test_pages_carry_security_headers(api: TestClient) -> None:
    for path in ("/dashboard", "/jobs/abc123/refine"):
        page = api.get(path)
        assert page.status_code == 200
        assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert api.get("/healthz").headers["x-content-type-options"] == "nosniff"


def test_guessing_tokens_is_slowed_down(api: TestClient, settings: Settings) -> None:
    settings.auth_failures_limit = 3  # the app read its limiter at start: build a fresh one to match
    from services.api.security import AuthFailures

    api.app.state.auth_failures = AuthFailures(3, 60.0)  # type: ignore[attr-defined]
    wrong = {"Authorization": "Bearer not-a-token-at-all-0000"}
    assert [api.get("/jobs", headers=wrong).status_code for _ in range(3)] == [401, 401, 401]
    blocked = api.get("/jobs", headers=wrong)
    assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) >= 1
    assert "too many failed sign-ins" in blocked.json()["message"]
    assert api.get("/jobs", headers=auth()).status_code == 429  # the address waits, whatever it sends next


def test_unknown_query_parameters_are_named_and_repeated_states_all_count(
    api: TestClient, shot: Path, farm_root: Path
) -> None:
    job_id = api.post("/jobs", json=spec(shot, farm_root), headers=auth()).json()["id"]
    typo = api.get("/jobs", params={"stat": "queued"}, headers=auth())
    assert typo.status_code == 422 and fields(typo) == ["query.stat"] and "state" in typo.json()["message"]
    assert api.get(f"/jobs/{job_id}", params={"verbose": 1}, headers=auth()).status_code == 422
    both = api.get("/jobs?state=running&state=queued", headers=auth()).json()
    assert both["total"] == 1 and both["items"][0]["id"] == job_id  # not only the last state=
    assert api.get("/jobs?state=running&state=failed", headers=auth()).json()["total"] == 0
    assert api.get(f"/tasks/{1}/log", params={"tail": 5}, headers=auth()).status_code in (200, 404)
