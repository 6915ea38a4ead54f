"""``mattefarm eval`` (score mattes against synthetic truth), ``mattefarm compare`` (strategies on a
synthetic suite) and ``mattefarm bench`` (encoder passes and peak memory).

Imports inside commands are for start-up time only: `mattefarm --help` and the job commands
must not load OpenEXR, OpenCV, SQLAlchemy or torch. lint-imports checks them like any other
import, so none of them can hide a circle.
"""

from __future__ import annotations

import functools
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress
from rich.status import Status
from rich.table import Table

from farm_config import get_settings
from schemas import DetectMode, Strategy, TrackingMode
from services.cli.common import api_token, api_url, client, console, err, farm_errors, parse_size
from services.load_benchmark import run_load


@click.command("eval")
@click.argument("output_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--truth",
    "truth_dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="The shot's truth folder (SHOT/truth, with objects.json).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def evaluate_cmd(output_dir: Path, truth_dir: Path, as_json: bool) -> None:
    """Score the matte EXRs in OUTPUT_DIR against synthetic ground truth (threshold 0.5)."""
    from workers.synthetic.evaluate import evaluate, score_dict

    if not (truth_dir / "objects.json").exists():
        raise click.BadParameter(f"{truth_dir} has no objects.json; point --truth at SHOT/truth", param_hint="--truth")
    try:
        score = evaluate(output_dir, truth_dir)
    except FileNotFoundError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise SystemExit(1) from None
    if as_json:
        console.print_json(json.dumps(score_dict(score)))
        return
    table = Table("J", "ID switches", "fragments", "false layers", "late recall", "objects", "layers", "frames")
    late = f"{score.late_recall:.3f}" if score.late_recall is not None else "-"
    table.add_row(
        f"{score.j:.3f}",
        str(score.id_switches),
        str(score.fragments),
        str(score.false_layers),
        late,
        str(score.objects),
        str(score.layers),
        str(score.frames),
    )
    console.print(table)


@click.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(path_type=Path),
    default=Path("mattefarm-compare"),
    show_default=True,
    help="Where the shots and mattes are written.",
)
@click.option("--shots", type=click.IntRange(1, 100), default=8, show_default=True)
@click.option("--frames", type=click.IntRange(20, 2000), default=60, show_default=True)
@click.option("--objects", type=click.IntRange(3, 12), default=4, show_default=True)
@click.option("--first-seed", type=click.IntRange(0), default=100, show_default=True, help="Shot seeds from here.")
@click.option(
    "--noise-seeds", type=click.IntRange(1, 100), default=1, show_default=True, help="Noise draws per shot (0…N-1)."
)
@click.option(
    "--scenarios",
    default="default",
    show_default=True,
    help="Scenario kinds taken in turn, comma-separated (default, decoy, thin, crowd) or 'all'.",
)
@click.option(
    "--sizes", default="640x360", show_default=True, help="Plate sizes taken in turn, e.g. 640x360,1280x720,2048x858."
)
@click.option(
    "--noise",
    "noise_level",
    type=click.Choice(["default", "hard"]),
    default="default",
    show_default=True,
    help="hard: miss 0.3, false boxes 0.6, track loss 0.06, mask noise 4 px, box jitter 0.1.",
)
@click.option(
    "--strategy",
    "strategy_names",
    multiple=True,
    type=click.Choice([s.value for s in Strategy]),
    help="Strategies to run (repeat; default all three).",
)
@click.option(
    "--tracking",
    type=click.Choice([m.value for m in TrackingMode]),
    default=TrackingMode.WINDOWS.value,
    show_default=True,
    help="The farm strategy's tracking: windows (20/5, the reference) or sweep (one pass each way).",
)
@click.option(
    "--detect",
    type=click.Choice([m.value for m in DetectMode]),
    default=DetectMode.EVERY.value,
    show_default=True,
    help="The farm strategy's detection: every frame, or only where layers refresh.",
)
@click.option("--json", "as_json", is_flag=True)
def compare(
    workdir: Path,
    shots: int,
    frames: int,
    objects: int,
    first_seed: int,
    noise_seeds: int,
    scenarios: str,
    sizes: str,
    noise_level: str,
    strategy_names: tuple[str, ...],
    tracking: str,
    detect: str,
    as_json: bool,
) -> None:
    """Run every strategy on a suite of synthetic shots, each under several noise draws, and print
    one table: mean and worst shot (synthetic backend)."""
    from workers.bench.strategies import WorkdirBusy
    from workers.bench.strategies import compare as run_compare
    from workers.models.synthetic import HARD_NOISE, SyntheticNoise
    from workers.synthetic.shot import SCENARIOS

    kinds = SCENARIOS if scenarios == "all" else tuple(k.strip() for k in scenarios.split(",") if k.strip())
    unknown = [k for k in kinds if k not in SCENARIOS]
    if unknown or not kinds:
        raise click.BadParameter(f"use some of {', '.join(SCENARIOS)} or 'all'", param_hint="--scenarios")
    plate_sizes = tuple(parse_size(one, "--sizes") for one in sizes.split(","))
    noise = HARD_NOISE if noise_level == "hard" else SyntheticNoise()
    chosen = tuple(Strategy(name) for name in strategy_names) if strategy_names else tuple(Strategy)
    with console.status("running…") as status:
        try:
            results = run_compare(
                workdir, shots=shots, frames=frames, objects=objects, first_seed=first_seed, noise_seeds=noise_seeds,
                noise=noise, scenarios=kinds, sizes=plate_sizes, strategies=chosen, tracking=TrackingMode(tracking),
                detect=DetectMode(detect),
                progress=lambda what: status.update(f"done: {what}"),
            )  # fmt: skip
        except WorkdirBusy as busy:
            raise click.BadParameter(f"{busy}; give this one its own --dir", param_hint="--dir") from None
    rows: list[dict[str, Any]] = []
    for strategy in chosen:
        mine = [r for r in results if r.strategy == strategy]
        late = [r.score.late_recall for r in mine if r.score.late_recall is not None]
        rows.append(
            {
                "strategy": strategy.value,
                "mean_j": statistics.mean(r.score.j for r in mine),
                "min_j": min(r.score.j for r in mine),
                "worst_shot": min(mine, key=lambda r: r.score.j).shot,
                "shots_with_switches_or_false_layers": sum(
                    1 for r in mine if r.score.id_switches or r.score.false_layers
                ),
                "id_switches": sum(r.score.id_switches for r in mine),
                "fragments": sum(r.score.fragments for r in mine),
                "false_layers": sum(r.score.false_layers for r in mine),
                "late_recall": statistics.mean(late) if late else None,
                "decoys_apart": sum(1 for r in mine if r.score.decoy_apart),
                "decoy_shots": sum(1 for r in mine if r.score.decoy_apart is not None),
                "encoder_passes_per_frame": statistics.mean(
                    r.counters.get("image_encoder_passes", 0) / r.score.frames for r in mine
                ),
                "seconds": sum(r.seconds for r in mine),
            }
        )
    if as_json:
        summary = {
            "shots": shots,
            "frames": frames,
            "first_seed": first_seed,
            "noise_seeds": noise_seeds,
            "noise": noise_level,
            "tracking": tracking,
            "detect": detect,
            "scenarios": list(kinds),
            "sizes": [f"{w}x{h}" for w, h in plate_sizes],
            "per_shot": [
                {"shot": r.shot, "strategy": r.strategy.value, "j": r.score.j, "switches": r.score.id_switches,
                 "fragments": r.score.fragments, "false_layers": r.score.false_layers,
                 "decoy_apart": r.score.decoy_apart}
                for r in results
            ],
        }  # fmt: skip
        console.print_json(json.dumps(summary | {"rows": rows}))
        return
    table = Table(
        "strategy",
        "mean J",
        "worst shot J",
        "worst shot",
        "ID switches",
        "fragments",
        "false layers",
        "shots with switches / false layers",
        "late recall",
        "decoys kept apart",
        "seg. calls/frame",
        "seconds",
        title=f"{shots} synthetic shots (seeds {first_seed}…, {', '.join(kinds)}) × {noise_seeds} noise seed(s) × "
        f"{frames} frames, {noise_level} noise, farm: tracking {tracking}, detect {detect}",
    )
    for row in rows:
        late_text = f"{row['late_recall']:.3f}" if row["late_recall"] is not None else "-"
        table.add_row(
            row["strategy"],
            f"{row['mean_j']:.3f}",
            f"{row['min_j']:.3f}",
            str(row["worst_shot"]),
            str(row["id_switches"]),
            str(row["fragments"]),
            str(row["false_layers"]),
            f"{row['shots_with_switches_or_false_layers']}/{len(results) // len(rows)}",
            late_text,
            f"{row['decoys_apart']}/{row['decoy_shots']}" if row["decoy_shots"] else "-",
            f"{row['encoder_passes_per_frame']:.2f}",
            f"{row['seconds']:.0f}",
        )
    console.print(table)


