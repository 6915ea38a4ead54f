"""Edge quality at plate resolution on soft-alpha shots: the comparison behind ``mattefarm bench-edges``.

Each shot is analysed once (synthetic backend, inference at ``max_side``); its mattes are then
exported once per edge method from the same tracked layers, so the methods differ only in how
the mattes reach the plate. Each export is scored against the soft-alpha truth in one boundary
band per shot (the same pixels for every method) and by J, and its refinement is timed.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from schemas import EdgeMode, PipelineOptions
from workers.bench.strategies import QuietReporter, export_shot
from workers.io.plate import working_size
from workers.models.builder import build_synthetic
from workers.models.synthetic import SyntheticNoise
from workers.pipeline.driver import analyse_shot
from workers.pipeline.edges import EdgeRefiner
from workers.pipeline.export import EdgeRefinement
from workers.synthetic.alpha_eval import EdgeScore, evaluate_edges
from workers.synthetic.evaluate import evaluate
from workers.synthetic.shot import synthetic_decoder, write_shot


@dataclass(frozen=True)
class EdgeShot:
    name: str
    size: tuple[int, int]
    seed: int


@dataclass(frozen=True)
class EdgeMethod:
    """A way to bring mattes to the plate: the job options that ask for it."""

    name: str
    edges: EdgeMode
    steady_frames: int = 0  # neighbours on each side the temporal steadier blends (0: off)


@dataclass
class EdgeRow:
    shot: str
    size: tuple[int, int]
    method: str
    edges: EdgeScore
    j: float
    refine_s_per_frame: float
    export_s_per_frame: float


class TimedRefiner:
    """An edge refiner that adds up the seconds it spends (the refinement alone, not the export)."""

    def __init__(self, inner: EdgeRefinement) -> None:
        self.inner, self.seconds = inner, 0.0

    def refine(self, matte: np.ndarray, guide: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        try:
            return self.inner.refine(matte, guide)
        finally:
            self.seconds += time.perf_counter() - start


def suite(first_seed: int, hd: int, uhd: int) -> list[EdgeShot]:
    """``hd`` shots at 1920×1080 then ``uhd`` at 4096×2160, seeds from ``first_seed``."""
    shots = [EdgeShot(f"edge{first_seed + i:04d}hd", (1920, 1080), first_seed + i) for i in range(hd)]
    return shots + [
        EdgeShot(f"edge{first_seed + hd + i:04d}uhd", (4096, 2160), first_seed + hd + i) for i in range(uhd)
    ]


def band_for(scale: float) -> int:
    """The scoring band's growth: beyond the widest upsampled ramp (about 2× the scale)."""
    return int(np.ceil(2 * scale)) + 2


def bench_shot(
    root: Path,
    shot: EdgeShot,
    methods: list[EdgeMethod],
    *,
    frames: int,
    objects: int,
    options: PipelineOptions,
    noise: SyntheticNoise,
    device: str = "cpu",
) -> list[EdgeRow]:
    pattern = write_shot(root, shot.name, frames=frames, width=shot.size[0], height=shot.size[1], objects=objects,
                         seed=shot.seed, soft=True)  # fmt: skip
    plate, decoder = synthetic_decoder(pattern, options.max_side)
    models = build_synthetic(noise=noise)
    classes = ["ball", "box", "car"]
    scratch = root / shot.name / ".work"
    result = analyse_shot(decoder, classes, options, models, QuietReporter(), scratch)
    work = working_size(plate.width, plate.height, options.max_side, plate.geometry.pixel_aspect)
    scale = max(plate.width / work[0], plate.height / work[1])
    truth_dir = root / shot.name / "truth"
    rows = []
    for method in methods:
        out_dir = root / shot.name / method.name
        timed: list[TimedRefiner] = []

        def timing(edges: EdgeRefinement, timed: list[TimedRefiner] = timed) -> EdgeRefinement:
            inner = replace(edges, device=device) if isinstance(edges, EdgeRefiner) else edges
            timed.append(TimedRefiner(inner))
            return timed[-1]

        chosen = options.model_copy(update={"edges": method.edges, "steady_frames": method.steady_frames})
        start = time.perf_counter()
        export_shot(decoder, result, chosen, out_dir, wrap_edges=timing)
        export_s = time.perf_counter() - start
        rows.append(
            EdgeRow(
                shot=shot.name,
                size=shot.size,
                method=method.name,
                edges=evaluate_edges(out_dir, truth_dir, band_for(scale), classes),
                j=evaluate(out_dir, truth_dir, classes).j,
                refine_s_per_frame=sum(t.seconds for t in timed) / len(plate.frames),
                export_s_per_frame=export_s / len(plate.frames),
            )
        )
    shutil.rmtree(scratch, ignore_errors=True)
    return rows


METHODS = (
    EdgeMethod("upsample", EdgeMode.UPSAMPLE),  # today's export: bilinear logits, sigmoid
    EdgeMethod("guided filter", EdgeMode.FILTER),  # the guided filter alone, in the band
    EdgeMethod("colour + guided", EdgeMode.GUIDED),  # ``edges=guided``: unmixing, then the filter
    EdgeMethod("upsample + steady 2", EdgeMode.UPSAMPLE, steady_frames=2),  # the temporal steadier alone
    EdgeMethod("colour + guided + steady 1", EdgeMode.GUIDED, steady_frames=1),
    EdgeMethod("colour + guided + steady 2", EdgeMode.GUIDED, steady_frames=2),
)


@dataclass
class MethodSummary:
    """One method over a set of shots: means, worst shot, and ratios to upsampling (shot by shot,
    then averaged, so a large shot does not outweigh the others)."""

    method: str
    shots: int
    sad: float
    mse: float
    grad: float
    dtssd: float
    j: float
    sad_ratio: float
    grad_ratio: float
    dtssd_ratio: float
    worst_sad_ratio: float
    worst_shot: str
    min_j: float
    refine_s_per_frame: float


def summarise(rows: list[EdgeRow], baseline: str = "upsample") -> list[MethodSummary]:
    base = {r.shot: r for r in rows if r.method == baseline}
    out = []
    for method in dict.fromkeys(r.method for r in rows):
        mine = [r for r in rows if r.method == method and r.shot in base]
        if not mine:
            continue

        def ratio(r: EdgeRow, key: str) -> float:
            b = getattr(base[r.shot].edges, key)
            return float(getattr(r.edges, key) / b) if b else 1.0

        sad_ratios = [ratio(r, "sad") for r in mine]
        worst = int(np.argmax(sad_ratios))
        out.append(
            MethodSummary(
                method=method,
                shots=len(mine),
                sad=float(np.mean([r.edges.sad for r in mine])),
                mse=float(np.mean([r.edges.mse for r in mine])),
                grad=float(np.mean([r.edges.grad for r in mine])),
                dtssd=float(np.mean([r.edges.dtssd for r in mine])),
                j=float(np.mean([r.j for r in mine])),
                sad_ratio=float(np.mean(sad_ratios)),
                grad_ratio=float(np.mean([ratio(r, "grad") for r in mine])),
                dtssd_ratio=float(np.mean([ratio(r, "dtssd") for r in mine])),
                worst_sad_ratio=sad_ratios[worst],
                worst_shot=mine[worst].shot,
                min_j=float(min(r.j for r in mine)),
                refine_s_per_frame=float(np.mean([r.refine_s_per_frame for r in mine])),
            )
        )
    return out
