"""``mattefarm synth``: write synthetic shots with ground truth.

Imports inside commands are for start-up time only: `mattefarm --help` and the job commands
must not load OpenEXR, OpenCV, SQLAlchemy or torch. lint-imports checks them like any other
import, so none of them can hide a circle.
"""

from __future__ import annotations

import re
from pathlib import Path

import click
from rich.progress import Progress

from services.cli.common import console, parse_size


def _size(_: click.Context, __: click.Parameter, value: str) -> tuple[int, int]:
    return parse_size(value)


@click.command()
@click.argument("root", type=click.Path(path_type=Path))
@click.option("--name", default="synth010", show_default=True, help="Shot name (folder and file prefix).")
@click.option("--frames", type=click.IntRange(1, 10_000), default=60, show_default=True)
@click.option("--size", callback=_size, default="640x360", show_default=True, help="WIDTHxHEIGHT.")
@click.option("--objects", type=click.IntRange(1, 20), default=3, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option(
    "--scenario",
    type=click.Choice(["default", "decoy", "thin", "crowd"]),
    default="default",
    show_default=True,
    help="decoy: an object leaves and another of its label enters; thin: a thin fast stick; crowd: one label.",
)
@click.option(
    "--soft-alpha",
    is_flag=True,
    help="Draw anti-aliased, motion-blurred objects with strands, spokes and glass, and write each "
    "object's coverage (alpha.<id>) beside the id map.",
)
def synth(
    root: Path, name: str, frames: int, size: tuple[int, int], objects: int, seed: int, scenario: str, soft_alpha: bool
) -> None:
    """Write a synthetic shot (plate + ground truth) under ROOT/NAME."""
    from workers.synthetic.shot import write_shot

    if scenario == "decoy" and objects < 3:
        raise click.BadParameter("the decoy scenario needs at least 3 objects", param_hint="--objects")

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise click.BadParameter("use letters, digits, '_' and '-' only", param_hint="--name")
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"writing {name}", total=frames)
        pattern = write_shot(
            root,
            name,
            frames=frames,
            width=size[0],
            height=size[1],
            objects=objects,
            seed=seed,
            scenario=scenario,
            soft=soft_alpha,
            progress=lambda n: progress.update(task, completed=n),
        )
    console.print(f"plate {pattern}\ntruth {pattern.parent.parent / 'truth'}")
