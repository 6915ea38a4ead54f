"""Refinement through the API: edits, undo and redo, bad input, permissions, and delivery of the
next version that leaves every earlier version byte for byte as it was."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from farm_config import Settings
from tests.factories import ADMIN, ALICE, BOB, WorkerQueue, auth, finished_job, propagate
from workers.io.exr import read_exr_channels


@pytest.fixture
def finished(settings: Settings, shot: Path, farm_root: Path) -> str:
    return finished_job(settings, shot, farm_root)


@pytest.fixture
def refine(api: TestClient, finished: str) -> Iterator[tuple[TestClient, str]]:
    yield api, finished


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _layers_png(api: TestClient, job: str, frame: int) -> np.ndarray:
    response = api.get(f"/jobs/{job}/refine/frames/{frame}/layers.png", headers=auth())
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    return cv2.imdecode(np.frombuffer(response.content, np.uint8), cv2.IMREAD_UNCHANGED)


def test_a_click_changes_the_layer_on_its_frame_and_undo_brings_it_back(refine: tuple[TestClient, str]) -> None:
    api, job = refine
    state = api.get(f"/jobs/{job}/refine/state", headers=auth()).json()
    assert state["can_edit"] and state["edits"] == 0 and state["layers"]
    width, height = state["size"]
    layer = state["layers"][0]["name"]
    frame = state["layers"][0]["frames"][0]
    index = [ly["name"] for ly in state["layers"]].index(layer) + 1
    before = _layers_png(api, job, frame)
    assert before.shape == (height, width)
    # a negative click in the middle of the layer removes a part of it
    ys, xs = np.nonzero(before == index)
    edit = {
        "kind": "click",
        "layer": layer,
        "frame": frame,
        "x": float(xs.mean()),
        "y": float(ys.mean()),
        "positive": False,
    }
    result = api.post(f"/jobs/{job}/refine/edits", json=edit, headers=auth())
    assert result.status_code == 200, result.text
    body = result.json()
    assert body["layer"] == layer and body["frames_changed"] == [frame] and body["state"]["edits"] == 1
    after = _layers_png(api, job, frame)
    assert (after == index).sum() < (before == index).sum()  # the pixels the page draws changed
    assert np.array_equal(after != index, (before != index) | (after != index))
    assert api.post(f"/jobs/{job}/refine/undo", headers=auth()).json()["edits"] == 0
    assert np.array_equal(_layers_png(api, job, frame), before)
    assert api.post(f"/jobs/{job}/refine/redo", headers=auth()).json()["edits"] == 1
    assert np.array_equal(_layers_png(api, job, frame), after)
    stored = api.get(f"/jobs/{job}/refine/edits", headers=auth()).json()
    assert [e["edit"]["kind"] for e in stored] == ["click"] and stored[0]["actor"] == "alice"


def test_bad_edits_are_refused_naming_the_field_and_change_nothing(refine: tuple[TestClient, str]) -> None:
    api, job = refine
    state = api.get(f"/jobs/{job}/refine/state", headers=auth()).json()
    layer, frame = state["layers"][0]["name"], state["frames"][0]
    width, _ = state["size"]
    cases = [
        ({"kind": "click", "layer": layer, "frame": frame, "x": width + 10, "y": 1}, "x"),
        ({"kind": "click", "layer": "nope_01", "frame": frame, "x": 1, "y": 1}, "layer"),
        ({"kind": "click", "layer": layer, "frame": 99999, "x": 1, "y": 1}, "frame"),
        ({"kind": "merge", "layer": layer, "into": layer}, "into"),
        ({"kind": "rename", "layer": layer, "to": "9bad"}, "to"),
        ({"kind": "click", "frame": frame, "x": 1, "y": 1}, "label"),
        ({"kind": "wave", "layer": layer}, "kind"),
    ]
    for edit, field in cases:
        response = api.post(f"/jobs/{job}/refine/edits", json=edit, headers=auth())
        assert response.status_code == 422, (edit, response.text)
        assert any(field in p["field"] for p in response.json()["problems"]), (edit, response.json())
    assert api.get(f"/jobs/{job}/refine/state", headers=auth()).json()["edits"] == 0
    # someone else's job: they may look, not edit
    look = api.get(f"/jobs/{job}/refine/state", headers=auth(BOB))
    assert look.status_code == 200 and not look.json()["can_edit"]
    edit = {"kind": "rename", "layer": layer, "to": "hero"}
    assert api.post(f"/jobs/{job}/refine/edits", json=edit, headers=auth(BOB)).status_code == 403
    assert api.post(f"/jobs/{job}/refine/edits", json=edit, headers=auth(ADMIN)).status_code == 200
    assert api.post(f"/jobs/{job}/refine/deliver", headers=auth(BOB)).status_code == 403
    assert api.get(f"/jobs/{job}/refine/state").status_code == 401
    assert api.post("/jobs/nojob/refine/undo", headers=auth()).status_code == 404


def test_delivery_writes_the_next_version_changing_only_the_edited_layer(
    refine: tuple[TestClient, str], farm_root: Path, settings: Settings
) -> None:
    api, job = refine
    status = api.get(f"/jobs/{job}", headers=auth(ALICE)).json()
    parent_dir = Path(status["output_dir"])
    parent_before = _hashes(parent_dir)
    state = api.get(f"/jobs/{job}/refine/state", headers=auth()).json()
    names = [ly["name"] for ly in state["layers"]]
    edited, kept = names[0], names[1:]
    frame = state["layers"][0]["frames"][len(state["layers"][0]["frames"]) // 2]
    index = names.index(edited) + 1
    ys, xs = np.nonzero(_layers_png(api, job, frame) == index)
    click = {
        "kind": "click",
        "layer": edited,
        "frame": frame,
        "x": float(xs.mean()),
        "y": float(ys.mean()),
        "positive": False,
    }
    assert api.post(f"/jobs/{job}/refine/edits", json=click, headers=auth()).status_code == 200
    propagated = propagate(api, settings, job, edited)
    assert propagated["state"] == "succeeded" and propagated["frames_changed"], propagated
    changed = set(propagated["frames_changed"]) | {frame}
    delivered = api.post(f"/jobs/{job}/refine/deliver", headers=auth())
    assert delivered.status_code == 200, delivered.text
    out = delivered.json()
    assert out["version"] == status["version"] + 1 and out["parent_version"] == status["version"]
    assert out["layers_rewritten"] == [edited]
    assert _hashes(parent_dir) == parent_before  # the parent version is untouched, byte for byte
    new_dir = Path(out["output_dir"])
    for parent_file in sorted(parent_dir.glob("*.exr")):
        frame_no = int(parent_file.name.split(".")[-2])
        new_file = next(new_dir.glob(f"*.{frame_no:04d}.exr"))
        old, _ = read_exr_channels(parent_file)
        new, header = read_exr_channels(new_file)
        assert header["mattefarm/parentVersion"] == str(status["version"])
        for name in kept:  # layers no edit touched: the parent's mattes exactly
            assert np.array_equal(new[f"{name}.A"], old[f"{name}.A"]), (frame_no, name)
        if frame_no not in changed:
            assert np.array_equal(new[f"{edited}.A"], old[f"{edited}.A"]), frame_no
    assert any(
        not np.array_equal(read_exr_channels(next(new_dir.glob(f"*.{f:04d}.exr")))[0][f"{edited}.A"],
                           read_exr_channels(next(parent_dir.glob(f"*.{f:04d}.exr")))[0][f"{edited}.A"])
        for f in changed
    )  # fmt: skip
    assert Path(out["manifest"]).exists()
    # delivering again makes the version after, and leaves both earlier ones as they were
    v2 = _hashes(new_dir)
    again = api.post(f"/jobs/{job}/refine/deliver", headers=auth()).json()
    assert again["version"] == out["version"] + 1
    assert _hashes(new_dir) == v2 and _hashes(parent_dir) == parent_before


def test_the_cli_replays_an_edit_list_and_delivers(
    refine: tuple[TestClient, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    from click.testing import CliRunner

    from services.cli import refine_bench
    from services.cli.main import cli
    from services.client import FarmClient

    api, job = refine
    state = api.get(f"/jobs/{job}/refine/state", headers=auth()).json()
    first = state["layers"][0]
    edits = {
        "edits": [
            {"kind": "rename", "layer": first["name"], "to": "hero"},
            {"kind": "brush", "layer": "hero", "frame": first["frames"][0], "points": [[5, 5], [12, 9]], "radius": 3},
            {"kind": "propagate", "layer": "hero"},
        ]
    }
    path = tmp_path / "edits.json"
    path.write_text(json.dumps(edits))
    monkeypatch.setattr(api.app.state.refine, "broker", WorkerQueue(settings))  # type: ignore[attr-defined]
    transport = api._transport  # the in-process app, as the CLI's client transport
    monkeypatch.setattr(refine_bench, "client", lambda: FarmClient("http://testserver", ALICE, transport=transport))
    result = CliRunner().invoke(cli, ["refine", job, "--edits", str(path), "--deliver"])
    assert result.exit_code == 0, result.output
    assert "3 edit(s) applied" in result.output and "delivered v002" in result.output
    names = [ly["name"] for ly in api.get(f"/jobs/{job}/refine/state", headers=auth()).json()["layers"]]
    assert "hero" in names and first["name"] not in names
    # a bad file names the edit and the field; nothing is applied
    path.write_text('{"edits": [{"kind": "merge", "layer": "hero"}]}')
    bad = CliRunner().invoke(cli, ["refine", job, "--edits", str(path)])
    assert bad.exit_code == 1 and "edits.0.merge.into" in bad.output
    path.write_text('{"edits": [{"kind": "merge", "layer": "hero", "into": "hero"}]}')
    refused = CliRunner().invoke(cli, ["refine", job, "--edits", str(path)])
    assert refused.exit_code == 1 and "edit 1 (merge)" in refused.output and "itself" in refused.output


def test_refinement_is_in_metrics(refine: tuple[TestClient, str], settings: Settings) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    api, job = refine
    state = api.get(f"/jobs/{job}/refine/state", headers=auth()).json()
    layer, frame = state["layers"][0]["name"], state["layers"][0]["frames"][0]
    for x in (4.0, 6.0):
        click = {"kind": "click", "layer": layer, "frame": frame, "x": x, "y": 4.0, "positive": True}
        assert api.post(f"/jobs/{job}/refine/edits", json=click, headers=auth()).status_code == 200
    assert propagate(api, settings, job, layer)["state"] == "succeeded"
    text = api.get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert samples[("mattefarm_refine_edits_total", (("kind", "click"),))] == 2
    assert samples[("mattefarm_refine_edits_total", (("kind", "propagate"),))] == 1
    assert samples[("mattefarm_refine_propagations", (("state", "succeeded"),))] == 1
    assert samples[("mattefarm_refine_propagations", (("state", "running"),))] == 0
    assert samples[("mattefarm_refine_edit_seconds_count", (("kind", "click"),))] == 2
    assert samples[("mattefarm_refine_edit_seconds_bucket", (("kind", "click"), ("le", "+Inf")))] == 2
    for name in ("mattefarm_refine_edit_seconds", "mattefarm_stage_seconds", "mattefarm_task_seconds"):
        assert text.count(f"# HELP {name} ") == 1, name  # one family per name, as Prometheus requires


def test_sessions_are_bounded_and_a_reopened_job_replays_its_edits(
    refine: tuple[TestClient, str], settings: Settings, shot: Path, farm_root: Path
) -> None:
    api, first = refine
    settings.refine_sessions = 1
    layer = api.get(f"/jobs/{first}/refine/state", headers=auth()).json()["layers"][0]["name"]
    edit = {"kind": "rename", "layer": layer, "to": "kept_name"}
    assert api.post(f"/jobs/{first}/refine/edits", json=edit, headers=auth()).status_code == 200
    second = finished_job(settings, shot, farm_root)
    assert api.get(f"/jobs/{second}/refine/state", headers=auth()).status_code == 200
    service = api.app.state.refine  # type: ignore[attr-defined]
    assert list(service._sessions) == [second]  # the first was let go
    names = [ly["name"] for ly in api.get(f"/jobs/{first}/refine/state", headers=auth()).json()["layers"]]
    assert "kept_name" in names  # reopened by replaying its stored edits


def test_a_replay_reuses_a_propagation_instead_of_tracking_again(
    refine: tuple[TestClient, str], settings: Settings
) -> None:
    api, job = refine
    state = api.get(f"/jobs/{job}/refine/state", headers=auth()).json()
    layer = state["layers"][0]
    frame = layer["frames"][len(layer["frames"]) // 2]
    brush = {"kind": "brush", "layer": layer["name"], "frame": frame, "points": [[6, 6], [14, 9]], "radius": 3}
    assert api.post(f"/jobs/{job}/refine/edits", json=brush, headers=auth()).status_code == 200
    done = propagate(api, settings, job, layer["name"])
    assert done["state"] == "succeeded" and done["edit_seq"] == 2
    service = api.app.state.refine  # type: ignore[attr-defined]
    tracker = service.models.get(service.settings).tracker
    after = _layers_png(api, job, layer["frames"][0])  # the API applied the worker's result…
    assert api.post(f"/jobs/{job}/refine/undo", headers=auth()).status_code == 200
    assert api.post(f"/jobs/{job}/refine/redo", headers=auth()).status_code == 200
    assert np.array_equal(_layers_png(api, job, layer["frames"][0]), after)  # …again after undo and redo…
    assert tracker.counters["tracking_steps"] == 0  # …and never tracked in the API process


def test_a_propagations_progress_is_readable_while_it_runs_and_edits_wait_for_it(
    refine: tuple[TestClient, str], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.composition import build_worker

    api, job = refine
    assert api.get(f"/jobs/{job}/refine/progress", headers=auth()).json() is None
    layer = api.get(f"/jobs/{job}/refine/state", headers=auth()).json()["layers"][0]
    frame = layer["frames"][len(layer["frames"]) // 2]
    brush = {"kind": "brush", "layer": layer["name"], "frame": frame, "points": [[6, 6]], "radius": 3}
    assert api.post(f"/jobs/{job}/refine/edits", json=brush, headers=auth()).status_code == 200
    asked = api.post(f"/jobs/{job}/refine/edits", json={"kind": "propagate", "layer": layer["name"]}, headers=auth())
    task = asked.json()["propagation"]
    assert asked.status_code == 200 and task["state"] == "queued" and asked.json()["seq"] is None
    assert api.app.state.refine.broker.propagations == [(task["task_id"], settings.refine_queue)]  # type: ignore[attr-defined]
    # while it is open, other edits, undo and delivery wait (409 naming it), and a second propagation too
    for path, body in (
        ("edits", brush),
        ("undo", None),
        ("deliver", None),
        ("edits", {"kind": "propagate", "layer": layer["name"]}),
    ):
        refused = api.post(f"/jobs/{job}/refine/{path}", json=body, headers=auth())
        assert refused.status_code == 409 and "propagating" in refused.json()["message"], (path, refused.text)
    worker = build_worker(settings, register=False, broker=False)
    tracker = worker.models.tracker
    seen: list[dict] = []
    track = tracker.track

    def slow_track(frames, prompts):  # type: ignore[no-untyped-def]
        for n, out in enumerate(track(frames, prompts)):
            if n == 2 and not seen:
                time.sleep(0.3)  # past the runner's progress period
            if n == 3 and not seen:
                seen.append(api.get(f"/jobs/{job}/refine/progress", headers=auth()).json())
            yield out

    monkeypatch.setattr(tracker, "track", slow_track)
    try:
        assert worker.run_propagation(task["task_id"]) is not None
        assert worker.run_propagation(task["task_id"]) is None  # a duplicate message: a no-op
    finally:
        worker.close()
    (during,) = seen
    assert during["running"] and during["state"] == "running" and during["worker"] == worker.name
    assert 0 < during["frames_done"] < during["frames_total"] and during["layer"] == layer["name"]
    after = api.get(f"/jobs/{job}/refine/progress", headers=auth()).json()
    assert after["state"] == "succeeded" and not after["running"] and after["frames_done"] == after["frames_total"]
    stored = api.get(f"/jobs/{job}/refine/edits", headers=auth()).json()
    assert [e["edit"]["kind"] for e in stored] == ["brush", "propagate"]  # stored once, by the worker
    assert api.post(f"/jobs/{job}/refine/undo", headers=auth()).status_code == 200  # edits flow again


class Killed(BaseException):
    """What a SIGKILL does to a propagation: it stops, and nothing in the process records it."""


@pytest.mark.parametrize("kill_at", [0, 3, 7])
def test_a_worker_killed_mid_propagation_is_replaced_and_the_edit_is_stored_once(
    refine: tuple[TestClient, str], settings: Settings, monkeypatch: pytest.MonkeyPatch, kill_at: int
) -> None:
    from services.composition import build_dispatcher, build_worker

    api, job = refine
    # The API's own dispatcher loop keeps the default staleness (30 s), so only this test's
    # dispatcher, with 0.2 s, finds the dead worker's propagation: no race with the loop.
    quick = settings.model_copy(update={"refine_stale_s": 0.2})
    layer = api.get(f"/jobs/{job}/refine/state", headers=auth()).json()["layers"][0]
    frame = layer["frames"][len(layer["frames"]) // 2]
    brush = {"kind": "brush", "layer": layer["name"], "frame": frame, "points": [[6, 6]], "radius": 3}
    assert api.post(f"/jobs/{job}/refine/edits", json=brush, headers=auth()).status_code == 200
    asked = api.post(f"/jobs/{job}/refine/edits", json={"kind": "propagate", "layer": layer["name"]}, headers=auth())
    task_id = asked.json()["propagation"]["task_id"]
    doomed = build_worker(settings, register=False, broker=False, name="doomed:1")
    track, steps = doomed.models.tracker.track, [0]

    def dies(frames, prompts):  # type: ignore[no-untyped-def]
        for out in track(frames, prompts):
            if steps[0] == kill_at:  # counted over both directions: a kill anywhere in the propagation
                raise Killed
            steps[0] += 1
            yield out

    monkeypatch.setattr(doomed.models.tracker, "track", dies)
    with pytest.raises(Killed):
        doomed.run_propagation(task_id)
    doomed.close()
    held = api.get(f"/jobs/{job}/refine/progress", headers=auth()).json()
    assert held["state"] == "running" and held["worker"] == "doomed:1"  # what the kill left
    queue = api.app.state.refine.broker  # type: ignore[attr-defined]
    dispatcher = build_dispatcher(quick, api.app.state.refine.stores, queue, "test")  # type: ignore[attr-defined]
    dispatcher.reconcile_propagations()
    assert queue.propagations == [(task_id, settings.refine_queue)]  # not yet stale: not sent again
    time.sleep(0.3)
    dispatcher.reconcile_propagations()
    assert queue.propagations[-1] == (task_id, settings.refine_queue) and len(queue.propagations) == 2
    rescuer = build_worker(settings, register=False, broker=False, name="rescuer:1")
    try:
        rescuer.run_propagation(task_id)
    finally:
        rescuer.close()
    done = api.get(f"/jobs/{job}/refine/progress", headers=auth()).json()
    assert done["state"] == "succeeded" and done["worker"] == "rescuer:1" and done["attempts"] == 2
    stored = api.get(f"/jobs/{job}/refine/edits", headers=auth()).json()
    assert [e["edit"]["kind"] for e in stored] == ["brush", "propagate"]


def test_a_propagation_whose_workers_keep_dying_fails_saying_why(
    refine: tuple[TestClient, str], settings: Settings
) -> None:
    from services.composition import build_dispatcher

    api, job = refine
    quick = settings.model_copy(update={"refine_stale_s": 0.05, "refine_attempts": 2})  # this test's dispatcher only
    layer = api.get(f"/jobs/{job}/refine/state", headers=auth()).json()["layers"][0]["name"]
    task_id = api.post(f"/jobs/{job}/refine/edits", json={"kind": "propagate", "layer": layer}, headers=auth()).json()[
        "propagation"
    ]["task_id"]
    stores = api.app.state.refine.stores  # type: ignore[attr-defined]
    dispatcher = build_dispatcher(quick, stores, api.app.state.refine.broker, "test")  # type: ignore[attr-defined]
    for n in range(2):
        assert stores.refine_tasks.claim(task_id, f"dies:{n}") is not None  # a worker takes it and is killed
        time.sleep(0.1)
        dispatcher.reconcile_propagations()
    failed = api.get(f"/jobs/{job}/refine/progress", headers=auth()).json()
    assert failed["state"] == "failed" and "2 workers stopped" in failed["error"] and "dies:1" in failed["error"]
    again = api.post(f"/jobs/{job}/refine/edits", json={"kind": "propagate", "layer": layer}, headers=auth())
    assert again.status_code == 200  # the artist may ask again
