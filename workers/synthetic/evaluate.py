"""Score matte EXRs against synthetic ground truth.

- Each layer goes to the object it overlaps most over the whole shot (spatio-temporal IoU ≥ 0.2;
  several layers may go to one object); a layer that reaches none is a false layer.
- J: mean over objects of the mean IoU, over the frames the object is visible, between its
  visible mask and the union of its layers.
- ID switches: changes of the layer that best covers an object (IoU ≥ 0.5) between frames of one
  visibility run (3 or more invisible frames start a new run).
- Fragments: layers beyond the first per object. Late recall: for objects first seen after the
  first frame, the share of their visible frames covered at IoU ≥ 0.5.

Two passes over the frames, one frame in memory at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from schemas import split_prompt
from workers.core.masks import iou
from workers.io import cryptomatte
from workers.io.exr import read_exr_channels
from workers.synthetic.truth import read_truth_ids

_FRAME = re.compile(r"\.(-?\d+)\.exr$")
ASSIGN_IOU = 0.2
COVER_IOU = 0.5
RUN_GAP = 3


@dataclass
class Score:
    j: float
    id_switches: int
    fragments: int
    false_layers: int
    late_recall: float | None
    objects: int
    layers: int
    frames: int
    object_j: dict[int, float] = field(default_factory=dict)  # object id → its J
    decoy_apart: bool | None = None  # decoy shots: the object that left and the one that entered have separate layers


def numbered_frames(folder: Path) -> dict[int, Path]:
    found = {}
    for path in folder.glob("*.exr"):
        match = _FRAME.search(path.name)
        if match:
            found[int(match.group(1))] = path
    return found


def matte_layers(channels: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Layer name → its alpha, from a matte EXR's channels: every ``NAME.A`` but Cryptomatte's own
    ranked planes (``CryptoObject00.A`` … hold id/coverage pairs, not a layer)."""
    return {
        name[:-2]: ch
        for name, ch in channels.items()
        if name.endswith(".A") and not name.startswith(cryptomatte.TYPENAME)
    }


def _frames(output: dict[int, Path], truth: dict[int, Path]) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray]]:
    for frame in sorted(output):
        channels, _ = read_exr_channels(output[frame])
        mattes = {name: alpha.astype(np.float32) >= 0.5 for name, alpha in matte_layers(channels).items()}
        yield frame, mattes, read_truth_ids(truth[frame])


def prompted_objects(truth_dir: Path, classes: Iterable[str] | None) -> list[int]:
    """The truth's objects the prompt asked for (all of them without a prompt): an object whose
    label was not asked for is not a miss."""
    wanted = {c.strip().lower() for c in classes} if classes is not None else None
    objects = json.loads((truth_dir / "objects.json").read_text())["objects"]
    return [int(o["id"]) for o in objects if wanted is None or str(o["label"]).lower() in wanted]


def evaluate(output_dir: Path, truth_dir: Path, classes: Iterable[str] | None = None) -> Score:
    """Score a version folder's mattes; ``classes``: the prompt's (objects of other labels are
    left out), by default the prompt the folder's manifest records."""
    output, truth = numbered_frames(output_dir), numbered_frames(truth_dir)
    if not output:
        raise FileNotFoundError(f"no matte EXRs in {output_dir}")
    missing = sorted(set(output) - set(truth))
    if missing:
        raise FileNotFoundError(f"truth lacks frames {missing[:5]}… in {truth_dir}")
    if classes is None:
        classes = manifest_classes(output_dir)
    objects = prompted_objects(truth_dir, classes)
    score = score_frames(lambda: _frames(output, truth), objects)
    decoy = json.loads((truth_dir / "objects.json").read_text()).get("decoy")
    if decoy:
        owner, _, _ = assign_layers(lambda: _frames(output, truth), objects)
        owners = set(owner.values())
        score.decoy_apart = int(decoy["left"]) in owners and int(decoy["entered"]) in owners
    return score


def shot_labels(truth_dir: Path) -> list[str]:
    """The labels of a synthetic shot's objects, in order of first mention (its natural prompt)."""
    objects = json.loads((truth_dir / "objects.json").read_text())["objects"]
    return list(dict.fromkeys(str(o["label"]) for o in objects))


