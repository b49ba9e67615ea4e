"""The ``churnlens`` command line's shared pieces: the error-reporting group, the engine
choice, and the options several commands declare (with their help texts).

Kept apart from :mod:`churnlens.cli` so that the commands read as a list of commands.
Nothing here imports the library: start-up stays light.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from churnlens import rendering
from churnlens.errors import ChurnlensError, DriftError

if TYPE_CHECKING:
    from churnlens.config import Settings


def quiet_flags(params: list[Any]) -> list[Any]:
    """On/off flags (``--track/--no-track``, ``--help``) take no value: no ``<bool>``
    placeholder in the help."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class ReportingGroup(TyperGroup):
    """Errors of any command below (subgroups too): one ``error:`` message, exit code 1
    (3 for ``--fail-on-drift``); help without placeholders for flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        return quiet_flags(super().get_params(ctx))

    def get_command(self, ctx: Any, name: str) -> Any:
        command = super().get_command(ctx, name)
        if command is not None:
            quiet_flags(command.get_params(ctx))
        return command

    def invoke(self, ctx: typer.Context) -> Any:
        try:
            return super().invoke(ctx)
        except DriftError as exc:  # --fail-on-drift: its own exit code, for the scheduler
            rendering.error(str(exc))
            raise typer.Exit(DRIFT_EXIT) from None
        except ChurnlensError as exc:
            rendering.error(str(exc))
        except OSError as exc:  # the operating system's word: a full disk, a missing folder
            rendering.error(rendering.os_error_text(exc))
        raise typer.Exit(1)


class RankBy(StrEnum):
    """How ``score`` orders the budget and priorities (see :mod:`churnlens.ranking`)."""

    auto = "auto"
    incremental_value = "incremental_value"
    value_at_risk = "value_at_risk"


class Engine(StrEnum):
    """Where ``score`` runs: a str Enum, so a bad --engine is a usage error at parse time."""

    duckdb = "duckdb"
    spark = "spark"


DRIFT_EXIT = 3
CONTEXT = {"help_option_names": ["-h", "--help"]}
GROUP: dict[str, Any] = dict(cls=ReportingGroup, context_settings=CONTEXT, no_args_is_help=True)


def opt(text: str, *names: str, **kwargs: Any) -> Any:
    """``typer.Option`` with its help first (the name defaults to ``--param-name``)."""
    return typer.Option(*names, help=text, **kwargs)


EVENTS = "Event log: .csv, .csv.gz, .parquet or a folder of .parquet files."
CONFIG = "YAML configuration (defaults: configs/default.yaml)."
MEMORY = "DuckDB memory cap, e.g. 4GB; beyond it DuckDB spills to disk."
PARTITIONS = (
    "Customer-hash partitions (default: one per 20M events); with --engine spark, Spark "
    "buckets: one task each (default: one per 20M events, at least one per core). At most "
    "10,000: each partition is one pass over the staged log."
)
FEATURE_PARTITIONS = (
    "Customer-hash partitions (default: one per 40M events). At most 10,000: each "
    "partition is one pass over the staged log."
)
POPULATION = (
    "Score RFM and cycles against the population statistics in this manifest (a features or "
    "scores manifest of the whole log), so a slice of customers gets exactly the features "
    "and churn probabilities it gets within the whole log (with a scores manifest, its "
    "stage thresholds and value tiers too); default: the log's own."
)
FEATURE_POPULATION = (
    "Compute RFM scores and cycles against the population statistics in this manifest (a "
    "features or scores manifest of the whole log), so a slice of customers gets exactly "
    "the features it gets within the whole log; default: the log's own."
)
AS_OF = "Features see every event up to and including this day (YYYY-MM-DD)."
EventsArg = Annotated[Path, typer.Argument(help=EVENTS)]
ConfigOpt = Annotated[Path | None, opt(CONFIG, "--config", "-c")]
MemoryOpt = Annotated[str | None, opt(MEMORY)]
TempDirOpt = Annotated[Path | None, opt("Folder DuckDB spills to (default: its own).")]
PartitionsOpt = Annotated[int | None, opt(PARTITIONS, min=1, max=10_000)]
FeaturePartitionsOpt = Annotated[
    int | None, opt(FEATURE_PARTITIONS, "--partitions", min=1, max=10_000)
]
DAY = "YYYY-MM-DD"
AsOfOpt = Annotated[str, opt(AS_OF, metavar=DAY)]
PopulationOpt = Annotated[Path | None, opt(POPULATION)]
FeaturePopulationOpt = Annotated[Path | None, opt(FEATURE_POPULATION, "--population")]
HorizonOpt = Annotated[int | None, opt("Churn = no purchase in this many days.", min=1, max=36_500)]
TrackOpt = Annotated[bool, opt("Record the run in MLflow and register the model.")]
ModelsDirOpt = Annotated[Path, opt("Folder for the model bundle.")]
MODEL = "Model bundle folder or models:/NAME@ALIAS (default: the registry champion)."
SEGMENTS = "Segments bundle or models:/ URI; 'auto' (beside the model) or 'none'."
VALUE = "Value bundle or models:/ URI; 'auto' (beside the model) or 'none'."
POLICY = "Action policy YAML (default: the shipped configs/actions.yaml)."
UPLIFT = "Uplift bundle or models:/ URI; 'auto' (beside the model) or 'none'."
RANK_BY = "Order of the budget and priorities; auto: incremental value with an uplift model."
MAX_CONTACTS = "Contact at most N customers, first in the --rank-by order."
CONTROL_SHARE = "Share of each contact action's customers kept as a control group."
ENGINE = "'duckdb' (this machine) or 'spark' (needs churnlens\\[spark])."
PREVIOUS = (
    "The last run's scores file, for the changes since (previous_* columns, the policy's "
    "risk_change_min); 'auto': the scores file this run replaces at --out; 'none': no history."
)
FAIL_ON_DRIFT = (
    "Exit with code 3 and write nothing when drift against the training population reaches "
    "the alert level (drift.psi_alert, drift.ks_alert)."
)
PREDICTIONS = (
    "Write customer_id, churn_probability, churned, baselines, expected_value, "
    "value_if_retained and realized_spend here."
)
VALUE_HORIZON = "Value = spend over this many days (default: value.horizon_days, 365)."
SAMPLE_LOG = Path("data/sample/events.parquet")


TRUST_PICKLE = "Required: you trust this bundle's origin (unpickling runs its code)."
SIGN = "With CHURNLENS_SIGNING_KEY set: sign the result though the old bundle is not."


def given(ref: str) -> str | None:
    """A model or file reference from the command line: 'none' is None."""
    return None if ref == "none" else ref


def parse_k(value: str) -> int | None:
    """``--k``: 'auto' (None) or a whole number of segments >= 2."""
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 2:
        raise typer.BadParameter("give 'auto' or a whole number of segments >= 2")
    return int(value)


def _stop(number: int, frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by signal {number}")


def prepare_process() -> None:
    """What every command does first. SIGTERM and SIGHUP stop a command as Ctrl-C does:
    temporary work is removed and a tracked run is marked FAILED on the way out (SIGKILL
    cannot be caught: the next job on the same folder sweeps what a dead process left, see
    work_folders.sweep_dead_work). MLflow narrates every schema migration and registration; the
    CLI reports outcomes."""
    import logging
    import os
    import signal

    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _stop)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    logging.getLogger("mlflow").setLevel(logging.ERROR)


def settings_from(
    config: Path | None,
    memory: str | None = None,
    temp: Path | None = None,
    horizon: int | None = None,
    control_share: float | None = None,
) -> Settings:
    """The configuration file (or the defaults) with the command line's overrides."""
    from churnlens.config import load_settings

    engine = {"memory_limit": memory, "temp_dir": str(temp) if temp else None}
    return load_settings(config).with_overrides(
        engine=engine,
        training={"horizon_days": horizon},
        experiment={"control_share": control_share},
    )
