"""What every ``mattefarm`` command shares: the consoles, the client, error handling, status views.

Every failure prints one readable line and exits non-zero: 1 for a refused or failed request,
2 for bad usage, 3 when the farm can't be reached.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from farm_config import get_settings
from schemas import JobState, JobStatus, format_frame_range
from services.client import FarmAPIError, FarmClient, FarmConnectionError, FarmError

console = Console(stderr=False, highlight=False)
err = Console(stderr=True, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])


def api_url() -> str:
    return get_settings().resolved_api_url


def api_token() -> str:
    settings = get_settings()
    if settings.token:
        return settings.token
    path = settings.dev_token_path
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
            if len(exc.problems) > 1:
                err.print(f"[red]error ({exc.status}):[/] {len(exc.problems)} problems")
                for problem in exc.problems:
                    err.print(f"  • {problem.field}: {problem.message}")
            else:
                err.print(f"[red]error ({exc.status}):[/] {exc.message}")
            sys.exit(1)
        except FarmError as exc:
            err.print(f"[red]error:[/] {exc}")
            sys.exit(1)

    return cast(F, wrapper)


# --- output ----------------------------------------------------------------------------------

_COLOURS = {
    "queued": "cyan",
    "running": "yellow",
    "canceling": "magenta",
    "succeeded": "green",
    "failed": "red",
    "canceled": "magenta",
}


def state_text(state: JobState) -> str:
    return f"[{_COLOURS.get(state.value, 'white')}]{state.value}[/]"


def print_status(job: JobStatus) -> None:
    console.print(
        f"[bold]{job.id}[/]  {state_text(job.state)}  {job.shot} v{job.version:03d}  "
        f"user {job.user}  priority {job.priority}  attempts {job.attempts}"
    )
    console.print(f"plate   {job.spec.plate}  ({len(job.frames)} frames)   prompt '{job.spec.prompt}'")
    if job.missing_frames:
        console.print(f"[yellow]skipped (not on disk): {format_frame_range(job.missing_frames)}[/]")
    for warning in job.warnings:
        console.print(f"[bold red]⚠ {warning}[/]")
    table = Table("stage", "state", "frames", "seconds", "fps")
    for st in job.stages:
        fps = f"{st.frames_done / st.seconds:.2f}" if st.seconds else ""
        table.add_row(
            st.name.value,
            st.state.value,
            f"{st.frames_done}/{st.frames_total}",
            f"{st.seconds:.2f}" if st.seconds is not None else "",
            fps,
        )
    console.print(table)
    c = job.counters
    console.print(
        f"model calls: detector {c.detector_calls}, image encoder {c.image_encoder_passes}, "
        f"mask decoder {c.mask_decoder_calls}, tracking steps {c.tracking_steps}; "
        f"frames written {c.frames_written}"
    )
    if job.models:
        console.print(f"models: {job.models.backend} ({job.models.weights} weights) on {job.models.device}")
    if job.layers:
        console.print("layers: " + ", ".join(f"{ly.name} [{ly.first_frame}-{ly.last_frame}]" for ly in job.layers))
    console.print(f"output  {job.output_pattern}")
    if job.manifest:
        console.print(f"manifest {job.manifest}")
    if job.review:
        console.print(f"review  {job.review.movie}")
        console.print(f"        {job.review.contact_sheet}")
    if job.error:
        console.print(f"[red]error: {job.error}[/]")


PROGRESS_COLUMNS = (TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())


def follow_job(farm: FarmClient, job_id: str, poll: float = 0.5) -> JobStatus:
    with Progress(*PROGRESS_COLUMNS, console=console, transient=False) as progress:
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
    print_status(job)
    if job.state != JobState.SUCCEEDED:
        sys.exit(1)
    return job


def parse_size(value: str, option: str = "--size") -> tuple[int, int]:
    """``WIDTHxHEIGHT`` → (width, height), or a usage error naming the option."""
    match = re.fullmatch(r"(\d+)x(\d+)", value.strip())
    if not match:
        raise click.BadParameter(f"write the size as WIDTHxHEIGHT, e.g. 640x360 (got {value!r})", param_hint=option)
    return int(match.group(1)), int(match.group(2))
