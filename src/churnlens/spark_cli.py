"""The ``churnlens score`` options and checks of ``--engine spark`` (kept apart from
:mod:`churnlens.cli`, which reads as a list of commands). Nothing here imports the
library: start-up stays light."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from churnlens.cli_options import opt

MASTER = (
    "Spark master with --engine spark: local[N], spark://HOST:7077, yarn or k8s://...; "
    "default: the one spark-submit (or spark-defaults.conf) gives, else local[2]."
)
ARCHIVE = (
    "With --engine spark on a cluster: an environment archive (conda-pack .tar.gz) with "
    "churnlens installed, shipped to the executors (spark.archives=ARCHIVE#environment) and "
    "run there as ./environment/bin/python; the driver keeps this Python."
)
MasterOpt = Annotated[str | None, opt(MASTER)]
ArchiveOpt = Annotated[Path | None, opt(ARCHIVE, "--spark-archive")]


def check_spark_options(
    spark: bool,
    report: Path | None,
    population: Path | None,
    archive: Path | None,
    previous: str | None = "auto",
    fail_on_drift: bool = False,
) -> None:
    """Usage errors of the Spark options, before any work. Spark checks no drift and adds
    no history yet: a --previous file or --fail-on-drift is refused rather than silently
    ignored (a guard that does nothing is worse than none)."""
    if spark and report is not None:
        why = "the report needs the local engine; run `churnlens report` on the scores"
        raise typer.BadParameter(why, param_hint="--report")
    if spark and population is not None:
        why = "Spark scores against the log's own population; use --engine duckdb"
        raise typer.BadParameter(why, param_hint="--population")
    if spark and fail_on_drift:
        why = "Spark does not check drift against training yet; use --engine duckdb"
        raise typer.BadParameter(why, param_hint="--fail-on-drift")
    if spark and previous not in ("auto", None):
        why = "Spark adds no changes since the last run yet; use --engine duckdb"
        raise typer.BadParameter(why, param_hint="--previous")
    if not spark and archive is not None:
        raise typer.BadParameter("only with --engine spark", param_hint="--spark-archive")