@click.command()
@click.option(
    "--frames",
    "frame_counts",
    multiple=True,
    type=click.IntRange(2, 5000),
    default=(40,),
    show_default=True,
    help="Shot lengths to run (repeat the option for several).",
)
@click.option(
    "--strategy",
    "strategies",
    multiple=True,
    type=click.Choice([s.value for s in Strategy]),
    default=("farm", "keyframe-greedy"),
    show_default=True,
)
@click.option("--size", default="320x180", show_default=True, help="Plate size WIDTHxHEIGHT.")
@click.option(
    "--sam2-size", type=click.Choice(["tiny", "small", "base_plus", "large"]), default="tiny", show_default=True
)
@click.option(
    "--sam2-image-size",
    type=click.IntRange(256, 2048),
    default=None,
    help="SAM2 input size (default the model's 1024); 512 makes CPU runs ~13× faster.",
)
@click.option(
    "--window",
    "--chunk",
    "window",
    type=click.IntRange(2, 500),
    default=20,
    show_default=True,
    help="Frames per tracking window.",
)
@click.option("--refresh", type=click.IntRange(1, 500), default=5, show_default=True)
@click.option(
    "--tracking",
    "trackings",
    multiple=True,
    type=click.Choice([m.value for m in TrackingMode]),
    default=("windows",),
    show_default=True,
    help="The farm strategy's tracking modes to run (repeat for several).",
)
@click.option(
    "--detect",
    "detects",
    multiple=True,
    type=click.Choice([m.value for m in DetectMode]),
    default=("every",),
    show_default=True,
    help="The farm strategy's detection: every frame, or only where layers refresh (repeat for several).",
)
@click.option(
    "--repeat", type=click.IntRange(1, 20), default=1, show_default=True, help="Interleaved repetitions of each run."
)
@click.option("--feature-cache-mb", type=click.IntRange(0), default=512, show_default=True)
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=Path("mattefarm-bench"), show_default=True)
@click.option("--json", "as_json", is_flag=True)
def bench(
    frame_counts: tuple[int, ...],
    strategies: tuple[str, ...],
    size: str,
    sam2_size: str,
    sam2_image_size: int | None,
    window: int,
    refresh: int,
    trackings: tuple[str, ...],
    detects: tuple[str, ...],
    repeat: int,
    feature_cache_mb: int,
    workdir: Path,
    as_json: bool,
) -> None:
    """Real SAM2 + GroundingDINO at random weights (shadowed by ground truth so the workload is a real
    shot's): seconds per frame (min and median of interleaved repetitions) and per stage, tracking
    steps per frame-object, encoder passes and decodes per frame, peak resident memory; one fresh
    process per run."""
    from workers.bench.models import run_in_subprocess, summarise, synthetic_plate

    width, height = parse_size(size, "--size")
    plates = {frames: synthetic_plate(workdir, frames, width, height) for frames in frame_counts}
    farm_modes = [(tracking, detect) for tracking in trackings for detect in detects]
    runs = [
        (frames, strategy, tracking, detect)
        for frames in frame_counts
        for strategy in strategies
        for tracking, detect in (farm_modes if strategy == Strategy.FARM.value else farm_modes[:1])
    ]
    rows = []
    with Progress(console=console, transient=True) as progress:
        bar = progress.add_task("benchmark runs", total=repeat * len(runs))
        for _ in range(repeat):  # interleaved: a slow moment of the machine hits every configuration
            for frames, strategy, tracking, detect in runs:
                progress.update(bar, description=f"{frames} frames, {strategy} {tracking} {detect}")
                rows.append(
                    run_in_subprocess(
                        plates[frames],
                        Strategy(strategy),
                        backend="shadow",
                        sam2_size=sam2_size,
                        window=window,
                        refresh=refresh,
                        feature_cache_mb=feature_cache_mb,
                        max_side=max(width, height),
                        sam2_image_size=sam2_image_size,
                        tracking=tracking,
                        detect=detect,
                    )
                )
                progress.advance(bar)
    summary = summarise(rows)
    if as_json:
        console.print_json(json.dumps({"summary": summary, "runs": rows}))
        return
    table = Table(
        "frames",
        "strategy",
        "runs",
        "s/frame min",
        "s/frame median",
        "detect ms/f",
        "segment ms/f",
        "track ms/f",
        "export ms/f",
        "steps per object-frame",
        "encoder passes/f",
        "decodes/f",
        "peak RSS MiB",
        title=f"SAM 2.1 {sam2_size} (input {sam2_image_size or 1024} px) + GroundingDINO Swin-T, random weights, "
        f"plate {size}, refresh {refresh} (windows of {window})",
    )
    for row in summary:
        stage = row["stage_ms_per_frame"]
        name = row["strategy"] + (f" ({row['tracking']})" if row["tracking"] != "-" else "")
        table.add_row(
            str(row["frames"]),
            name,
            str(row["runs"]),
            f"{row['s_per_frame_min']:.3f}",
            f"{row['s_per_frame_median']:.3f}",
            *(f"{stage[s]:.0f}" for s in ("detect", "segment", "track", "export")),
            f"{row['steps_per_object_frame']:.2f}",
            f"{row['encoder_passes_per_frame']:.2f}",
            f"{row['decodes_per_frame']:.2f}",
            f"{row['peak_rss_mib']:.0f}",
        )
    console.print(table)


