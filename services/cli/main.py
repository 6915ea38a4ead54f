"""``mattefarm``: the command line for compositors, pipeline TDs and farm monitors.

Every failure prints one readable line and exits non-zero: 1 for a refused or failed request,
2 for bad usage, 3 when the farm can't be reached.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas import JobSpec, JobState, JobStatus, PipelineOptions
from services.client import FarmAPIError, FarmClient, FarmConnectionError, FarmError

console = Console(stderr=False, highlight=False)
err = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


def api_url() -> str:
    return os.environ.get("MATTEFARM_API_URL", f"http://127.0.0.1:{os.environ.get('MATTEFARM_API_PORT', '8321')}")


def api_token() -> str:
    if token := os.environ.get("MATTEFARM_TOKEN"):
        return token
    from farm_config import get_settings

    path = get_settings().dev_token_path
    if path.exists():
        return path.read_text().strip()
    raise click.UsageError(
        "no farm token: set MATTEFARM_TOKEN (ask your farm admin), or start an embedded farm with `mattefarm up`"
    )


def client() -> FarmClient:
    return FarmClient(api_url(), api_token())


def farm_errors(fn: F) -> F:
    """Turn client errors into one readable line and an exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FarmConnectionError as exc:
            err.print(f"[red]error:[/] {exc}")
            sys.exit(3)
        except FarmAPIError as exc:
            err.print(f"[red]error ({exc.status}):[/] {exc.message}")
            for problem in exc.problems:
                err.print(f"  • {problem.field}: {problem.message}")
            sys.exit(1)
        except FarmError as exc:
            err.print(f"[red]error:[/] {exc}")
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option("0.1.0", prog_name="mattefarm")
def cli() -> None:
    """Matte Farm: per-object roto mattes from a plate and a text prompt."""


# --- jobs ------------------------------------------------------------------------------------


@cli.command()
@click.argument("plate")
@click.option("--prompt", "-p", required=True, help="Comma-separated classes, e.g. 'person, car'.")
@click.option("--frames", "-f", default=None, help="Frame range, e.g. 1001-1100 (default: frames on disk).")
@click.option("--output-root", "-o", default=None, help="Where mattes go (default: the current folder).")
@click.option("--priority", type=click.IntRange(0, 100), default=50, show_default=True)
@click.option("--show", default=None)
@click.option("--shot", default=None, help="Shot name (default: from the plate file name).")
@click.option("--max-side", type=int, default=None, help="Longest side for inference (default 1024).")
@click.option("--follow", is_flag=True, help="Show live progress until the job finishes.")
@farm_errors
def submit(
    plate: str, prompt: str, frames: str | None, output_root: str | None, priority: int,
    show: str | None, shot: str | None, max_side: int | None, follow: bool,
) -> None:
    """Submit PLATE (a frame pattern like /shots/sh010/sh010_plate.####.exr)."""
    plate_path = plate if plate.startswith("/") else str(Path.cwd() / plate)
    payload: dict[str, Any] = {
        "plate": plate_path, "prompt": prompt, "frames": frames, "priority": priority, "show": show,
        "shot": shot, "output_root": output_root or str(Path.cwd()),
    }
    if max_side is not None:
        payload["options"] = PipelineOptions(max_side=max_side).model_dump()
    with client() as farm:
        submitted = farm.submit({k: v for k, v in payload.items() if v is not None})
        console.print(f"submitted [bold]{submitted.id}[/] → {submitted.output_dir}")
        if follow:
            _follow(farm, submitted.id)


@cli.command()
@click.argument("job_id")
@click.option("--follow", "-F", is_flag=True, help="Live progress bars until the job finishes.")
@click.option("--json", "as_json", is_flag=True, help="Print the full status as JSON.")
@farm_errors
def status(job_id: str, follow: bool, as_json: bool) -> None:
    """Show a job's state, per-stage progress, timings and model calls."""
    with client() as farm:
        if follow:
            _follow(farm, job_id)
            return
        job = farm.job(job_id)
        if as_json:
            console.print_json(job.model_dump_json())
        else:
            _print_status(job)


