"""Plates in: sequence spellings, holes, every readable format, colour, geometry, prefetch."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import OpenEXR
import OpenImageIO as oiio
import pytest
from fastapi.testclient import TestClient

from farm_config import Settings
from schemas import JobState
from tests.factories import ALICE
from tests.plates import write_exr_plate, write_oiio_plate
from workers.io.colour import ColourConverter, cineon_to_linear, linear_to_srgb, srgb_to_linear
from workers.io.plate import PlateDecoder, PlateError, resolve_plate
from workers.pipeline.export import plate_matte
from workers.pipeline.frames import FrameSource

AUTH = {"Authorization": f"Bearer {ALICE}"}


def decoder_for(
    pattern: Path,
    settings: Settings,
    *,
    max_side: int = 1024,
    part: str | None = None,
    colourspace: str | None = None,
    use_ocio: bool = True,
) -> PlateDecoder:
    plate = resolve_plate(str(pattern), None, part=part)
    return PlateDecoder.configured(plate, max_side, colourspace, settings.model_copy(update={"use_ocio": use_ocio}))


# --- sequences ------------------------------------------------------------------------------


@pytest.mark.parametrize("token", ["####", "%04d", "$F4", "@@@@"])
def test_sequence_spellings_name_the_same_plate(api: TestClient, shot: Path, farm_root: Path, token: str) -> None:
    pattern = str(shot).replace("####", token)
    response = api.post(
        "/jobs", json={"plate": pattern, "prompt": "ball", "output_root": str(farm_root / "out")}, headers=AUTH
    )
    assert response.status_code == 201, response.text
    job = api.get(f"/jobs/{response.json()['id']}", headers=AUTH).json()
    assert job["frames"] == list(range(1001, 1009))
    assert job["output_pattern"].endswith("sh010_roto_v001.####.exr")


@pytest.fixture
def holey_shot(shot: Path) -> Path:
    """Frames 1001-1006 and 1008 of the 8-frame shot: 1007 is missing."""
    (shot.parent / "sh010.1007.exr").unlink()
    return shot


def test_a_hole_in_the_range_is_refused_with_the_missing_frames(
    api: TestClient, holey_shot: Path, farm_root: Path
) -> None:
    for frames in ("1001-1008", None):  # named, or the plate's own span
        body = {"plate": str(holey_shot), "prompt": "ball", "output_root": str(farm_root / "out"), "frames": frames}
        response = api.post("/jobs", json=body, headers=AUTH)
        assert response.status_code == 422
        problem = response.json()["problems"][0]
        assert problem["field"] == "frames"
        assert "missing from the plate: 1007" in problem["message"] and "on_missing_frames" in problem["message"]


def test_skipped_frames_are_listed_and_outputs_keep_plate_numbers(
    settings: Settings, holey_shot: Path, farm_root: Path
) -> None:
    from services.composition import build_worker
    from tests.factories import run_tasks, submit

    runtime = build_worker(settings, register=False, broker=False)
    try:
        job_id = submit(settings, holey_shot, farm_root, frames="1001-1008", on_missing_frames="skip")
        run_tasks(runtime, job_id)
        job = runtime.store.get(job_id)
    finally:
        runtime.close()
    assert job.state == JobState.SUCCEEDED, job.error
    assert job.frames == [1001, 1002, 1003, 1004, 1005, 1006, 1008] and job.missing_frames == [1007]
    written = sorted(int(p.name.split(".")[-2]) for p in Path(job.output_dir).glob("*.exr"))
    assert written == job.frames  # output numbers are plate numbers; nothing invented for 1007
    manifest = json.loads(Path(job.manifest).read_text())
    assert manifest["missing_frames"] == [1007] and manifest["frames"] == "1001-1006,1008"


# --- formats --------------------------------------------------------------------------------


def _gradient(h: int = 48, w: int = 64) -> np.ndarray:
    x = np.linspace(0.02, 0.98, w, dtype=np.float32)
    y = np.linspace(0.1, 0.9, h, dtype=np.float32)
    return np.stack([np.tile(x, (h, 1)), np.tile(y[:, None], (1, w)), np.full((h, w), 0.5, np.float32)], -1)


@pytest.mark.parametrize(
    ("suffix", "fmt", "bits", "tolerance"),
    [("png", "uint8", None, 1), ("tif", "uint16", None, 1), ("jpg", "uint8", None, 6)],
)
def test_display_referred_formats_reach_the_models_unchanged(
    tmp_path: Path, settings: Settings, suffix: str, fmt: str, bits: int | None, tolerance: int
) -> None:
    encoded = _gradient()
    for frame in (1001, 1002):
        write_oiio_plate(tmp_path / f"p.{frame}.{suffix}", encoded, fmt=fmt, bits=bits)
    decoder = decoder_for(tmp_path / f"p.####.{suffix}", settings)
    assert decoder.colour.colourspace == "sRGB Encoded Rec.709 (sRGB)"
    frame = decoder.model_frame(1001)
    expected = np.round(encoded * 255).astype(np.int16)
    assert frame.shape == (48, 64, 3) and np.abs(frame.astype(np.int16) - expected).max() <= tolerance


def test_dpx_10bit_is_read_as_cineon_log(tmp_path: Path, settings: Settings) -> None:
    codes = np.array([95, 470, 685], np.float32) / 1023.0
    image = np.repeat(np.repeat(codes[None, :, None], 3, axis=2), 4, axis=0)  # 4×3 px, three greys
    for frame in (1, 2):
        write_oiio_plate(tmp_path / f"scan.{frame:04d}.dpx", image, fmt="uint16", bits=10)
    decoder = decoder_for(tmp_path / "scan.####.dpx", settings)
    assert decoder.plate.info.bits == 10 and decoder.colour.colourspace == "Cineon"
    linear = decoder.linear(1)
    np.testing.assert_allclose(linear[0, :, 0], [0.0, 0.1823, 1.0], atol=2e-3)


def _smpte(h: int, m: int, s: int, f: int, drop: bool = False) -> int:
    bcd = lambda v: ((v // 10) << 4) | (v % 10)  # noqa: E731
    return (bcd(h) << 24) | (bcd(m) << 16) | (bcd(s) << 8) | bcd(f) | (0x40 if drop else 0)


def test_dpx_timecode_goes_into_the_mattes_and_the_burn_in(tmp_path: Path, settings: Settings) -> None:
    from workers.io.exr import read_exr_header, write_exr_atomic
    from workers.provenance import FrameHeaders

    image = np.full((4, 6, 3), 0.4, np.float32)
    stamps = {1001: (10, 0, 59, 23), 1002: (10, 1, 0, 0)}  # the plate's own timecode, across a minute
    for frame, (h, m, s, f) in stamps.items():
        write_oiio_plate(
            tmp_path / f"scan.{frame}.dpx", image, fmt="uint16", bits=10,
            attrs={"smpte:TimeCode": (oiio.TypeDesc("timecode"), (_smpte(h, m, s, f, drop=True), 0x1234))},
        )  # fmt: skip
    decoder = decoder_for(tmp_path / "scan.####.dpx", settings)
    headers = FrameHeaders(decoder.plate)
    assert headers.timecode_text(1001) == "10:00:59:23" and headers.timecode_text(1002) == "10:01:00:00"
    matte = tmp_path / "matte.1002.exr"
    write_exr_atomic(matte, {"A": np.zeros((4, 6), np.float16)}, headers(1002))
    written = read_exr_header(matte)["timeCode"]
    assert (written.hours, written.minutes, written.seconds, written.frame) == (10, 1, 0, 0)
    assert written.dropFrame and written.userData == 0x1234


def test_a_dpx_without_timecode_gets_none_invented(tmp_path: Path, settings: Settings) -> None:
    from workers.provenance import FrameHeaders

    write_oiio_plate(tmp_path / "scan.1001.dpx", np.zeros((4, 6, 3), np.float32), fmt="uint16", bits=10)
    headers = FrameHeaders(decoder_for(tmp_path / "scan.####.dpx", settings).plate)
    assert headers.timecode_text(1001) is None and "timeCode" not in headers(1001)


def test_cineon_code_values() -> None:
    np.testing.assert_allclose(cineon_to_linear(np.array([95, 470, 685], np.float32) / 1023), [0, 0.1823, 1], atol=1e-3)


@pytest.mark.parametrize(
    "compression",
    [OpenEXR.ZIP_COMPRESSION, OpenEXR.PIZ_COMPRESSION, OpenEXR.DWAA_COMPRESSION, OpenEXR.B44_COMPRESSION],
)
@pytest.mark.parametrize("tiled", [False, True])
def test_exr_compressions_and_tiling_read_alike(
    tmp_path: Path, settings: Settings, compression: OpenEXR.Compression, tiled: bool
) -> None:
    rgb = _gradient()
    write_exr_plate(tmp_path / "p.1001.exr", rgb, compression=compression, tiled=tiled)
    decoder = decoder_for(tmp_path / "p.####.exr", settings, colourspace="linear")
    lossy = compression in (OpenEXR.DWAA_COMPRESSION, OpenEXR.B44_COMPRESSION)
    np.testing.assert_allclose(decoder.linear(1001), rgb, atol=0.02 if lossy else 1e-3)


def test_multipart_exr_takes_the_named_or_first_rgb_part(tmp_path: Path, settings: Settings) -> None:
    rgb = _gradient()
    write_exr_plate(tmp_path / "p.1001.exr", rgb, other_parts=True, part_name="beauty")
    first_rgb = decoder_for(tmp_path / "p.####.exr", settings, colourspace="linear")
    assert first_rgb.plate.info.part == "beauty"  # the depth part comes first and has no RGB
    np.testing.assert_allclose(first_rgb.linear(1001), rgb, atol=1e-3)
    assert decoder_for(tmp_path / "p.####.exr", settings, part="beauty", colourspace="linear").plate.info.part
    with pytest.raises(PlateError) as err:
        resolve_plate(str(tmp_path / "p.####.exr"), None, part="diffuse")
    assert err.value.field == "plate_part" and "'depth', 'beauty'" in err.value.message


def test_a_plate_that_changes_size_is_refused(tmp_path: Path) -> None:
    write_exr_plate(tmp_path / "p.1001.exr", _gradient(48, 64))
    write_exr_plate(tmp_path / "p.1002.exr", _gradient(50, 64))
    with pytest.raises(PlateError, match="keep one format"):
        resolve_plate(str(tmp_path / "p.####.exr"), None)


def test_an_unknown_colourspace_is_refused_at_submit(api: TestClient, shot: Path, farm_root: Path) -> None:
    body = {"plate": str(shot), "prompt": "ball", "output_root": str(farm_root / "o"), "colourspace": "Kodak 5219"}
    response = api.post("/jobs", json=body, headers=AUTH)
    assert response.status_code == 422
    problem = response.json()["problems"][0]
    assert problem["field"] == "colourspace" and "ACEScg" in problem["message"]


# --- colour ---------------------------------------------------------------------------------


def test_acescg_mid_grey_through_the_pinned_config() -> None:
    """Golden value: ACEScg 0.18 → sRGB display through ACES 1.0 SDR Video, studio config 2.2.0."""
    colour = ColourConverter("ACEScg")
    assert colour.engine == "ocio" and "studio-config-v2.2.0_aces-v1.3_ocio-v2.4" in colour.describe()
    grey = colour.to_display(np.full((1, 1, 3), 0.18, np.float32))
    assert np.round(grey * 255).astype(int).tolist() == [[[91, 91, 91]]]


def test_plain_curve_fallback_without_ocio() -> None:
    colour = ColourConverter("ACEScg", use_ocio=False)
    assert colour.engine == "fallback"
    grey = colour.to_display(np.full((1, 1, 3), 0.18, np.float32))
    assert np.round(grey * 255).astype(int).tolist() == [[[118, 118, 118]]]  # sRGB OETF, no tone curve


def test_downscaling_happens_in_linear_light(tmp_path: Path, settings: Settings) -> None:
    checker = np.indices((64, 64)).sum(axis=0) % 2  # 0/1 pixels: half the light
    write_exr_plate(tmp_path / "c.1001.exr", np.repeat(checker[..., None], 3, -1).astype(np.float32))
    decoder = decoder_for(tmp_path / "c.####.exr", settings, max_side=8, colourspace="linear", use_ocio=False)
    frame = decoder.model_frame(1001)
    assert frame.shape == (8, 8, 3)
    # Averaging light gives 0.5 linear, which displays as 188; averaging display values would give 128.
    assert int(np.median(frame)) == round(float(linear_to_srgb(np.float32(0.5))) * 255)


# --- geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize("pixel_aspect", [1.0, 2.0])
def test_a_plate_rectangle_lands_on_the_same_output_pixels(
    tmp_path: Path, settings: Settings, pixel_aspect: float
) -> None:
    """Overscan plate (data window from -64,-36), optionally 2:1 anamorphic; inference at ≤1024 px."""
    w, h = 2048, 1152
    x0, x1, y0, y1 = 301, 1377, 203, 809  # rectangle edges in data-window pixels, off the working grid
    rgb = np.zeros((h, w, 3), np.float32)
    rgb[y0:y1, x0:x1] = 1.0
    write_exr_plate(
        tmp_path / "r.1001.exr", rgb, data_origin=(-64, -36), display=(1920, 1080), pixel_aspect=pixel_aspect
    )
    decoder = decoder_for(tmp_path / "r.####.exr", settings, colourspace="linear", use_ocio=False)
    working = decoder.size
    assert working == {1.0: (1024, 576), 2.0: (1024, 288)}[pixel_aspect]  # de-squeezed, then ≤1024
    frame = decoder.model_frame(1001)
    # A model whose logits follow its input's coverage: the test isolates geometry, not model quality.
    coverage = srgb_to_linear(frame[..., 0].astype(np.float32) / 255.0)
    matte = plate_matte(16.0 * (coverage - 0.5), (w, h))
    assert matte.shape == (h, w)

    def crossing(profile: np.ndarray, rising: bool) -> float:
        """Where the matte crosses 0.5, in continuous pixel coordinates (centre of pixel p is p + 0.5)."""
        values = profile if rising else profile[::-1]
        i = int(np.argmax(values >= 0.5))
        t = (0.5 - values[i - 1]) / (values[i] - values[i - 1])
        pos = i - 1 + t + 0.5
        return pos if rising else len(profile) - pos

    row, col = matte[(y0 + y1) // 2], matte[:, (x0 + x1) // 2]
    errors = [crossing(row, True) - x0, crossing(row, False) - x1, crossing(col, True) - y0, crossing(col, False) - y1]
    assert max(abs(e) for e in errors) <= 0.5, errors
    inside = matte >= 0.5
    truth = np.zeros((h, w), bool)
    truth[y0:y1, x0:x1] = True
    assert (inside != truth).sum() <= 2 * ((x1 - x0) + (y1 - y0))  # at most a one-pixel band on the edges


# --- decoding ahead -------------------------------------------------------------------------


def test_frames_are_decoded_ahead_in_the_direction_of_access(shot: Path, settings: Settings) -> None:
    inline = FrameSource(decoder_for(shot, settings), keep=4, threads=0)
    with FrameSource(decoder_for(shot, settings), keep=4, threads=2, ahead=3) as ahead:
        first = ahead.at(0)
        assert set(ahead._pending) == {1, 2, 3}
        np.testing.assert_array_equal(first.image, inline.at(0).image)
        for pos in range(1, 8):
            np.testing.assert_array_equal(ahead.at(pos).image, inline.at(pos).image)
        ahead.at(4)  # a backward tracking pass: prefetch turns round
        assert set(ahead._pending) <= {3, 2, 1} and set(ahead._pending)
        assert ahead.decoded <= 8 + 3 and ahead.frames == inline.frames


def test_plates_are_never_written(shot: Path, settings: Settings, farm_root: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in shot.parent.iterdir()}
    copy = farm_root / "copy"
    shutil.copytree(shot.parent, copy)
    decoder = decoder_for(shot, settings)
    for frame in decoder.plate.frames:
        decoder.model_frame(frame)
    assert {p.name: p.stat().st_mtime_ns for p in shot.parent.iterdir()} == before
    assert all((copy / name).read_bytes() == (shot.parent / name).read_bytes() for name in before)


def test_the_io_benchmark_writes_mattes_that_show_every_layer() -> None:
    from workers.bench.plate_io import _mattes

    for step in range(8):
        mattes = _mattes(320, 180, 4, step)
        assert len(mattes) == 4 and all(float(m.astype(np.float32).mean()) > 0.01 for m in mattes)


def test_layer_scratch_comes_back_exactly_and_the_io_benchmark_times_it(tmp_path: Path) -> None:
    from workers.bench.plate_io import _scratch_logits, _scratch_rows
    from workers.pipeline.scratch import LayerStore, TrackedMask

    logits = _scratch_logits(256, 144, 3, step=2, seed=0)
    # smooth logits of many values, as SAM2's are: a hard ±8 mask would make the codec look free
    assert all(lg.dtype == np.int16 and len(np.unique(lg)) > 1000 and (lg > 0).any() for lg in logits)
    store = LayerStore(tmp_path / "layers", keep=1)  # keeping one: the other frame spills to disk
    for pos in range(2):
        store.put(pos, {lid + 1: TrackedMask(lg, 0.5 + pos) for lid, lg in enumerate(logits)})
    store.flush()
    again = LayerStore(tmp_path / "layers", keep=1)
    for pos in range(2):
        layers = again.get(pos)
        assert sorted(layers) == [1, 2, 3] and all(layers[lid].quality == 0.5 + pos for lid in layers)
        assert all(np.array_equal(layers[lid + 1].logits, lg) for lid, lg in enumerate(logits))
    rows = _scratch_rows(tmp_path / "bench", "640x360", 640, 360, frames=3, layers=2, max_side=256)
    assert [r.operation for r in rows] == ["scratch write, 2 layers at 256x144", "scratch load, 2 layers at 256x144"]
    assert all(r.frames == 3 and r.seconds > 0 and r.file_mb > 0.2 for r in rows)  # 2 × 256×144 int16 × 3