@click.command("bench-io")
@click.option(
    "--size",
    "sizes",
    multiple=True,
    default=("1920x1080", "4096x2160"),
    show_default=True,
    help="Plate sizes WIDTHxHEIGHT (repeat the option for several).",
)
@click.option("--frames", type=click.IntRange(2, 500), default=8, show_default=True)
@click.option("--layers", type=click.IntRange(1, 64), default=4, show_default=True, help="Object layers per matte.")
@click.option("--threads", type=click.IntRange(1, 32), default=2, show_default=True, help="Decoders running ahead.")
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=None, help="Scratch folder (default: temp).")
@click.option("--json", "as_json", is_flag=True)
def bench_io(
    sizes: tuple[str, ...], frames: int, layers: int, threads: int, workdir: Path | None, as_json: bool
) -> None:
    """Plate decode and matte EXR write throughput (frames/s and MB/s) on this machine."""
    from workers.bench.plate_io import measure

    parsed = []
    for size in sizes:
        try:
            width, height = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise click.BadParameter(
                f"{size!r}: write sizes as WIDTHxHEIGHT, e.g. 1920x1080", param_hint="--size"
            ) from None
        parsed.append((width, height))
    rows = []
    with tempfile.TemporaryDirectory(prefix="mattefarm-bench-io-", dir=workdir) as tmp:
        for width, height in parsed:
            with console.status(f"{width}x{height}…") as status:
                rows += measure(
                    Path(tmp),
                    width,
                    height,
                    get_settings(),
                    frames=frames,
                    layers=layers,
                    threads=threads,
                    progress=functools.partial(_update_status, status),
                )
    if as_json:
        console.print_json(
            json.dumps(
                [
                    {
                        "size": r.size,
                        "operation": r.operation,
                        "frames": r.frames,
                        "seconds": r.seconds,
                        "frames_per_s": r.fps,
                        "file_mb_per_s": r.file_mb_s,
                        "pixel_mb_per_s": r.pixel_mb_s,
                        "file_mb_per_frame": r.file_mb / r.frames,
                    }
                    for r in rows
                ]
            )
        )
        return
    table = Table(
        "size",
        "operation",
        "frames/s",
        "file MB/s",
        "pixel MB/s",
        "MB/frame on disk",
        title=f"Plate decode and matte write, {frames} frames per row",
    )
    for r in rows:
        table.add_row(
            r.size,
            r.operation,
            f"{r.fps:.2f}",
            f"{r.file_mb_s:.1f}",
            f"{r.pixel_mb_s:.0f}",
            f"{r.file_mb / r.frames:.2f}",
        )
    console.print(table)


