"""Job commands: submit, status, jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from schemas import JobState
from services.cli.common import client, console, farm_errors, follow_job, print_status, state_text


@click.command()
@click.argument("plate")
@click.option("--prompt", "-p", required=True, help="Comma-separated classes, e.g. 'person, car'.")
@click.option("--frames", "-f", default=None, help="Frame range, e.g. 1001-1100 (default: the span on disk).")
@click.option("--skip-missing", is_flag=True, help="Skip frames of the range that are not on disk (and list them).")
@click.option("--part", default=None, help="Multi-part EXR: the part to read (default: the first RGB part).")
@click.option("--colourspace", default=None, help="Plate colour space, e.g. ACEScg, linear, srgb, cineon.")
@click.option("--output-root", "-o", default=None, help="Where mattes go (default: the current folder).")
@click.option("--priority", type=click.IntRange(0, 100), default=50, show_default=True)
@click.option("--show", default=None)
@click.option("--shot", default=None, help="Shot name (default: from the plate file name).")
@click.option("--max-side", type=int, default=None, help="Longest side for inference (default 1024).")
@click.option(
    "--strategy",
    type=click.Choice(["farm", "keyframe-greedy", "per-frame"]),
    default=None,
    help="How layers keep identity (default farm).",
)
@click.option("--follow", is_flag=True, help="Show live progress until the job finishes.")
@farm_errors
def submit(
    plate: str,
    prompt: str,
    frames: str | None,
    skip_missing: bool,
    part: str | None,
    colourspace: str | None,
    output_root: str | None,
    priority: int,
    show: str | None,
    shot: str | None,
    max_side: int | None,
    strategy: str | None,
    follow: bool,
) -> None:
    """Submit PLATE (a frame pattern like /shots/sh010/sh010_plate.####.exr)."""
    plate_path = plate if plate.startswith("/") else str(Path.cwd() / plate)
    payload: dict[str, Any] = {
        "plate": plate_path,
        "prompt": prompt,
        "frames": frames,
        "on_missing_frames": "skip" if skip_missing else None,
        "plate_part": part,
        "colourspace": colourspace,
        "priority": priority,
        "show": show,
        "shot": shot,
        "output_root": output_root or str(Path.cwd()),
    }
    options = {k: v for k, v in {"max_side": max_side, "strategy": strategy}.items() if v is not None}
    if options:
        payload["options"] = options
    with client() as farm:
        submitted = farm.submit({k: v for k, v in payload.items() if v is not None})
        console.print(f"submitted [bold]{submitted.id}[/] → {submitted.output_dir}")
        if follow:
            follow_job(farm, submitted.id)


@click.command()
@click.argument("job_id")
@click.option("--follow", "-F", is_flag=True, help="Live progress bars until the job finishes.")
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
@farm_errors
def status(job_id: str, follow: bool, as_json: bool) -> None:
    """Show a job's state, per-stage progress, timings and model calls."""
    with client() as farm:
        if follow:
            follow_job(farm, job_id)
            return
        job = farm.job(job_id)
        if as_json:
            console.print_json(job.model_dump_json())
        else:
            print_status(job)
            if not job.state.is_final:
                for stuck in farm.farm().unplaceable:
                    if stuck.job_id == job.id:
                        console.print(f"[yellow]can't be placed:[/] {stuck.why}")


@click.command()
@click.option("--state", type=click.Choice([s.value for s in JobState]), default=None)
@click.option("--show", default=None)
@click.option("--shot", default=None)
@click.option("--user", default=None)
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@click.option("--json", "as_json", is_flag=True)
@farm_errors
def jobs(
    state: str | None, show: str | None, shot: str | None, user: str | None, limit: int, offset: int, as_json: bool
) -> None:
    """List jobs, newest first."""
    with client() as farm:
        page = farm.jobs(state=state, show=show, shot=shot, user=user, limit=limit, offset=offset)
    if as_json:
        console.print_json(page.model_dump_json())
        return
    table = Table("id", "state", "user", "show", "shot", "pri", "progress", "prompt", "submitted")
    for j in page.items:
        pct = f"{100 * j.frames_done / j.frames_total:.0f}%" if j.frames_total else "-"
        table.add_row(
            j.id,
            state_text(j.state),
            j.user,
            j.show or "",
            j.shot,
            str(j.priority),
            pct,
            j.prompt,
            j.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)
    console.print(f"{len(page.items)} of {page.total} job(s)")
