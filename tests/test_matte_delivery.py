"""What a compositor's Read node gets: one job on an overscan, anamorphic plate with frame rate and
timecode, checked against the EXR, Cryptomatte and review conventions (reference C §8)."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import av
import cryptomatte_api
import cv2
import numpy as np
import OpenEXR
import pytest
from fastapi.testclient import TestClient

from farm_config import Settings
from schemas import JobState, JobStatus
from services.api.app import create_app
from services.composition import build_worker
from tests.factories import ALICE, TOKENS, RecordingQueue, run_tasks, submit, write_small_shot
from tests.plates import NTSC_FILM, exr_timecode, restamp_exr
from workers.io import cryptomatte
from workers.io.exr import read_exr_channels

HALF_STEP = 2.0**-11  # half's spacing just below 1.0
PLATE_WINDOWS = {"data": ((-16, -8), (143, 87)), "display": ((0, 0), (127, 79))}


@dataclass
class Delivered:
    job: JobStatus
    plate: Path
    frames: list[Path]
    settings: Settings


@pytest.fixture(scope="module")
def delivered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Delivered]:
    root = tmp_path_factory.mktemp("delivery").resolve()
    pattern = write_small_shot(root, "sh030", frames=10, objects=4, seed=7)
    # Overscan (data window starts negative, 16/8 px beyond a 128×80 display) and 2:1 anamorphic,
    # with a frame rate and per-frame timecode; the truth gets the same windows so it lines up.
    for folder in ("plate", "truth"):
        for path in sorted((root / "sh030" / folder).glob("*.exr")):
            frame = int(path.name.split(".")[-2])
            extra = {"framesPerSecond": NTSC_FILM, "timeCode": exr_timecode(frame)} if folder == "plate" else {}
            restamp_exr(path, data_origin=(-16, -8), display=(128, 80), pixel_aspect=2.0, extra=extra)
    settings = Settings(
        data_dir=root / "data", read_roots=[root], write_roots=[root], tokens=TOKENS, model_backend="synthetic"
    )
    runtime = build_worker(settings, register=False, broker=False)  # applies the migrations
    job_id = submit(settings, pattern, root)
    try:
        run_tasks(runtime, job_id)
        job = runtime.store.get(job_id)
    finally:
        runtime.close()
    assert job is not None and job.state == JobState.SUCCEEDED, job and job.error
    yield Delivered(job, pattern, sorted(Path(job.output_dir).glob("*.exr")), settings)
    shutil.rmtree(root, ignore_errors=True)


def test_one_single_part_zip_scanline_file_per_plate_frame(delivered: Delivered) -> None:
    job = delivered.job
    assert [int(p.name.split(".")[-2]) for p in delivered.frames] == list(range(1001, 1011))
    assert all(re.fullmatch(r"sh030_roto_v001\.\d{4}\.exr", p.name) for p in delivered.frames)
    names = {"A"} | {f"{layer.name}.A" for layer in job.layers}
    crypto = {f"CryptoObject0{i}.{c}" for i in range(3) for c in "RGBA"}
    for path in delivered.frames:
        exr = OpenEXR.File(str(path), separate_channels=True)
        assert len(exr.parts) == 1
        header = exr.header()
        assert header["compression"] == OpenEXR.ZIP_COMPRESSION
        assert header["type"] == OpenEXR.scanlineimage and header["lineOrder"] == OpenEXR.INCREASING_Y
        assert "name" not in header
        channels = exr.channels()
        assert set(channels) == names | crypto  # identical on every frame, present or not
        assert {n for n, c in channels.items() if c.pixels.dtype == np.float16} == names
        assert {n for n, c in channels.items() if c.pixels.dtype == np.float32} == crypto


def test_windows_and_pixel_aspect_are_the_plates(delivered: Delivered) -> None:
    for path in delivered.frames:
        header = OpenEXR.File(str(path), header_only=True).header()
        data = tuple(tuple(int(v) for v in corner) for corner in header["dataWindow"])
        display = tuple(tuple(int(v) for v in corner) for corner in header["displayWindow"])
        assert data == PLATE_WINDOWS["data"] and display == PLATE_WINDOWS["display"]
        assert header["pixelAspectRatio"] == 2.0
        channels, _ = read_exr_channels(path)
        assert channels["A"].shape == (96, 160)  # arrays are the data window, overscan included


def test_headers_carry_standard_attributes_and_provenance(delivered: Delivered) -> None:
    job = delivered.job
    for path in delivered.frames:
        frame = int(path.name.split(".")[-2])
        h = OpenEXR.File(str(path), header_only=True).header()
        plate_header = OpenEXR.File(str(delivered.plate).replace("####", str(frame)), header_only=True).header()
        assert h["owner"] == "alice" and "sh030 v001" in h["comments"]
        assert re.fullmatch(r"\d{4}:\d{2}:\d{2} \d{2}:\d{2}:\d{2}", h["capDate"]) and isinstance(h["utcOffset"], float)
        assert h["framesPerSecond"] == NTSC_FILM
        assert h["timeCode"] == plate_header["timeCode"]  # the plate frame's own, not invented
        assert h["mattefarm/sourceFrame"] == frame
        assert h["mattefarm/source"] == str(delivered.plate)
        assert h["mattefarm/version"] and h["mattefarm/randomWeights"] == "false"
        assert json.loads(h["mattefarm/models"])["backend"] == "synthetic"
        assert h["mattefarm/inputColourspace"] == "Linear Rec.709 (sRGB)"  # from the chromaticities
        # De-squeezed for inference: 160 px at 2:1 is 320 wide, under the 1024 cap.
        assert tuple(int(v) for v in h["mattefarm/inferenceSize"]) == (320, 96)
        objects = json.loads(h["mattefarm/objects"])
        assert set(objects) == {layer.name for layer in job.layers}
        assert all(o["label"] in ("ball", "box", "car") and o["prompt"] == job.spec.prompt for o in objects.values())


def test_cryptomatte_decodes_with_an_independent_reader(delivered: Delivered) -> None:
    names = [layer.name for layer in delivered.job.layers]
    assert names
    checked_overlap_free = 0
    for path in delivered.frames:
        mattes = cryptomatte_api.Cryptomatte.load(str(path))
        assert len(mattes) == 1
        matte = mattes[0]
        meta = matte.metadata()
        assert (meta.name(), meta.key(), meta.hash_method(), meta.conversion_method()) == (
            "CryptoObject",
            "3ae39a5",
            "MurmurHash3_32",
            "uint32_to_float32",
        )
        assert matte.num_levels() == 6
        assert sorted(meta.manifest().names()) == sorted(names)  # every layer, on every frame
        channels, _ = read_exr_channels(path)
        halves = np.stack([channels[f"{n}.A"].astype(np.float32) for n in names])
        expected = cryptomatte.normalised_coverage(halves)
        overlap_free = (halves > 0).sum(axis=0) <= 1
        for i, name in enumerate(names):
            decoded = np.asarray(matte.mask(name), np.float32)
            assert np.abs(decoded - expected[i]).max() <= 1e-6, name
            # Where objects don't overlap, the crypto matte is the half layer.
            assert np.abs(decoded - halves[i])[overlap_free].max() <= HALF_STEP
            checked_overlap_free += int(overlap_free.sum())
    assert checked_overlap_free > 0


def test_partition_invariants(delivered: Delivered) -> None:
    for path in delivered.frames[::3]:
        channels, _ = read_exr_channels(path)
        ids = [channels[f"CryptoObject0{i // 2}.{'RB'[i % 2]}"] for i in range(6)]
        cov = [channels[f"CryptoObject0{i // 2}.{'GA'[i % 2]}"] for i in range(6)]
        total = np.sum(cov, axis=0)
        assert total.min() >= 0 and total.max() <= 1 + 1e-6
        for upper, lower in pairwise(cov):
            assert (upper >= lower).all()  # ranks in descending coverage
        for rank_id, rank_cov in zip(ids, cov, strict=True):
            assert ((rank_id == 0) == (rank_cov == 0)).all()  # empty ranks: id 0.0, coverage 0


def test_review_movie_and_contact_sheet(delivered: Delivered) -> None:
    review = delivered.job.review
    assert review is not None
    with av.open(review.movie) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert stream.average_rate == NTSC_FILM
        assert "first_frame=1001 last_frame=1010" in container.metadata.get("comment", "")
    assert len(frames) == 10  # one per plate frame
    width, height = frames[0].width, frames[0].height
    assert width % 2 == 0 and height % 2 == 0
    assert (width, height) == (320, 96)  # de-squeezed for viewing
    sheet = cv2.imread(review.contact_sheet)
    assert sheet is not None and sheet.shape[0] > 96 and sheet.shape[1] >= 4 * 96
    manifest = json.loads(Path(delivered.job.manifest).read_text())
    assert manifest["review"] == {"movie": Path(review.movie).name, "contact_sheet": Path(review.contact_sheet).name}


def test_review_media_are_served_as_links(delivered: Delivered) -> None:
    auth = {"Authorization": f"Bearer {ALICE}"}
    with TestClient(create_app(delivered.settings, RecordingQueue())) as api:
        links = api.get(f"/jobs/{delivered.job.id}", headers=auth).json()["review"]
        for key, media in (("movie_url", "video/mp4"), ("contact_sheet_url", "image/jpeg")):
            response = api.get(links[key], headers=auth)
            assert response.status_code == 200 and response.headers["content-type"] == media
            assert len(response.content) > 1000
        assert api.get(f"/jobs/{delivered.job.id}/review/poster", headers=auth).status_code == 422
        assert api.get(links["movie_url"]).status_code == 401  # behind the token like the rest


def test_manifest_describes_the_plate_and_layers(delivered: Delivered) -> None:
    manifest = json.loads(Path(delivered.job.manifest).read_text())
    plate = manifest["plate"]
    assert plate["data_window"] == [[-16, -8], [143, 87]] and plate["pixel_aspect"] == 2.0
    assert plate["fps"] == "24000/1001" and plate["colourspace"] == "Linear Rec.709 (sRGB)"
    assert manifest["frames"] == "1001-1010" and manifest["missing_frames"] == []
    assert [layer["name"] for layer in manifest["layers"]] == [layer.name for layer in delivered.job.layers]
    assert all({"first_frame", "last_frame", "mean_score", "label"} <= set(layer) for layer in manifest["layers"])
    assert manifest["models"]["backend"] == "synthetic"
    assert {s["name"] for s in manifest["stages"]} == {"detect", "segment", "track", "export"}


def test_signed_review_links_open_without_a_token_until_they_expire(delivered: Delivered) -> None:
    import time
    from urllib.parse import parse_qs, urlsplit

    from services.farm.review_links import ReviewLinkSigner, review_link_secret

    auth = {"Authorization": f"Bearer {ALICE}"}
    job_id = delivered.job.id
    with TestClient(create_app(delivered.settings, RecordingQueue())) as api:
        assert api.post(f"/jobs/{job_id}/review/links").status_code == 401  # minting needs a token
        links = api.post(f"/jobs/{job_id}/review/links", params={"ttl_s": 600}, headers=auth).json()
        assert "Bearer" not in links["movie_url"] and ALICE not in links["movie_url"]
        for key, media in (("movie_url", "video/mp4"), ("contact_sheet_url", "image/jpeg")):
            opened = api.get(links[key])  # no header: what RV or a browser does
            assert opened.status_code == 200 and opened.headers["content-type"] == media
        query = parse_qs(urlsplit(links["movie_url"]).query)
        expires, sig = int(query["expires"][0]), query["sig"][0]
        # a link is for one file of one job: the sheet's path with the movie's signature is refused
        swapped = api.get(f"/jobs/{job_id}/review/contact-sheet", params={"expires": expires, "sig": sig})
        assert swapped.status_code == 401 and "not signed by this farm" in swapped.json()["message"]
        later = api.get(f"/jobs/{job_id}/review/movie", params={"expires": expires + 3600, "sig": sig})
        assert later.status_code == 401  # the expiry can't be moved
        past = ReviewLinkSigner(review_link_secret(delivered.settings)).sign(job_id, "movie", 60, now=time.time() - 61)
        expired = api.get(past.path)
        assert expired.status_code == 401 and "expired" in expired.json()["message"]
        half = api.get(f"/jobs/{job_id}/review/movie", params={"sig": sig})
        assert half.status_code == 422 and half.json()["problems"][0]["field"] == "query.expires"
        too_long = api.post(f"/jobs/{job_id}/review/links", params={"ttl_s": 10**9}, headers=auth)
        assert too_long.status_code == 422 and "ttl_s" in too_long.json()["problems"][0]["field"]
        spec = api.get("/openapi.json").json()["paths"]["/jobs/{job_id}/review/{kind}"]["get"]
        names = [p["name"] for p in spec["parameters"]]
        assert sorted(names) == ["expires", "job_id", "kind", "sig"]


def test_mattefarm_review_prints_links_rv_can_open(delivered: Delivered, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    from click.testing import CliRunner

    from services.cli import jobs
    from services.cli.main import cli
    from services.client import FarmClient

    with TestClient(create_app(delivered.settings, RecordingQueue())) as api:
        monkeypatch.setattr(jobs, "client", lambda: FarmClient("http://testserver", ALICE, transport=api._transport))
        printed = CliRunner().invoke(cli, ["review", delivered.job.id[:6], "--movie", "--ttl", "1"])
        assert printed.exit_code == 0, printed.output
        url = printed.output.strip()
        assert url.startswith("http://testserver/jobs/") and "sig=" in url
        with httpx.Client(transport=api._transport) as plain:  # no Authorization header
            assert plain.get(url).status_code == 200
