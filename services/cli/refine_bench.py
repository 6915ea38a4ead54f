"""``mattefarm refine``: replay an edit list onto a finished job (one API call per edit), then
deliver the next version; ``mattefarm bench-refine``: a simulated artist finishing synthetic
shots (clicks per object with and without propagation), and how long a click and a propagated
frame take.

Imports inside the commands are for start-up time only (see ``services/cli/evaluation.py``).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.progress import Progress, TaskID
from rich.table import Table

from farm_config.settings import Sam2Size
from schemas import JobSpec
from schemas.refine import EditList, PropagationState, RefineProgress
from services.cli.common import PROGRESS_COLUMNS, client, console, err, farm_errors
from services.client import FarmAPIError


@click.command("bench-refine")
@click.option("--shots", type=click.IntRange(1, 100), default=8, show_default=True)
@click.option("--frames", type=click.IntRange(10, 500), default=40, show_default=True)
@click.option("--objects", type=click.IntRange(2, 12), default=4, show_default=True)
@click.option(
    "--budget",
    type=click.IntRange(1, 1000),
    default=120,
    show_default=True,
    help="Actions per shot: enough for the frame-only baseline to reach J 0.95 on objects with many bad "
    "frames (a small budget drops exactly those from the comparison and understates propagation).",
)
@click.option("--first-seed", type=click.IntRange(0), default=300, show_default=True, help="Shot seeds from here.")
@click.option("--latency", is_flag=True, help="Also time clicks and propagation (synthetic and SAM 2.1 tiny).")
@click.option("--latency-only", is_flag=True, help="Only the latency measurement.")
@click.option("--sam2-size", type=click.Choice(["tiny", "small", "base_plus", "large"]), default="tiny")
@click.option("--clicks", type=click.IntRange(20, 10000), default=120, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="For the SAM 2.1 latency: cpu, cuda, auto.")
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=None, help="Keep the shots here.")
@click.option("--json", "as_json", is_flag=True)
def bench_refine(
    shots: int,
    frames: int,
    objects: int,
    budget: int,
    first_seed: int,
    latency: bool,
    latency_only: bool,
    sam2_size: Sam2Size,
    clicks: int,
    device: str,
    workdir: Path | None,
    as_json: bool,
) -> None:
    """A robot artist (the DAVIS interactive protocol) on synthetic shots after the automatic pass."""
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", device):
        raise click.BadParameter(f"{device!r}: use cpu, auto, cuda or cuda:N", param_hint="--device")
    from workers.bench.refine_artist import ARTIST_NOISE, run_benchmark
    from workers.bench.refine_latency import sam2_latency, synthetic_latency

    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mattefarm-bench-refine-") as tmp:
        root = workdir or Path(tmp)
        if not latency_only:
            with console.status("the artist is at work…") as status:
                bench = run_benchmark(
                    root,
                    shots=shots,
                    frames=frames,
                    objects=objects,
                    budget=budget,
                    first_seed=first_seed,
                    progress=lambda what: status.update(f"done: {what}"),
                )
            report["noise"] = asdict(ARTIST_NOISE)
            report["rounds"] = bench.table()
            report["clicks"] = bench.clicks()
        if latency or latency_only:
            with console.status("timing clicks…"):
                report["latency"] = [asdict(synthetic_latency(root / "lat-synthetic", clicks=clicks))]
                report["latency"].append(
                    asdict(sam2_latency(root / "lat-sam2", sam2_size=sam2_size, clicks=clicks, device=device))
                )
    if as_json:
        console.print_json(json.dumps(report))
        return
    _print(report, shots, frames, budget, first_seed)


def _print(report: dict[str, Any], shots: int, frames: int, budget: int, first_seed: int) -> None:
    if "rounds" in report:
        table = Table(
            "mode", "after round", "mean J", "worst shot J", "ID switches", "fragments", "false layers",
            title=f"{shots} synthetic shots (seeds {first_seed}…) × {frames} frames, {budget} actions each",
        )  # fmt: skip
        for row in report["rounds"]:
            table.add_row(
                row["mode"],
                str(row["round"]),
                f"{row['mean_j']:.3f}",
                f"{row['worst_j']:.3f}",
                str(row["id_switches"]),
                str(row["fragments"]),
                str(row["false_layers"]),
            )
        console.print(table)
        clicks = report["clicks"]
        table = Table(
            "mode", "reached J≥0.95", "clicks/object to 0.95", "… where both reached it", "… common J",
            "interactions", "strokes", "layer ops", "edits touching another layer", "click ms p50",
            "propagate s/frame",
            title=f"{clicks['objects_needing_fixes']} objects needed fixing; click ratio (propagate / frame-only) "
            f"{_ratio(clicks['ratio_at_095'])} at J ≥ 0.95 ({clicks['objects_both_reached_095']} objects both "
            f"got there: {clicks['objects_structural']} with structural errors "
            f"{_ratio(clicks['ratio_at_095_structural'])}, "
            f"{clicks['objects_edges']} with only edge errors {_ratio(clicks['ratio_at_095_edges'])}), "
            f"{_ratio(clicks['ratio_at_common_j'])} at the common J (all objects)",
        )  # fmt: skip
        for mode in ("propagate", "frame-only"):
            c = clicks[mode]
            table.add_row(
                mode,
                f"{c['reached_095']}/{clicks['objects_needing_fixes']}",
                f"{c['clicks_per_object_to_095']:.1f}",
                f"{c['clicks_per_object_to_095_both_reached']:.2f}",
                f"{c['clicks_per_object_common_j']:.2f}",
                str(c["total_interactions"]),
                str(c["of_which_brush_strokes"]),
                str(c["layer_operations"]),
                str(c["edits_that_changed_another_layer"]),
                f"{c['click_ms_p50']:.1f}" if c["click_ms_p50"] is not None else "-",
                f"{c['propagate_s_per_frame']:.4f}" if c["propagate_s_per_frame"] is not None else "-",
            )
        console.print(table)
        for miss in clicks["not_reaching_095"]:
            console.print(
                f"  {miss['shot']} object {miss['object']}: J {miss['j_after_auto_pass']:.3f} after the automatic "
                f"pass, best {miss['best_j_propagate']:.3f} propagating, {miss['best_j_frame-only']:.3f} frame by frame"
            )
    if "latency" in report:
        table = Table(
            "backend", "clicks", "p50 ms", "p95 ms", "max ms", "first touch ms", "encoder passes/click",
            "propagate s/frame", title="click → updated mask",
        )  # fmt: skip
        for row in report["latency"]:
            table.add_row(
                row["backend"],
                str(row["clicks"]),
                f"{row['p50_ms']:.1f}",
                f"{row['p95_ms']:.1f}",
                f"{row['max_ms']:.1f}",
                f"{row['first_touch_ms']:.0f}",
                f"{row['encoder_passes_per_click']:.2f}",
                f"{row['propagate_s_per_frame']:.3f}",
            )
        console.print(table)


@click.command("refine")
@click.argument("job_id")
@click.option(
    "--edits",
    "edits_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help='A JSON edit list: {"edits": [{"kind": "click", "layer": "car_01", "frame": 1001, "x": 10, "y": 20}, …]}.',
)
@click.option("--deliver", is_flag=True, help="Write the next version once the edits are in.")
@farm_errors
def refine(job_id: str, edits_file: Path, deliver: bool) -> None:
    """Replay a stored edit list onto a finished job (each edit one API call), then deliver."""
    try:
        edits = EditList.model_validate_json(edits_file.read_text())
    except ValidationError as exc:
        for problem in exc.errors()[:10]:
            where = ".".join(str(p) for p in problem["loc"])
            err.print(f"[red]error:[/] {edits_file}: {where}: {problem['msg']}")
        raise SystemExit(1) from None
    with client() as farm, Progress(*PROGRESS_COLUMNS, console=console) as progress:
        job_id = farm.resolve_job(job_id)
        bar = progress.add_task("edits", total=len(edits.edits))
        for n, edit in enumerate(edits.edits, start=1):
            try:
                result = farm.refine_edit(job_id, edit)
            except FarmAPIError as exc:
                exc.message = f"edit {n} ({edit.kind}): {exc.message}"
                raise
            if result.propagation is not None:  # a farm task: wait for it, showing its frames
                tracking = progress.add_task(f"propagate {edit.layer}", total=None)

                def show(p: RefineProgress, tracking: TaskID = tracking) -> None:
                    progress.update(tracking, completed=p.frames_done, total=p.frames_total or None)

                done = farm.wait_propagation(job_id, on_progress=show)
                if done.state != PropagationState.SUCCEEDED:
                    err.print(f"[red]error:[/] edit {n} (propagate {edit.layer}): {done.error or done.state}")
                    raise SystemExit(1)
                progress.remove_task(tracking)
            progress.update(bar, completed=n, description=f"{edit.kind} → {result.layer or '-'}")
        if deliver:
            progress.add_task("deliver", total=None)
            out = farm.refine_deliver(job_id)
    console.print(f"{len(edits.edits)} edit(s) applied to {job_id}")
    if deliver:
        console.print(
            f"delivered v{out.version:03d} (from v{out.parent_version:03d}): {out.output_pattern}; "
            f"layers made anew: {', '.join(out.layers_rewritten) or 'none'}; {out.seconds:.1f}s"
        )


def _ratio(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


class InlinePropagations:
    """No broker: the propagation waits in its row for ``FarmWorker.run_inline``."""

    def send_propagation(self, task_id: int, queue: str) -> None:
        pass


@click.command("bench-deliver")
@click.option("--frames", type=click.IntRange(2, 500), default=12, show_default=True)
@click.option("--size", default="1920x1080", show_default=True, help="Plate size, WIDTHxHEIGHT.")
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=None, help="Keep the farm here.")
def bench_deliver(frames: int, size: str, workdir: Path | None) -> None:
    """Seconds per frame of a refinement delivery: a synthetic shot through the automatic pass on an
    in-process farm, one click and a propagation, then the next version written."""
    from farm_config.settings import Settings, TokenGrant
    from schemas.refine import ClickEdit, PropagateEdit
    from services.composition import build_job_service, build_refine_service, build_worker, open_stores
    from workers.synthetic.shot import write_shot

    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise click.BadParameter("write the size as WIDTHxHEIGHT, e.g. 1920x1080", param_hint="--size") from None
    with tempfile.TemporaryDirectory(prefix="mattefarm-bench-deliver-") as tmp:
        root = (workdir or Path(tmp)).resolve()
        farm = root / "farm"
        farm.mkdir(parents=True, exist_ok=True)
        settings = Settings(
            data_dir=root / "data", read_roots=[farm], write_roots=[farm], model_backend="synthetic", review=False
        )
        plate = write_shot(farm, "bench010", frames=frames, width=width, height=height, objects=3, seed=5)
        stores = open_stores(settings)
        grant = TokenGrant("bench", True)
        jobs = build_job_service(settings, stores)
        with console.status("automatic pass…"):
            job_id = jobs.submit(
                JobSpec(plate=str(plate), prompt="ball, box, car", output_root=str(farm / "renders")), grant
            ).id
            worker = build_worker(settings, register=False, broker=False)
            worker.run_inline(job_id)
        try:
            refine = build_refine_service(settings, stores, jobs, InlinePropagations())
            state = refine.state(job_id, grant)
            layer = state.layers[0]
            middle = layer.frames[len(layer.frames) // 2]
            refine.apply(job_id, ClickEdit(layer=layer.name, frame=middle, x=1.0, y=1.0, positive=True), grant)
            refine.apply(job_id, PropagateEdit(layer=layer.name), grant)
            worker.run_inline(job_id)  # the farm task the propagation became
            propagated = refine.progress(job_id)
            assert propagated is not None and propagated.state == "succeeded", propagated
            with console.status("delivering…"):
                out = refine.deliver(job_id, grant)
        finally:
            worker.close()
            stores.close()
    console.print(
        f"delivered v{out.version:03d} of {frames} frames at {width}x{height}: {out.seconds:.2f}s, "
        f"{out.seconds / frames:.3f} s/frame ({out.frames_rewritten} frame(s) with a layer made anew, "
        f"{propagated.frames_done} propagated; layers made anew: {', '.join(out.layers_rewritten)})"
    )
