"""The evaluator on hand-made mattes: perfect layers score J = 1; swapped, split and stray layers
are counted as ID switches, fragments and false layers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from farm_config import Settings
from workers.io.exr import write_exr_atomic
from workers.synthetic.evaluate import evaluate

H, W = 24, 32


def truth_frame(obj1_x: int | None, obj2_x: int | None) -> np.ndarray:
    ids = np.zeros((H, W), np.float32)
    if obj1_x is not None:
        ids[2:10, obj1_x : obj1_x + 8] = 1
    if obj2_x is not None:
        ids[14:22, obj2_x : obj2_x + 8] = 2
    return ids


def write_case(root: Path, truth: list[np.ndarray], layers: list[dict[str, np.ndarray]]) -> tuple[Path, Path]:
    truth_dir, out_dir = root / "truth", root / "out"
    truth_dir.mkdir(parents=True)
    out_dir.mkdir()
    (truth_dir / "objects.json").write_text(
        json.dumps({"objects": [{"id": 1, "label": "ball"}, {"id": 2, "label": "car"}]})
    )
    names = sorted({n for frame in layers for n in frame})
    for i, (ids, frame_layers) in enumerate(zip(truth, layers, strict=True)):
        write_exr_atomic(truth_dir / f"s_truth.{1001 + i}.exr", {"id": ids}, {})
        channels = {f"{n}.A": frame_layers.get(n, np.zeros((H, W), np.float32)).astype(np.float16) for n in names}
        write_exr_atomic(out_dir / f"s_roto_v001.{1001 + i}.exr", channels, {})
    return out_dir, truth_dir


def test_perfect_layers_score_one(tmp_path: Path) -> None:
    truth = [truth_frame(2 + i, 20 - i) for i in range(6)]
    layers = [{"ball_01": t == 1, "car_01": t == 2} for t in truth]
    score = evaluate(*write_case(tmp_path, truth, layers))
    assert score.j == pytest.approx(1.0)
    assert (score.id_switches, score.fragments, score.false_layers, score.objects) == (0, 0, 0, 2)
    assert score.late_recall is None


def test_cryptomatte_planes_are_not_layers(tmp_path: Path) -> None:
    truth = [truth_frame(2 + i, 20 - i) for i in range(4)]
    layers = [{"ball_01": t == 1, "car_01": t == 2, "CryptoObject00": t > 0, "CryptoObject01": t == 0} for t in truth]
    score = evaluate(*write_case(tmp_path, truth, layers))
    assert (score.layers, score.false_layers, score.fragments) == (2, 0, 0)


def test_objects_the_prompt_did_not_ask_for_are_not_misses(tmp_path: Path) -> None:
    truth = [truth_frame(2 + i, 20 - i) for i in range(4)]
    out, truth_dir = write_case(tmp_path, truth, [{"ball_01": t == 1} for t in truth])
    assert evaluate(out, truth_dir).j == pytest.approx(0.5)  # no prompt known: the car counts, J 0
    assert evaluate(out, truth_dir, ["ball"]).j == pytest.approx(1.0)
    (out / "s_roto_v001.json").write_text(json.dumps({"prompt": "Ball"}))  # the version's manifest
    score = evaluate(out, truth_dir)
    assert score.j == pytest.approx(1.0) and score.objects == 1


def test_a_layer_handover_is_one_switch_and_one_fragment(tmp_path: Path) -> None:
    truth = [truth_frame(2 + i, 20) for i in range(6)]
    layers = [{"ball_01" if i < 3 else "ball_02": t == 1, "car_01": t == 2} for i, t in enumerate(truth)]
    score = evaluate(*write_case(tmp_path, truth, layers))
    assert (score.id_switches, score.fragments, score.false_layers) == (1, 1, 0)
    assert score.j == pytest.approx(1.0)  # both layers belong to the ball: its union is exact


def test_a_reentry_after_three_frames_is_not_a_switch(tmp_path: Path) -> None:
    xs = [2, 3, None, None, None, 6, 7]
    truth = [truth_frame(x, 20) for x in xs]
    layers = [{("ball_01" if i < 2 else "ball_02"): t == 1, "car_01": t == 2} for i, t in enumerate(truth)]
    score = evaluate(*write_case(tmp_path, truth, layers))
    assert score.id_switches == 0 and score.fragments == 1


def test_stray_layers_and_missed_objects(tmp_path: Path) -> None:
    truth = [truth_frame(2, None if i < 2 else 20) for i in range(5)]  # the car enters late
    stray = np.zeros((H, W), bool)
    stray[0:3, 28:32] = True
    layers = [{"ball_01": t == 1, "junk_01": stray} for t in truth]  # the car is never matted
    score = evaluate(*write_case(tmp_path, truth, layers))
    assert score.false_layers == 1 and score.late_recall == 0.0
    assert score.j == pytest.approx(0.5)  # ball 1.0, car 0.0


def test_missing_truth_frames_are_refused(tmp_path: Path) -> None:
    truth = [truth_frame(2, 20) for _ in range(3)]
    out, truth_dir = write_case(tmp_path, truth, [{"ball_01": t == 1} for t in truth])
    (truth_dir / "s_truth.1002.exr").unlink()
    with pytest.raises(FileNotFoundError, match="truth lacks frames"):
        evaluate(out, truth_dir)


def test_cli_eval_reports_scores_and_refuses_bad_folders(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from services.cli.main import cli

    truth = [truth_frame(2 + i, 20) for i in range(3)]
    out, truth_dir = write_case(tmp_path, truth, [{"ball_01": t == 1, "car_01": t == 2} for t in truth])
    result = CliRunner().invoke(cli, ["eval", str(out), "--truth", str(truth_dir), "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["j"] == pytest.approx(1.0)
    wrong = CliRunner().invoke(cli, ["eval", str(out), "--truth", str(out)])
    assert wrong.exit_code == 2 and "no objects.json" in wrong.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = CliRunner().invoke(cli, ["eval", str(empty), "--truth", str(truth_dir)])
    assert nothing.exit_code == 1
    bad_size = CliRunner().invoke(cli, ["bench", "--size", "big", "--dir", str(tmp_path / "b")])
    assert bad_size.exit_code == 2 and "WIDTHxHEIGHT" in bad_size.output
    bad_io_size = CliRunner().invoke(cli, ["bench-io", "--size", "4k", "--dir", str(tmp_path)])
    assert bad_io_size.exit_code == 2 and "'4k'" in bad_io_size.output and "WIDTHxHEIGHT" in bad_io_size.output


def test_a_bad_ocio_config_names_the_field_at_submit(settings: Settings, shot: Path, farm_root: Path) -> None:
    from services.errors import InvalidSpec
    from services.store import Database
    from tests.factories import submit

    broken = settings.model_copy(update={"ocio_config": "ocio://no-such-config"})
    Database(broken.resolved_database_url).upgrade()
    with pytest.raises(InvalidSpec) as err:
        submit(broken, shot, farm_root, prompt="ball", output_root=str(farm_root / "o"))
    assert err.value.problems[0].field == "colourspace" and "ocio://no-such-config" in err.value.message


def test_truth_at_working_resolution_is_area_downsampled() -> None:
    from workers.synthetic.truth import ids_at

    ids = np.zeros((2160, 4096), np.int32)
    ids[1000:1100, 1001:1013] = 3  # a 12 px wide strand at 4K: 3 px at 1024, starting mid-pixel
    ids[200:600, 2000:2400] = 5
    small = ids_at(ids, (1024, 540))
    for obj in (3, 5):
        ys, xs = np.nonzero(small == obj)
        ty, tx = np.nonzero(ids == obj)
        # the centroid stays where the truth's is, within half a working pixel (2 px at 4K)
        assert abs((xs.mean() + 0.5) * 4 - (tx.mean() + 0.5)) < 2.0
        assert abs((ys.mean() + 0.5) * 4 - (ty.mean() + 0.5)) < 2.0
        assert abs(len(xs) * 16 - len(tx)) <= 0.15 * len(tx)  # and its area
    assert ids_at(ids, (4096, 2160)) is ids
    import cv2

    nearest = cv2.resize(ids, (1024, 540), interpolation=cv2.INTER_NEAREST)
    xs = np.nonzero(nearest == 3)[1]
    assert abs((xs.mean() + 0.5) * 4 - 1007.0) >= 2.0  # what nearest-neighbour did: 3 px off
