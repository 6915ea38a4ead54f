"""Running the farm: ``up`` (embedded), ``api``, ``worker``, ``demo`` and ``db``.

Imports inside commands are for start-up time only: `mattefarm --help` and the job commands
must not load OpenEXR, OpenCV, SQLAlchemy or torch. lint-imports checks them like any other
import, so none of them can hide a circle.
"""

from __future__ import annotations

import os
import signal
import socket
import tempfile
import time
from pathlib import Path

import click

from farm_config import Settings, get_settings
from farm_config.celery_config import prepare_local_broker
from farm_config.profiles import PROFILES, get_profile
from services.cli.common import console, err, farm_errors, follow_job
from services.client import FarmClient
from services.embedded import EmbeddedFarm, worker_command, worker_env
from workers.models.builder import missing_checkpoints


def _settings_env(backend: str | None, weights: str | None, port: int | None) -> dict[str, str]:
    env = {}
    if backend:
        env["MATTEFARM_MODEL_BACKEND"] = backend
    if weights:
        env["MATTEFARM_WEIGHTS"] = weights
    if port:
        env["MATTEFARM_API_PORT"] = str(port)
    return env


def _start_embedded(env: dict[str, str]):
    os.environ.update(env)
    get_settings.cache_clear()  # the CLI's settings follow what it just set for the farm
    missing = missing_checkpoints(get_settings())
    if missing:  # say so now, rather than start a worker that cannot work
        raise RuntimeError(
            "the models are not here:\n  "
            + "\n  ".join(missing)
            + "\nrun `mattefarm models download` (on a machine with network access), or start with "
            "--backend synthetic, or --weights random for a speed test"
        )
    farm = EmbeddedFarm(get_settings(), env)
    with console.status("starting the embedded farm (API + worker)…"):
        token = farm.start()
    return farm, token


_backend = click.option(
    "--backend",
    type=click.Choice(["synthetic", "sam2-gdino"]),
    default=None,
    help="Model backend (default: MATTEFARM_MODEL_BACKEND or sam2-gdino).",
)
_weights = click.option(
    "--weights",
    type=click.Choice(["official", "random"]),
    default=None,
    help="'random' builds the real models untrained (speed tests only).",
)


@click.command()
@_backend
@_weights
@click.option("--port", type=int, default=None, help="API port (default 8321).")
def up(backend: str | None, weights: str | None, port: int | None) -> None:
    """Start an embedded farm here: API + one worker, SQLite + a local queue. Ctrl-C stops it."""
    try:
        farm, _ = _start_embedded(_settings_env(backend, weights, port))
    except RuntimeError as exc:
        err.print(f"[red]error:[/] {exc}")
        raise SystemExit(1) from None
    console.print(f"farm up at [bold]{farm.url}[/]  (API docs: {farm.url}/docs)")
    console.print(f"token in {farm.settings.dev_token_path}; logs in {farm.log_dir}")
    default_port = port is None or port == Settings.model_fields["api_port"].default
    target = "" if default_port else f"MATTEFARM_API_URL={farm.url} "  # the CLI's default is the default port
    console.print(f"submit with: {target}mattefarm submit /path/plate.####.exr --prompt 'person, car' --follow")
    console.print("Ctrl-C stops the farm.")
    # Explicitly: a farm started from a script's background job inherits SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        while farm.running():
            time.sleep(1)
        err.print(f"[red]a farm process stopped on its own; see {farm.log_dir}[/]")
    except KeyboardInterrupt:
        pass
    finally:
        with console.status("stopping…"):
            farm.stop()


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


