"""Farm-monitor commands: job/stage/task controls (one job or many), tasks, task logs, workers.

Imports inside commands are for start-up time only: `mattefarm --help` and the job commands
must not load OpenEXR, OpenCV, SQLAlchemy or torch. lint-imports checks them like any other
import, so none of them can hide a circle.
"""

from __future__ import annotations

import json
import threading
import time

import click
from rich.table import Table

from farm_config import get_settings
from schemas import STAGE_ORDER
from schemas.task import ControlResult
from services.cli.common import client, console, err, farm_errors

_stage = click.option(
    "--stage", type=click.Choice([s.value for s in STAGE_ORDER]), default=None, help="Only this stage's tasks."
)
_task = click.option("--task", "task_id", type=int, default=None, help="Only this task (its id from 'tasks').")


def _report(results: list[ControlResult]) -> None:
    failed = 0
    for r in results:
        if r.ok:
            console.print(f"{r.target}: {r.message} → {r.state}")
        else:
            failed += 1
            err.print(f"[red]{r.target}: {r.message}[/]")
    if failed:
        raise SystemExit(1)


def _control(
    job_ids: tuple[str, ...],
    action: str,
    *,
    reason: str | None = None,
    priority: int | None = None,
    stage: str | None = None,
    task_id: int | None = None,
) -> None:
    with client() as farm:
        job_ids = tuple(farm.resolve_job(j) for j in job_ids)
        if task_id is not None:
            _report([farm.control_task(task_id, action, reason=reason)])
        elif len(job_ids) == 1 or stage:
            _report([farm.control(j, action, reason=reason, priority=priority, stage=stage) for j in job_ids])
        else:
            _report(farm.bulk(list(job_ids), action, reason=reason, priority=priority).results)


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--reason", "-r", required=True, help="Why (kept in the audit log).")
@_stage
@_task
@farm_errors
def cancel(job_ids: tuple[str, ...], reason: str, stage: str | None, task_id: int | None) -> None:
    """Cancel jobs (queued tasks at once; running ones after their current frame)."""
    _control(job_ids, "cancel", reason=reason, stage=stage, task_id=task_id)


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--reason", "-r", default=None)
@_stage
@_task
@farm_errors
def pause(job_ids: tuple[str, ...], reason: str | None, stage: str | None, task_id: int | None) -> None:
    """Pause jobs: nothing new starts; running tasks finish their chunk."""
    _control(job_ids, "pause", reason=reason, stage=stage, task_id=task_id)


@click.command()
@click.argument("job_ids", nargs=-1)
@_stage
@_task
@farm_errors
def resume(job_ids: tuple[str, ...], stage: str | None, task_id: int | None) -> None:
    """Resume paused jobs."""
    _control(job_ids, "resume", stage=stage, task_id=task_id)


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--reason", "-r", default=None)
@_stage
@_task
@farm_errors
def retry(job_ids: tuple[str, ...], reason: str | None, stage: str | None, task_id: int | None) -> None:
    """Run dead tasks again (and the tasks they took down); attempts start from zero."""
    _control(job_ids, "retry", reason=reason, stage=stage, task_id=task_id)


@click.command()
@click.argument("job_ids", nargs=-1)
@click.option("--set", "value", type=click.IntRange(0, 100), required=True, help="New priority (above 90: admins).")
@click.option("--reason", "-r", default=None)
@farm_errors
def priority(job_ids: tuple[str, ...], value: int, reason: str | None) -> None:
    """Change jobs' priority; the dispatcher uses it for the next free worker."""
    _control(job_ids, "priority", reason=reason, priority=value)


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="The tasks as JSON (for scripts).")
@farm_errors
def tasks(job_id: str, as_json: bool) -> None:
    """A job's tasks: chunk, state, attempts, worker, timings."""
    with client() as farm:
        rows = farm.tasks(farm.resolve_job(job_id))
    if as_json:
        console.print_json(json.dumps([t.model_dump(mode="json") for t in rows]))
        return
    table = Table("task", "stage", "frames", "state", "attempts", "worker", "seconds", "peak GPU", "error")
    for t in rows:
        table.add_row(
            str(t.id),
            f"{t.stage}#{t.index}" + (" finalise" if t.kind == "finalise" else ""),
            f"{t.first_frame}-{t.last_frame}",
            t.state.value + (" (lighter)" if t.lighter else ""),
            f"{t.attempts}/{t.max_attempts}",
            t.worker or "",
            f"{t.seconds:.1f}" if t.seconds is not None else "",
            f"{t.peak_gpu_mb} MB" if t.peak_gpu_mb is not None else "",
            (t.error or "")[:60],
        )
    console.print(table)


