"""Job commands: submit, status, jobs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
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
@click.option(
    "--option",
    "extra_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any pipeline option (repeatable), e.g. --option window_frames=30 --option box_threshold=0.4.",
)
@click.option("--notify-url", default=None, help="Webhook POSTed the job's summary when it finishes.")
@click.option("--task-frames", type=click.IntRange(1, 10000), default=None, help="Frames per task (chunk).")
@click.option("--min-gpu-memory-gb", type=click.FloatRange(0, 1024), default=None, help="Only GPUs with this much.")
@click.option("--allow-smaller-model", is_flag=True, help="After a GPU out-of-memory, retry with a smaller SAM2.")
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
    extra_options: tuple[str, ...],
    notify_url: str | None,
    task_frames: int | None,
    min_gpu_memory_gb: float | None,
    allow_smaller_model: bool,
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
        "notify_url": notify_url,
        "task_frames": task_frames,
        "min_gpu_memory_gb": min_gpu_memory_gb,
        "allow_smaller_model": allow_smaller_model or None,
    }
    options = _options(extra_options) | {
        k: v for k, v in {"max_side": max_side, "strategy": strategy}.items() if v is not None
    }
    if options:
        payload["options"] = options
    with client() as farm:
        submitted = farm.submit({k: v for k, v in payload.items() if v is not None})
        console.print(f"submitted [bold]{submitted.id}[/] → {submitted.output_dir}")
        if follow:
            follow_job(farm, submitted.id)


def _options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """KEY=VALUE pairs; a value that reads as JSON (30, 0.4, true) is sent as that, else as text.
    The farm checks each against the pipeline options and names any it refuses (options.KEY)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r}: give KEY=VALUE", param_hint="--option")
        try:
            options[key.strip()] = json.loads(raw)
        except ValueError:
            options[key.strip()] = raw
    return options


@click.command()
@click.argument("job_id")
@click.option("--follow", "-F", is_flag=True, help="Live progress bars until the job finishes.")
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
@farm_errors
def status(job_id: str, follow: bool, as_json: bool) -> None:
    """Show a job's state, per-stage progress, timings and model calls."""
    with client() as farm:
        job_id = farm.resolve_job(job_id)
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
@click.option("--search", "-q", default=None, help="Text in the id, show, shot, user or prompt.")
@click.option("--since", default=None, help="Submitted at or after: 2026-11-30, 2026-11-30T09:00, or 12h / 7d ago.")
@click.option(
    "--sort",
    type=click.Choice(["created", "priority", "state", "user", "show", "shot", "finished"]),
    default="created",
    show_default=True,
)
@click.option("--asc", is_flag=True, help="Ascending (default: descending, newest or highest first).")
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@click.option("--json", "as_json", is_flag=True)
@farm_errors
def jobs(
    state: str | None,
    show: str | None,
    shot: str | None,
    user: str | None,
    search: str | None,
    since: str | None,
    sort: str,
    asc: bool,
    limit: int,
    offset: int,
    as_json: bool,
) -> None:
    """List jobs (newest first): filter, search, sort and page on the farm."""
    filters = {"state": state, "show": show, "shot": shot, "user": user, "q": search, "since": _since(since)}
    with client() as farm:
        page = farm.jobs(**filters, sort=sort, order="asc" if asc else "desc", limit=limit, offset=offset)
    if as_json:
        console.print_json(page.model_dump_json())
        return
    table = Table("id", "state", "user", "show", "shot", "ver", "pri", "frames", "progress", "prompt", "submitted")
    for j in page.items:
        table.add_row(
            j.id,
            state_text(j.state),
            j.user,
            j.show or "",
            j.shot,
            f"v{j.version:03d}",
            str(j.priority),
            f"{j.frames_done}/{j.frames_total}",
            f"{100 * j.progress:.0f}%",
            j.prompt,
            j.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    console.print(table)
    shown = f"{offset + 1}-{offset + len(page.items)}" if page.items else "none"
    console.print(
        f"{shown} of {page.total} job(s)"
        + (f"; --offset {offset + limit} for more" if page.total > offset + limit else "")
    )


def _since(value: str | None) -> str | None:
    """An ISO date or datetime as given, or '12h' / '7d' ago as an ISO datetime (UTC)."""
    if value is None:
        return None
    match = re.fullmatch(r"(\d{1,5})([hd])", value)
    if match:
        delta = timedelta(hours=int(match[1])) if match[2] == "h" else timedelta(days=int(match[1]))
        return (datetime.now(UTC) - delta).isoformat()
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            "an ISO date (2026-11-30, 2026-11-30T09:00) or 12h / 7d", param_hint="--since"
        ) from None
    return value


@click.command()
@click.argument("job_id")
@click.option(
    "--ttl", "ttl_h", type=click.FloatRange(0.02, 168), default=None, help="Hours the links open (default 24)."
)
@click.option(
    "--movie", "only", flag_value="movie", help='Print only the movie\'s link (rv "$(mattefarm review JOB --movie)").'
)
@click.option("--sheet", "only", flag_value="sheet", help="Print only the contact sheet's link.")
@farm_errors
def review(job_id: str, ttl_h: float | None, only: str | None) -> None:
    """Signed links to a job's review movie and contact sheet: they open in RV or a browser
    without a token, until they expire, and grant nothing else."""
    with client() as farm:
        links = farm.review_links(farm.resolve_job(job_id), round(ttl_h * 3600) if ttl_h else None)
    if only == "movie":
        click.echo(links.movie_url)
    elif only == "sheet":
        click.echo(links.contact_sheet_url)
    else:
        console.print(f"movie  {links.movie_url}", soft_wrap=True)
        console.print(f"sheet  {links.contact_sheet_url}", soft_wrap=True)
        console.print(f"[dim]open until {links.expires_at:%Y-%m-%d %H:%M} UTC[/]")
