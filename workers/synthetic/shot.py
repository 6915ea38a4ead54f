"""Write a synthetic shot with ground truth: ``SHOT/plate/SHOT.####.exr`` (RGB half, scene-linear),
``SHOT/truth/SHOT_truth.####.exr`` (float32 ``id``; with ``soft``, also half ``alpha.<id>``: each
object's visible coverage at plate resolution) and ``SHOT/truth/objects.json``.

Textured objects of several labels move on sinusoidal paths over a textured background: paths
wide enough to leave frame come back, a late starter enters from off-screen, and depth order
makes them occlude each other. Everything is derived from ``seed``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from workers.io.exr import write_exr_atomic
from workers.io.plate import PlateDecoder, PlateInfo, plate_colourspace, resolve_plate
from workers.synthetic import soft_alpha
from workers.synthetic.soft_alpha import Placement, SoftLook

LABELS = ("ball", "box", "car")
THIN_LABEL = "stick"  # the thin fast object of the ``thin`` scenario
FIRST_FRAME = 1001
# What a shot adds to the base plan (late entry, exit-and-return, overlaps):
# - decoy: the wandering object leaves for good and a different object of its label enters later;
# - thin: a thin stick (a few px wide) crosses fast, turning;
# - crowd: every object has one label, so identities rest on tracking alone.
SCENARIOS = ("default", "decoy", "thin", "crowd")


@dataclass(frozen=True)
class SyntheticObject:
    id: int
    label: str
    size: float  # fraction of frame height
    colour: tuple[float, float, float]  # linear RGB
    depth: float  # smaller is nearer
    x0: float  # centre at t=0, fraction of width
    y0: float
    amp_x: float
    amp_y: float
    period: float  # frames
    phase: float
    drift: float  # fraction of width per frame
    start: int  # frame offset where the object appears (0 = from the first frame)


def plan_objects(rng: np.random.Generator, count: int, frames: int) -> list[SyntheticObject]:
    """Object paths chosen so a shot always has a late entry, an exit-and-return and overlaps.

    Speeds are set per frame (about 1-2 % of the width), not per shot, so short shots stay
    trackable; the wandering object leaves frame on its right swing and comes back.
    """
    slow = max(frames, 48)
    objects: list[SyntheticObject] = []
    for i in range(count):
        label = LABELS[i % len(LABELS)]
        late = i == 1  # enters from the left edge part-way through
        wanders = i == 2  # swings out of frame and back
        objects.append(
            SyntheticObject(
                id=i + 1,
                label=label,
                size=float(rng.uniform(0.18, 0.3)),
                colour=_rgb(rng.uniform(0.05, 0.8, 3)),
                depth=float(i + rng.uniform(0, 0.5)),
                x0=-0.15 if late else (0.7 if wanders else float(rng.uniform(0.25, 0.75))),
                y0=float(rng.uniform(0.3, 0.7)),
                amp_x=0.45 if wanders else float(rng.uniform(0.05, 0.12)),
                amp_y=float(rng.uniform(0.03, 0.08)),
                period=float(max(slow, 120) * 0.9 if wanders else slow * rng.uniform(1.0, 2.0)),
                phase=0.0 if wanders else float(rng.uniform(0, 2 * np.pi)),
                drift=0.01 if late else 0.0,
                start=frames // 4 if late else 0,
            )
        )
    return objects


def plan_scenario(
    plan: list[SyntheticObject], scenario: str, rng: np.random.Generator, frames: int
) -> list[SyntheticObject]:
    """The base plan changed for ``scenario`` (its own random stream, so the base is unchanged)."""
    if scenario == "default":
        return plan
    if scenario == "crowd":
        return [replace(o, label=LABELS[0]) for o in plan]
    if scenario == "decoy":
        if len(plan) < 3:
            raise ValueError("the decoy scenario needs at least 3 objects (the third one leaves)")
        gone = replace(plan[2], amp_x=0.0, drift=0.025, x0=0.75)  # out on the right by frame ~16, never back
        decoy = replace(
            gone,
            id=len(plan) + 1,
            size=gone.size * float(rng.uniform(0.7, 0.85)),
            colour=_other_colour(rng, gone.colour),
            depth=float(len(plan) + 0.5),
            x0=-0.1,
            y0=float(rng.uniform(0.3, 0.7)),
            amp_y=0.02,
            phase=float(rng.uniform(0, 2 * np.pi)),
            drift=0.02,
            start=max(20, frames // 2),  # after the other has gone
        )
        return [*plan[:2], gone, *plan[3:], decoy]
    if scenario == "thin":
        stick = SyntheticObject(
            id=len(plan) + 1,
            label=THIN_LABEL,
            size=0.4,
            colour=_rgb(rng.uniform(0.5, 0.9, 3)),
            depth=-1.0,  # in front of everything
            x0=-0.1,
            y0=float(rng.uniform(0.35, 0.65)),
            amp_x=0.0,
            amp_y=0.1,
            period=float(max(frames, 48)),
            phase=float(rng.uniform(0, 2 * np.pi)),
            drift=1.2 / max(frames, 24),  # crosses the frame once in the shot: fast
            start=0,
        )
        return [*plan, stick]
    raise ValueError(f"scenario {scenario!r} is unknown; use one of {', '.join(SCENARIOS)}")


def _centre(obj: SyntheticObject, t: float, w: int, h: int) -> tuple[float, float] | None:
    if t < obj.start:
        return None
    k = t - obj.start
    x = obj.x0 + obj.drift * k + obj.amp_x * np.sin(2 * np.pi * k / obj.period + obj.phase)
    y = obj.y0 + obj.amp_y * np.sin(4 * np.pi * k / obj.period + obj.phase)
    return x * w, y * h


def _shape(obj: SyntheticObject, cx: float, cy: float, t: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((h, w), np.uint8)
    r = obj.size * h / 2
    if obj.label == THIN_LABEL:
        box = cv2.boxPoints(((cx, cy), (2 * r, max(2.0, 0.03 * r)), (30 + t * 3.0) % 360))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    elif obj.label == "ball":
        cv2.circle(mask, (round(cx), round(cy)), round(r), 1, -1)
    elif obj.label == "box":
        box = cv2.boxPoints(((cx, cy), (1.6 * r, 1.6 * r), (t * 2.0) % 360))
        cv2.fillPoly(mask, [np.round(box).astype(np.int32)], 1)
    else:  # car: a body, a cabin and two wheels
        cv2.rectangle(
            mask, (round(cx - 1.6 * r), round(cy - 0.3 * r)), (round(cx + 1.6 * r), round(cy + 0.4 * r)), 1, -1
        )
        cv2.rectangle(
            mask, (round(cx - 0.8 * r), round(cy - 0.8 * r)), (round(cx + 0.7 * r), round(cy - 0.2 * r)), 1, -1
        )
        for wx in (cx - r, cx + r):
            cv2.circle(mask, (round(wx), round(cy + 0.45 * r)), round(0.35 * r), 1, -1)
    return mask.astype(bool)


def _texture(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    small = rng.uniform(0.0, 1.0, (max(2, cells * h // w), cells)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


# Rec.709 primaries, D65: tells readers the plate is linear Rec.709, not ACEScg.
REC709 = (0.64, 0.33, 0.30, 0.60, 0.15, 0.06, 0.3127, 0.3290)


def write_shot(
    root: Path,
    name: str = "synth010",
    *,
    frames: int = 24,
    width: int = 640,
    height: int = 360,
    objects: int = 3,
    seed: int = 1,
    scenario: str = "default",
    soft: bool = False,
    look: SoftLook | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write the shot under ``root/name`` and return the plate pattern (``…/plate/name.####.exr``).

    ``soft`` draws the soft-alpha look (anti-aliased, motion-blurred, strands, spokes, glass,
    grain; see ``soft_alpha``) and writes each object's visible alpha beside the id map; the
    objects' paths are the same as the hard shot's of that seed."""
    if frames < 1 or objects < 1 or width < 32 or height < 32:
        raise ValueError("a synthetic shot needs ≥1 frame, ≥1 object and at least 32×32 pixels")
    rng = np.random.default_rng(seed)
    plan = plan_scenario(plan_objects(rng, objects, frames), scenario, np.random.default_rng([seed, 11]), frames)
    shot = root / name
    (shot / "plate").mkdir(parents=True, exist_ok=True)
    (shot / "truth").mkdir(parents=True, exist_ok=True)
    if soft:
        _write_soft_frames(shot, name, plan, frames, width, height, seed, look or SoftLook(), progress)
        _write_objects(shot, plan, soft=True, scenario=scenario)
        return shot / "plate" / f"{name}.####.exr"
    background = 0.05 + 0.25 * _texture(rng, height, width, 24)[..., None] * np.array([0.6, 0.7, 0.8], np.float32)
    grain = {obj.id: 0.6 + 0.4 * _texture(rng, height, width, 48) for obj in plan}
    for t in range(frames):
        frame = FIRST_FRAME + t
        rgb = background.copy()
        ids = np.zeros((height, width), np.float32)
        for obj in sorted(plan, key=lambda o: -o.depth):  # far to near: nearer objects paint last
            centre = _centre(obj, t, width, height)
            if centre is None:
                continue
            mask = _shape(obj, *centre, t, width, height)
            rgb[mask] = np.array(obj.colour, np.float32) * grain[obj.id][mask][:, None]
            ids[mask] = obj.id
        rgb += np.random.default_rng([seed, frame]).normal(0, 0.004, rgb.shape).astype(np.float32)
        plate_channels = {c: rgb[..., i].astype(np.float16) for i, c in enumerate("RGB")}
        write_exr_atomic(shot / "plate" / f"{name}.{frame:04d}.exr", plate_channels, {"chromaticities": REC709})
        write_exr_atomic(shot / "truth" / f"{name}_truth.{frame:04d}.exr", {"id": ids}, {})
        if progress:
            progress(t + 1)
    _write_objects(shot, plan, soft=False, scenario=scenario)
    return shot / "plate" / f"{name}.####.exr"


