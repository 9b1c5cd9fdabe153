"""The `benchmark` command: speed, memory and science figures as ratios measured in one run,
printed as a table, written as JSON and logged to an MLflow run (see zoobot.bench.benchmark)."""

from __future__ import annotations

import time

import click

from zoobot.cli.options import experiment_option, options_from, user_errors
from zoobot.core import tags as tag_names


def build() -> click.Command:
    from zoobot.bench.benchmark import BenchmarkConfig

    @click.command(name="benchmark", help="Measure speed, memory and science figures against references run "
                                          "side by side; print a table, write JSON, log everything to MLflow.")
    @options_from(BenchmarkConfig)
    @experiment_option
    @user_errors
    def benchmark(**options):
        from zoobot import tracking
        from zoobot.bench.benchmark import (
            format_table,
            report,
            run_benchmarks,
            write_report,
        )

        config = BenchmarkConfig(**options)
        with tracking.step_run("benchmark", config, tags={tag_names.BENCHMARK_MODE: config.mode}):
            start = time.perf_counter()
            figures = run_benchmarks(config, say=lambda text: click.echo(text, err=True))
            data = report(figures, config, time.perf_counter() - start)
            table = format_table(figures)
            path = write_report(data, config.output)
            tracking.log_benchmark(figures, config, data, table)
        click.echo(table)
        click.echo(f"\n{config.mode} mode took {data['seconds'] / 60:.1f} min; report: {path}")

    return benchmark