@cli.command()
@click.option("--state", type=click.Choice([s.value for s in JobState]), default=None)
@click.option("--show", default=None)
@click.option("--shot", default=None)
@click.option("--user", default=None)
@click.option("--limit", type=click.IntRange(1, 200), default=20, show_default=True)
@click.option("--offset", type=click.IntRange(0), default=0)
@click.option("--json", "as_json", is_flag=True)
@farm_errors
def jobs(state: str | None, show: str | None, shot: str | None, user: str | None,
         limit: int, offset: int, as_json: bool) -> None:
    """List jobs, newest first."""
    with client() as farm:
        page = farm.jobs(state=state, show=show, shot=shot, user=user, limit=limit, offset=offset)
    if as_json:
        console.print_json(page.model_dump_json())
        return
    table = Table("id", "state", "user", "show", "shot", "pri", "progress", "prompt", "submitted")
    for j in page.items:
        pct = f"{100 * j.frames_done / j.frames_total:.0f}%" if j.frames_total else "-"
        table.add_row(j.id, _state(j.state), j.user, j.show or "", j.shot, str(j.priority), pct, j.prompt,
                      j.created_at.strftime("%Y-%m-%d %H:%M"))
    console.print(table)
    console.print(f"{len(page.items)} of {page.total} job(s)")


@cli.command()
@click.argument("job_id")
@click.option("--reason", "-r", default=None, help="Why (kept in the job's audit log).")
@farm_errors
def cancel(job_id: str, reason: str | None) -> None:
    """Cancel a job (queued: at once; running: after the current frame)."""
    with client() as farm:
        job = farm.cancel(job_id, reason)
    console.print(f"{job.id}: {_state(job.state)}")


# --- output ----------------------------------------------------------------------------------

_COLOURS = {"queued": "cyan", "running": "yellow", "canceling": "magenta", "succeeded": "green",
            "failed": "red", "canceled": "magenta"}


def _state(state: JobState) -> str:
    return f"[{_COLOURS.get(state.value, 'white')}]{state.value}[/]"


def _print_status(job: JobStatus) -> None:
    console.print(f"[bold]{job.id}[/]  {_state(job.state)}  {job.shot} v{job.version:03d}  "
                  f"user {job.user}  priority {job.priority}  attempts {job.attempts}")
    console.print(f"plate   {job.spec.plate}  ({len(job.frames)} frames)   prompt '{job.spec.prompt}'")
    for warning in job.warnings:
        console.print(f"[bold red]⚠ {warning}[/]")
    table = Table("stage", "state", "frames", "seconds", "fps")
    for st in job.stages:
        fps = f"{st.frames_done / st.seconds:.2f}" if st.seconds else ""
        table.add_row(st.name.value, st.state.value, f"{st.frames_done}/{st.frames_total}",
                      f"{st.seconds:.2f}" if st.seconds is not None else "", fps)
    console.print(table)
    c = job.counters
    console.print(f"model calls: detector {c.detector_calls}, image encoder {c.image_encoder_passes}, "
                  f"mask decoder {c.mask_decoder_calls}, tracking steps {c.tracking_steps}; "
                  f"frames written {c.frames_written}")
    if job.models:
        console.print(f"models: {job.models.backend} ({job.models.weights} weights) on {job.models.device}")
    if job.layers:
        console.print("layers: " + ", ".join(f"{ly.name} [{ly.first_frame}-{ly.last_frame}]" for ly in job.layers))
    console.print(f"output  {job.output_pattern}")
    if job.manifest:
        console.print(f"manifest {job.manifest}")
    if job.error:
        console.print(f"[red]error: {job.error}[/]")


def _follow(farm: FarmClient, job_id: str, poll: float = 0.5) -> JobStatus:
    columns = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bars: dict[str, Any] = {}
        while True:
            job = farm.job(job_id)
            for st in job.stages:
                if st.name.value not in bars:
                    bars[st.name.value] = progress.add_task(st.name.value, total=st.frames_total or None)
                progress.update(bars[st.name.value], completed=st.frames_done, total=st.frames_total or None)
            if job.state.is_final:
                break
            time.sleep(poll)
    _print_status(job)
    if job.state != JobState.SUCCEEDED:
        sys.exit(1)
    return job


def print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


def register_extra_commands() -> None:
    from services.cli import farm, models, synth

    cli.add_command(farm.up)
    cli.add_command(farm.api)
    cli.add_command(farm.worker)
    cli.add_command(farm.demo)
    cli.add_command(farm.db)
    cli.add_command(models.models)
    cli.add_command(synth.synth)


register_extra_commands()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
