"""A plate submitted again is not listed, probed and colour-checked again while it is unchanged on
disk, and any change that matters (a frame gone, relinked out of the roots, rewritten) is seen."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from services.farm.plate_checks import PlateChecks
from tests.factories import auth, relink_out_of_roots


def _spec(plate: Path, root: Path) -> dict[str, object]:
    return {"plate": str(plate), "prompt": "ball, box", "output_root": str(root / "renders")}


@pytest.fixture
def probes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every plate frame header the submissions open."""
    from workers.io import plate as plate_module

    opened: list[str] = []
    real = plate_module.probe_image

    def spy(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.append(Path(path).name)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(plate_module, "probe_image", spy)
    return opened


def _later(path: Path) -> None:
    """Move a file's or folder's mtime on, past any filesystem's timestamp granularity."""
    at = time.time() + 5
    os.utime(path, (at, at))


def test_a_resubmitted_plate_is_not_checked_again(
    api: TestClient, shot: Path, farm_root: Path, probes: list[str]
) -> None:
    first = api.post("/jobs", json=_spec(shot, farm_root), headers=auth())
    assert first.status_code == 201, first.text
    assert probes == ["sh010.1001.exr", "sh010.1008.exr"]  # the first and last frames' headers
    again = api.post("/jobs", json=_spec(shot, farm_root), headers=auth())
    assert again.status_code == 201 and again.json()["version"] == first.json()["version"] + 1
    assert len(probes) == 2  # nothing opened the second time
    jobs = api.app.state.jobs  # type: ignore[attr-defined]
    assert (jobs.plates.hits, jobs.plates.misses) == (1, 1)
    # another frame range is another check
    assert api.post("/jobs", json=_spec(shot, farm_root) | {"frames": "1002-1005"}, headers=auth()).status_code == 201
    assert probes[2:] == ["sh010.1002.exr", "sh010.1005.exr"]


def test_a_frame_relinked_out_of_the_roots_after_a_check_is_refused_unopened(
    api: TestClient, shot: Path, farm_root: Path, tmp_path: Path, probes: list[str]
) -> None:
    assert api.post("/jobs", json=_spec(shot, farm_root), headers=auth()).status_code == 201
    relink_out_of_roots(shot.parent / "sh010.1004.exr", tmp_path / "outside")
    _later(shot.parent)
    probes.clear()
    response = api.post("/jobs", json=_spec(shot, farm_root), headers=auth())
    assert response.status_code == 422 and "links to" in response.json()["message"]
    assert probes == []  # refused before any frame was opened


def test_a_frame_removed_after_a_check_is_missing(api: TestClient, shot: Path, farm_root: Path) -> None:
    assert api.post("/jobs", json=_spec(shot, farm_root), headers=auth()).status_code == 201
    (shot.parent / "sh010.1005.exr").unlink()
    _later(shot.parent)
    response = api.post("/jobs", json=_spec(shot, farm_root), headers=auth())
    assert response.status_code == 422 and response.json()["problems"][0]["field"] == "frames"
    assert "1005" in response.json()["message"]


def test_a_rewritten_first_frame_is_probed_again(
    api: TestClient, shot: Path, farm_root: Path, probes: list[str]
) -> None:
    assert api.post("/jobs", json=_spec(shot, farm_root), headers=auth()).status_code == 201
    _later(shot.parent / "sh010.1001.exr")  # rewritten in place: the folder's mtime does not move
    probes.clear()
    assert api.post("/jobs", json=_spec(shot, farm_root), headers=auth()).status_code == 201
    assert probes == ["sh010.1001.exr", "sh010.1008.exr"]


def test_a_refusal_is_never_kept_and_the_cache_is_bounded(shot: Path) -> None:
    from workers.io.plate import resolve_plate

    checks, runs = PlateChecks(size=1), []

    def refuse() -> object:
        runs.append("refuse")
        raise ValueError("bad plate")

    for _ in range(2):
        with pytest.raises(ValueError):
            checks.check("bad", refuse)  # type: ignore[arg-type]
    assert runs == ["refuse", "refuse"]

    def good() -> object:
        runs.append("good")
        return resolve_plate(str(shot), None)

    checks.check("a", good)  # type: ignore[arg-type]
    checks.check("b", good)  # type: ignore[arg-type]
    checks.check("a", good)  # "a" was pushed out by "b": one check is kept
    assert runs.count("good") == 3 and (checks.hits, checks.misses) == (0, 3)
    assert PlateChecks(size=0).check("a", good) is not None and runs.count("good") == 4
