"""``mattefarm``: the command line for compositors, pipeline TDs and farm monitors."""

from __future__ import annotations

import click

from farm_config.version import VERSION
from services.cli import control, edge_bench, evaluation, farm, jobs, models, refine_bench, synth, tokens


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="mattefarm")
def cli() -> None:
    """Matte Farm: per-object roto mattes from a plate and a text prompt."""


for command in (
    jobs.submit,
    jobs.status,
    jobs.jobs,
    jobs.review,
    control.cancel,
    control.pause,
    control.resume,
    control.retry,
    control.priority,
    control.tasks,
    control.log,
    control.workers,
    control.drain,
    control.undrain,
    control.dispatcher,
    farm.up,
    farm.api,
    farm.worker,
    farm.demo,
    farm.db,
    tokens.tokens,
    models.models,
    synth.synth,
    evaluation.evaluate_cmd,
    evaluation.compare,
    evaluation.bench,
    evaluation.bench_io,
    evaluation.bench_api,
    refine_bench.bench_refine,
    refine_bench.refine,
    refine_bench.bench_deliver,
    edge_bench.bench_edges,
):
    cli.add_command(command)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
