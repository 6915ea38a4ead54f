"""``mattefarm bench-edges``: edge quality and refinement cost at plate resolution, on soft-alpha
synthetic shots (synthetic backend), for today's upsampling and each refinement method."""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from services.cli.common import console


@click.command("bench-edges")
@click.option("--first-seed", type=click.IntRange(0), default=600, show_default=True, help="Shot seeds from here.")
@click.option("--hd", type=click.IntRange(0, 100), default=8, show_default=True, help="Shots at 1920×1080.")
@click.option("--uhd", type=click.IntRange(0, 100), default=4, show_default=True, help="Shots at 4096×2160.")
@click.option("--frames", type=click.IntRange(10, 500), default=12, show_default=True)
@click.option("--objects", type=click.IntRange(1, 12), default=4, show_default=True)
@click.option("--noise-seed", type=click.IntRange(0), default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True, help="Where the refinement runs: cpu, cuda, cuda:N.")
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=None, help="Keep the shots here.")
@click.option("--json", "as_json", is_flag=True)
def bench_edges(
    first_seed: int,
    hd: int,
    uhd: int,
    frames: int,
    objects: int,
    noise_seed: int,
    device: str,
    workdir: Path | None,
    as_json: bool,
) -> None:
    """Boundary-band SAD, MSE, gradient error and dtSSD of each edge method against soft-alpha
    truth, per shot and per resolution (mean, worst shot), with seconds per frame of refinement."""
    import shutil

    import torch

    from schemas import PipelineOptions
    from workers.bench.edges import METHODS, EdgeRow, bench_shot, suite, summarise
    from workers.models.synthetic import SyntheticNoise

    if hd + uhd == 0:
        raise click.BadParameter("ask for at least one shot", param_hint="--hd/--uhd")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise click.BadParameter("no CUDA device here; use --device cpu", param_hint="--device")
    shots = suite(first_seed, hd, uhd)
    rows: list[EdgeRow] = []
    with tempfile.TemporaryDirectory(prefix="mattefarm-bench-edges-") as tmp:
        root = workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("shots", total=len(shots))
            for shot in shots:
                progress.update(task, description=f"{shot.name} {shot.size[0]}×{shot.size[1]}")
                noise = SyntheticNoise(seed=noise_seed)
                rows += bench_shot(root, shot, list(METHODS), frames=frames, objects=objects,
                                   options=PipelineOptions(), noise=noise, device=device)  # fmt: skip
                if workdir is None:
                    shutil.rmtree(root / shot.name, ignore_errors=True)
                progress.advance(task)
    groups = {f"{w}×{h}": [r for r in rows if r.size == (w, h)] for w, h in dict.fromkeys(r.size for r in rows)}
    summaries = {size: summarise(group) for size, group in groups.items()}
    if as_json:
        doc: dict[str, Any] = {
            "first_seed": first_seed,
            "frames": frames,
            "noise_seed": noise_seed,
            "device": device,
            "rows": [asdict(r) for r in rows],
            "summary": {size: [asdict(s) for s in group] for size, group in summaries.items()},
        }
        console.print_json(json.dumps(doc))
        return
    per_shot = Table("shot", "method", "SAD", "MSE", "grad", "dtSSD", "J", "refine s/frame", title="per shot")
    for r in rows:
        per_shot.add_row(r.shot, r.method, f"{r.edges.sad:.2f}", f"{r.edges.mse:.2f}", f"{r.edges.grad:.3f}",
                         f"{r.edges.dtssd:.2f}", f"{r.j:.3f}", f"{r.refine_s_per_frame:.2f}")  # fmt: skip
    wide = Console(width=max(console.width, 180), highlight=False)  # the tables are wider than a terminal's 80
    wide.print(per_shot)
    for size, group in summaries.items():
        table = Table(
            "method", "SAD", "× SAD", "worst × SAD (shot)", "MSE", "grad", "× grad", "dtSSD", "× dtSSD", "J", "min J",
            "refine s/frame",
            title=f"{size}: mean over {group[0].shots} shots (× = ratio to upsampling, shot by shot)",
        )  # fmt: skip
        for s in group:
            worst = f"{s.worst_sad_ratio:.3f} ({s.worst_shot})"
            table.add_row(s.method, f"{s.sad:.2f}", f"{s.sad_ratio:.3f}", worst, f"{s.mse:.2f}", f"{s.grad:.3f}",
                          f"{s.grad_ratio:.3f}", f"{s.dtssd:.2f}", f"{s.dtssd_ratio:.3f}", f"{s.j:.3f}",
                          f"{s.min_j:.3f}", f"{s.refine_s_per_frame:.2f}")  # fmt: skip
        wide.print(table)