@click.command("bench-api")
@click.argument("plate")
@click.option("--jobs", "jobs_", type=click.IntRange(1, 100000), default=200, show_default=True)
@click.option("--clients", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option(
    "--output-root", "-o", required=True, help="Where the benchmark's jobs would write (their folders are made)."
)
@click.option("--cancel/--keep", default=True, show_default=True, help="Cancel the submitted jobs afterwards.")
@click.option(
    "--rate",
    type=click.FloatRange(0.1, 10000),
    default=None,
    help="Open loop: this many submissions a second across all clients (default: closed loop, as fast as answered).",
)
@farm_errors
def bench_api(plate: str, jobs_: int, clients: int, output_root: str, cancel: bool, rate: float | None) -> None:
    """Submit JOBS jobs from CLIENTS concurrent clients, read their status, time the job list's
    first and last pages: latency median and p99, throughput, how busy the machine was."""
    spec = {"plate": plate, "prompt": "person", "output_root": output_root, "show": "bench", "priority": 1}
    with console.status(f"{jobs_} submissions from {clients} clients…"):
        report = run_load(api_url(), api_token(), spec, jobs_, clients, rate=rate)
    for line in report.lines():
        console.print(line)
    if cancel and report.job_ids:
        with client() as farm:
            ids = report.job_ids + report.warmup_ids
            results = [
                r
                for at in range(0, len(ids), 1000)
                for r in farm.bulk(ids[at : at + 1000], "cancel", reason="bench-api cleanup").results
            ]
        console.print(f"canceled {sum(r.ok for r in results)} benchmark job(s)")
    if report.submit.errors or len(report.job_ids) != jobs_:
        err.print(f"[red]{len(report.submit.errors)} submission(s) failed: {report.submit.errors[:3]}[/]")
        raise SystemExit(1)


def _update_status(status: Status, text: str) -> None:
    status.update(text)