@click.command()
@click.argument("task_id", type=int)
@click.option("--tail", "-n", type=click.IntRange(1, 5000), default=100, show_default=True)
@click.option("--follow", "-F", is_flag=True, help="Keep printing new lines until the task ends.")
@farm_errors
def log(task_id: int, tail: int, follow: bool) -> None:
    """A task's log (every attempt, with worker and attempt number)."""
    with client() as farm:
        page, closed = farm.task_log(task_id, tail), False
        while True:  # following: each poll fetches only the lines logged since the last
            for line in page.lines:
                console.print(f"{line.at:%H:%M:%S} #{line.attempt} {line.level:<7} {line.message}", highlight=False)
            shown = page.start + len(page.lines)
            if not follow or (closed and shown >= page.total):
                return
            if shown >= page.total:
                time.sleep(1.0)
                # read the state before the lines: a task that closed has logged its last line
                closed = not farm.task(task_id).state.is_open
            page = farm.task_log(task_id, 5000, after=shown)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Workers, queues and unplaceable jobs as JSON.")
@farm_errors
def workers(as_json: bool) -> None:
    """Workers and queues: online, GPU, memory, current task and progress."""
    with client() as farm:
        overview = farm.farm()
    if as_json:
        console.print_json(overview.model_dump_json())
        return
    table = Table("worker", "state", "queues", "GPU", "memory", "task", "progress", "heartbeat")
    for w in overview.workers:
        state = w.state.value if w.online else "[red]offline[/]"
        if w.online and w.state == "unhealthy":
            state = f"[red]unhealthy[/]: {w.problem}"
        mem = (
            f"{(w.gpu_memory_used_mb or 0) / 1024:.1f}/{w.gpu_memory_total_mb / 1024:.0f} GB"
            if w.gpu_memory_total_mb
            else ""
        )
        table.add_row(
            w.name,
            state,
            ",".join(w.queues),
            w.gpu_name or w.device,
            mem,
            f"{w.current_task} ({w.current_job})" if w.current_task is not None else "idle",
            f"{w.frames_done}/{w.frames_total}" if w.current_task is not None else "",
            f"{w.heartbeat_at:%H:%M:%S}" if w.heartbeat_at else "",
        )
    console.print(table)
    for q in overview.queues:
        messages = "broker down" if q.messages is None else f"{q.messages} message(s)"
        console.print(f"queue {q.name}: {messages}, {q.tasks_queued} task(s) sent")
    oldest = f"; oldest job waiting {overview.oldest_wait_s:.0f}s" if overview.oldest_wait_s is not None else ""
    console.print(f"{overview.tasks_waiting} task(s) not started{oldest}")
    for stuck in overview.unplaceable:
        console.print(f"[yellow]job {stuck.job_id} can't be placed:[/] {stuck.why}")


@click.command()
@click.argument("worker")
@farm_errors
def drain(worker: str) -> None:
    """Admins: a worker hands back its task between frames (requeued, not counted) and takes no more."""
    with client() as farm:
        info = farm.drain(worker)
    console.print(f"{info.name}: {info.state}")


@click.command()
@click.argument("worker")
@farm_errors
def undrain(worker: str) -> None:
    """Admins: a drained worker takes work again."""
    with client() as farm:
        info = farm.undrain(worker)
    console.print(f"{info.name}: {info.state}")


@click.command()
def dispatcher() -> None:
    """Run the dispatcher/reconciler loop on its own (when the API runs with MATTEFARM_DISPATCHER=false)."""
    from services.composition import build_dispatcher_loops  # the farm's wiring loads only for this command

    settings = get_settings()
    loops, stores, broker = build_dispatcher_loops(settings)
    console.print(f"dispatching every {settings.dispatch_every_s}s; Ctrl-C stops")
    try:
        loops.run_forever(threading.Event())
    except KeyboardInterrupt:
        pass
    finally:
        broker.close()
        stores.close()