def manifest_classes(output_dir: Path) -> list[str] | None:
    for manifest in sorted(output_dir.glob("*.json")):
        try:
            prompt = json.loads(manifest.read_text()).get("prompt")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(prompt, str):
            return split_prompt(prompt)
    return None


Frames = Callable[[], Iterable[tuple[int, dict[str, np.ndarray], np.ndarray]]]


def assign_layers(frames: Frames, objects: list[int]) -> tuple[dict[str, int], dict[str, int], int]:
    """Which object each layer is of (spatio-temporal IoU ≥ ``ASSIGN_IOU``, best object wins);
    returns (layer → object, layer → its area over the shot, frames seen). Layers absent from the
    first mapping reach no object: false layers."""
    inter: dict[tuple[str, int], int] = {}
    layer_area: dict[str, int] = {}
    object_area: dict[int, int] = dict.fromkeys(objects, 0)
    count = 0
    for _, mattes, ids in frames():
        count += 1
        for name, matte in mattes.items():
            layer_area[name] = layer_area.get(name, 0) + int(matte.sum())
            for obj in objects:
                inter[name, obj] = inter.get((name, obj), 0) + int((matte & (ids == obj)).sum())
        for obj in objects:
            object_area[obj] += int((ids == obj).sum())
    owner: dict[str, int] = {}
    for name in layer_area:
        best, best_iou = None, ASSIGN_IOU
        for obj in objects:
            union_area = layer_area[name] + object_area[obj] - inter.get((name, obj), 0)
            st_iou = inter.get((name, obj), 0) / union_area if union_area else 0.0
            if st_iou >= best_iou:
                best, best_iou = obj, st_iou
        if best is not None:
            owner[name] = best
    return owner, layer_area, count


def score_frames(frames: Frames, objects: list[int]) -> Score:
    """The score of layers against truth; ``frames()`` yields (frame, layer name → bool matte, truth
    ids) in shot order, and is called once per pass (from EXRs on disk, or masks in memory)."""
    # Pass 1: spatio-temporal overlap of every layer with every object.
    owner, layer_area, count = assign_layers(frames, objects)

    # Pass 2: per-frame IoU, best-covering layer, runs.
    ious: dict[int, list[float]] = {obj: [] for obj in objects}
    first_visible: dict[int, int] = {}
    last_best: dict[int, str | None] = dict.fromkeys(objects)
    invisible_for: dict[int, int] = dict.fromkeys(objects, 0)
    switches = 0
    for index, (_, mattes, ids) in enumerate(frames()):
        shape = ids.shape
        for obj in objects:
            visible = ids == obj
            if not visible.any():
                invisible_for[obj] += 1
                if invisible_for[obj] >= RUN_GAP:
                    last_best[obj] = None  # a new visibility run starts
                continue
            invisible_for[obj] = 0
            first_visible.setdefault(obj, index)
            union = np.zeros(shape, bool)
            for name, matte in mattes.items():
                if owner.get(name) == obj:
                    union |= matte
            ious[obj].append(iou(visible, union))
            covering, best_iou = None, COVER_IOU
            for name, matte in mattes.items():
                score = iou(visible, matte)
                if score >= best_iou:
                    covering, best_iou = name, score
            if covering is not None:
                if last_best[obj] is not None and last_best[obj] != covering:
                    switches += 1
                last_best[obj] = covering

    seen = [obj for obj in objects if ious[obj]]
    late = [obj for obj in seen if first_visible[obj] > 0]
    layers_per_object = [sum(1 for o in owner.values() if o == obj) for obj in seen]
    return Score(
        j=float(np.mean([np.mean(ious[obj]) for obj in seen])) if seen else 0.0,
        id_switches=switches,
        fragments=sum(max(0, n - 1) for n in layers_per_object),
        false_layers=len(layer_area) - len(owner),
        late_recall=(float(np.mean([np.mean([v >= COVER_IOU for v in ious[obj]]) for obj in late])) if late else None),
        objects=len(seen),
        layers=len(layer_area),
        frames=count,
        object_j={obj: float(np.mean(ious[obj])) for obj in seen},
    )


def score_dict(score: Score) -> dict[str, object]:
    return asdict(score)