@click.command()
@click.option("--host", default=None)
@click.option("--port", type=int, default=None)
@click.option(
    "--workers", type=click.IntRange(1, 64), default=None, help="API processes (default MATTEFARM_API_WORKERS)."
)
def api(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the API (production: one of several behind a proxy)."""
    import uvicorn

    from services.cli.serve import APP, ApiProcesses, ApiWontStart, listening_socket

    settings = get_settings()
    host, port, count = host or settings.api_host, port or settings.api_port, workers or settings.api_workers
    try:
        if count == 1:
            listener = listening_socket(host, port, reuse_port=False)
            uvicorn.run(APP, factory=True, fd=listener.fileno(), access_log=settings.api_access_log)
        else:  # a socket per process: services/cli/serve.py says why
            ApiProcesses(host, port, count, settings.api_access_log, log=err.print).run()
    except OSError as exc:
        raise click.ClickException(
            f"can't listen on {host}:{port} ({exc.strerror}); is another API running there? "
            "Give --port or set MATTEFARM_API_PORT"
        ) from None
    except ApiWontStart as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@click.option("--queues", "-Q", default=None, help="Queues to consume (default: the profile's, else gpu,cpu).")
@click.option("--gpu", type=int, default=None, help="Pin this worker to GPU N (sets CUDA_VISIBLE_DEVICES).")
@click.option("--profile", type=click.Choice(sorted(PROFILES)), default=None, help="Worker profile.")
@click.option("--name", default=None, help="Worker node name (default: gpuN@host).")
@click.option("--loglevel", default="INFO", show_default=True)
def worker(queues: str | None, gpu: int | None, profile: str | None, name: str | None, loglevel: str) -> None:
    """Run one worker process (one per GPU). Models load in the child, after the fork."""
    if profile:
        chosen = get_profile(profile)
        os.environ["MATTEFARM_WORKER_PROFILE"] = profile
        os.environ.setdefault("MATTEFARM_SAM2_SIZE", chosen.sam2_size)
        os.environ.setdefault("MATTEFARM_OFFLOAD_STATE_TO_CPU", str(chosen.offload_state_to_cpu).lower())
    if queues:
        os.environ["MATTEFARM_WORKER_QUEUES"] = queues
    get_settings.cache_clear()
    settings = get_settings()
    prepare_local_broker(settings)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    node = (name or f"{'gpu' + str(gpu) if gpu is not None else 'worker'}@%h").replace("%h", socket.gethostname())
    os.environ.update(worker_env(node))
    command = worker_command(",".join(settings.consumed_queues), node, loglevel=loglevel)
    os.execvp(command[0], command)


@click.command()
@click.option(
    "--dir",
    "workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the demo shot and mattes go (default: a new temporary folder).",
)
@click.option("--frames", type=click.IntRange(1, 500), default=24, show_default=True)
@_backend
@_weights
@click.option("--port", type=int, default=None)
@farm_errors
def demo(workdir: Path | None, frames: int, backend: str | None, weights: str | None, port: int | None) -> None:
    """Run a whole job on the embedded farm: write a synthetic shot, start the farm, submit, follow."""
    from workers.synthetic.shot import write_shot

    workdir = (workdir or Path(tempfile.mkdtemp(prefix="mattefarm-demo-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    with console.status(f"writing a {frames}-frame synthetic shot…"):
        plate = write_shot(workdir / "shots", "demo010", frames=frames)
    console.print(f"plate  {plate}")
    env = _settings_env(backend or "synthetic", weights, port) | {
        "MATTEFARM_DATA_DIR": str(workdir / ".mattefarm"),
        "MATTEFARM_READ_ROOTS": str(workdir),
        "MATTEFARM_WRITE_ROOTS": str(workdir),
    }
    farm, token = _start_embedded(env)
    try:
        with FarmClient(farm.url, token) as client:
            started = time.monotonic()
            job = client.submit(
                {"plate": str(plate), "prompt": "ball, box, car", "output_root": str(workdir / "renders")}
            )
            console.print(f"job    {job.id} → {job.output_dir}")
            follow_job(client, job.id)
            console.print(
                f"done in {time.monotonic() - started:.1f}s; check a frame with: "
                f"exrheader {sorted(Path(job.output_dir).glob('*.exr'))[0]}"
            )
    finally:
        farm.stop()


@click.group()
def db() -> None:
    """Database maintenance."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply migrations to MATTEFARM_DATABASE_URL (the API and workers also do this on start)."""
    from services.composition import open_stores  # loads the farm's wiring only for this command

    open_stores(get_settings()).close()  # opening migrates to head
    console.print("database is at the latest migration")