def _write_objects(shot: Path, plan: list[SyntheticObject], *, soft: bool, scenario: str) -> None:
    objects_json: dict[str, object] = {
        "objects": [{"id": o.id, "label": o.label} for o in plan],
        "plan": [asdict(o) for o in plan],
        "soft_alpha": soft,
        "scenario": scenario,
    }
    if scenario == "decoy":  # which object left for good and which different one came in
        objects_json["decoy"] = {"left": plan[2].id, "entered": plan[-1].id}
    (shot / "truth" / "objects.json").write_text(json.dumps(objects_json, indent=2))


def _soft_shape(obj: SyntheticObject, look: SoftLook, height: int) -> soft_alpha.Shape:
    detail_px = max(1.0, 2.0 * height / 1080)  # strands and spokes: about 2 px at 1080, 4 at 4K
    if obj.label == THIN_LABEL:
        return soft_alpha.draw_stick(detail_px)
    if obj.label == "ball":
        return soft_alpha.draw_ball(look, detail_px)
    if obj.label == "box":
        return soft_alpha.draw_box
    return soft_alpha.draw_car(detail_px)


def _write_soft_frames(
    shot: Path,
    name: str,
    plan: list[SyntheticObject],
    frames: int,
    width: int,
    height: int,
    seed: int,
    look: SoftLook,
    progress: Callable[[int], None] | None,
) -> None:
    # Its own random stream, so a soft shot's paths equal the hard shot's of the same seed.
    rng = np.random.default_rng([seed, 7])
    level, contrast = float(rng.uniform(0.03, 0.25)), float(rng.uniform(0.1, 0.6))
    texture = 0.6 * _texture(rng, height, width, 24) + 0.4 * _texture(rng, height, width, 160)
    tint = rng.uniform(0.5, 1.0, 3).astype(np.float32)
    background = (level + contrast * level * 4 * texture)[..., None] * tint
    surface = {obj.id: 0.55 + 0.45 * _texture(rng, height, width, 64) for obj in plan}
    shapes = {obj.id: _soft_shape(obj, look, height) for obj in plan}

    def where(obj: SyntheticObject) -> Callable[[float], Placement | None]:
        def at(t: float) -> Placement | None:
            centre = _centre(obj, t, width, height)
            return None if centre is None else Placement(centre[0], centre[1], obj.size * height / 2)

        return at

    for t in range(frames):
        frame = FIRST_FRAME + t
        layers = []
        for obj in sorted(plan, key=lambda o: -o.depth):  # far to near
            fuzz = look.fuzz * obj.size * height / 2 if obj.label == "ball" else 0.0
            drawn = soft_alpha.coverage(shapes[obj.id], where(obj), t, (width, height), look, fuzz)
            if drawn is None:
                continue
            (x0, y0, x1, y1), cover = drawn
            opacity = look.glass_opacity if obj.label == "box" else 1.0
            colour = np.asarray(obj.colour, np.float32) * surface[obj.id][y0:y1, x0:x1, None]
            layers.append((obj.id, (x0, y0, x1, y1), cover, opacity, colour))
        rgb, visible = soft_alpha.composite(background, layers)
        noise = np.random.default_rng([seed, frame, 7]).normal(0, 1, rgb.shape).astype(np.float32)
        rgb += look.grain * (0.02 + rgb) * noise  # grain grows with the signal, as film's does
        plate_channels = {c: rgb[..., i].astype(np.float16) for i, c in enumerate("RGB")}
        write_exr_atomic(shot / "plate" / f"{name}.{frame:04d}.exr", plate_channels, {"chromaticities": REC709})
        truth: dict[str, np.ndarray] = {"id": soft_alpha.ids_from_alpha(visible, (height, width))}
        truth.update({f"alpha.{oid}": alpha.astype(np.float16) for oid, alpha in visible.items() if alpha.any()})
        write_exr_atomic(shot / "truth" / f"{name}_truth.{frame:04d}.exr", truth, {})
        if progress:
            progress(t + 1)


def _other_colour(rng: np.random.Generator, colour: tuple[float, float, float]) -> tuple[float, float, float]:
    """A random colour that differs from ``colour`` by at least 0.25 in some channel: another object
    of the same kind, not a twin."""
    while True:
        candidate = rng.uniform(0.05, 0.8, 3)
        if np.abs(candidate - np.asarray(colour)).max() >= 0.25:
            return _rgb(candidate)


def _rgb(values: np.ndarray) -> tuple[float, float, float]:
    red, green, blue = (float(v) for v in values)
    return red, green, blue


def synthetic_decoder(plate_pattern: str | Path, max_side: int = 1024) -> tuple[PlateInfo, PlateDecoder]:
    """A synthetic shot's plate and a decoder for it. The synthetic backend reads truth, not
    pixels, so the plain linear→sRGB curve serves as well as OCIO here (and builds nothing)."""
    plate = resolve_plate(str(plate_pattern), None)
    colourspace = plate_colourspace(plate, None, "linear")
    return plate, PlateDecoder.open(plate, max_side, colourspace, ocio_config="", display="", view="", use_ocio=False)
