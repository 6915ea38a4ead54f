"""``mattefarm models``: list and download checkpoints.

Imports inside commands are for start-up time only: `mattefarm --help` and the job commands
must not load OpenEXR, OpenCV, SQLAlchemy or torch. lint-imports checks them like any other
import, so none of them can hide a circle.
"""

from __future__ import annotations

import time
from pathlib import Path

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TransferSpeedColumn
from rich.table import Table

from farm_config import get_settings
from farm_config.model_registry import MODELS, SAM2_SIZES, default_download_set
from services.cli.common import console, err
from workers.models.checksums import ChecksumError, read_record


@click.group()
def models() -> None:
    """Model checkpoints: what is installed, and fetching them."""


def _models_dir(models_dir: Path | None) -> Path:
    return (models_dir or get_settings().models_dir).expanduser()


@models.command("list")
@click.option("--models-dir", type=click.Path(path_type=Path), default=None)
def list_models(models_dir: Path | None) -> None:
    """Show the registry and which files are present and verified."""
    root = _models_dir(models_dir)
    record = read_record(root)
    table = Table("model", "file", "present", "sha256")
    for spec in MODELS.values():
        for file in spec.files:
            present = (root / file.name).exists()
            table.add_row(spec.key, file.name, "yes" if present else "no", (record.get(file.name) or "")[:16])
    console.print(table)
    console.print(f"models directory: {root}")


@models.command("download")
@click.option(
    "--sam2-size",
    type=click.Choice(SAM2_SIZES),
    default=None,
    help="SAM 2.1 size to fetch (default: MATTEFARM_SAM2_SIZE).",
)
@click.option("--all", "everything", is_flag=True, help="Every model in the registry (all four SAM 2.1 sizes).")
@click.option("--models-dir", type=click.Path(path_type=Path), default=None)
@click.option("--mirror", default=None, help="Fetch from this mirror instead of huggingface.co.")
@click.option(
    "--retries",
    type=click.IntRange(0, 20),
    default=3,
    show_default=True,
    help="Resume an interrupted download this many times.",
)
def download(
    sam2_size: str | None, everything: bool, models_dir: Path | None, mirror: str | None, retries: int
) -> None:
    """Fetch checkpoints with resume and sha256 verification."""
    from workers.models.download import DownloadError, download_file

    root = _models_dir(models_dir)
    specs = list(MODELS.values()) if everything else default_download_set(sam2_size or get_settings().sam2_size)
    failed = 0
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(*columns, console=console) as progress:
        for spec in specs:
            for file in spec.files:
                bar = progress.add_task(file.name, total=None)

                def report(done: int, total: int | None, bar: TaskID = bar) -> None:
                    progress.update(bar, completed=done, total=total)

                for attempt in range(retries + 1):
                    try:
                        result = download_file(file, root, mirror=mirror, progress=report)
                        note = "already present" if result.skipped else f"verified ({result.verified_by})"
                        progress.update(bar, description=f"{file.name} [green]{note}[/]")
                        break
                    except DownloadError as exc:
                        if not exc.resumable or attempt == retries:
                            err.print(f"[red]error:[/] {exc}")
                            failed += 1
                            break
                        progress.update(bar, description=f"{file.name} [yellow]resuming…[/]")
                        time.sleep(min(2**attempt, 10))
                    except ChecksumError as exc:
                        err.print(f"[red]error:[/] {exc}")
                        failed += 1
                        break
    if failed:
        raise SystemExit(1)
    console.print(f"models ready in {root}")
