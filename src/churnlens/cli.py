"""The ``churnlens`` command line: parse options, call one library function, render.

Errors are reported once, by :class:`~churnlens.cli_options.ReportingGroup`; what commands
print lives in :mod:`churnlens.rendering`, the shared options in
:mod:`churnlens.cli_options`. Start-up stays light: commands import the library in their
body.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from churnlens import __version__, cli_campaigns, rendering, spark_cli
from churnlens.cli_options import (
    CONTROL_SHARE,
    DAY,
    ENGINE,
    FAIL_ON_DRIFT,
    GROUP,
    MAX_CONTACTS,
    MODEL,
    POLICY,
    PREDICTIONS,
    PREVIOUS,
    RANK_BY,
    SAMPLE_LOG,
    SEGMENTS,
    SIGN,
    TRUST_PICKLE,
    UPLIFT,
    VALUE,
    VALUE_HORIZON,
    AsOfOpt,
    ConfigOpt,
    Engine,
    EventsArg,
    FeaturePartitionsOpt,
    FeaturePopulationOpt,
    HorizonOpt,
    MemoryOpt,
    ModelsDirOpt,
    PartitionsOpt,
    PopulationOpt,
    RankBy,
    TempDirOpt,
    TrackOpt,
    given,
    opt,
    parse_k,
    prepare_process,
)
from churnlens.cli_options import settings_from as _settings

# the help of the whole program is the docstring of main() below
app = typer.Typer(name="churnlens", add_completion=False, pretty_exceptions_enable=False, **GROUP)
datasets_app = typer.Typer(help="Convert public data sets to the event-log contract.", **GROUP)
app.add_typer(datasets_app, name="datasets")
models_app = typer.Typer(help="Registered models in the MLflow store; model bundles.", **GROUP)
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        rendering.console.print(f"churnlens {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, opt("Show the version.", "--version", callback=_version, is_eager=True)
    ] = False,
) -> None:
    """Churn risk, customer segments and a next action for every customer."""
    prepare_process()


@app.command()
def sample(
    out: Annotated[Path, opt("Where to write the log.", "--out", "-o")] = SAMPLE_LOG,
    customers: Annotated[int, opt("Number of customers.", min=1)] = 5000,
    days: Annotated[int, opt("Length of the log in days.", min=30)] = 730,
    seed: Annotated[int, opt("Random seed; same seed, same log.")] = 7,
    start: Annotated[str, opt("First day of the log (YYYY-MM-DD).")] = "2024-01-01",
) -> None:
    """Write a realistic synthetic multichannel event log."""
    from churnlens.events import parse_as_of
    from churnlens.sample import write_sample

    began, day = time.perf_counter(), parse_as_of(start, "--start")
    with rendering.status(f"Generating {customers:,} customers over {days} days..."):
        events = write_sample(out, customers, days, seed, day)
    rendering.show_sample(events, out, time.perf_counter() - began)


@app.command()
def validate(events: EventsArg, config: ConfigOpt = None) -> None:
    """Check an event log against the contract and summarise it."""
    from churnlens.events import load_events

    rendering.show_validation(load_events(events, _settings(config)).summary())


@app.command()
def features(
    events: EventsArg,
    as_of: AsOfOpt,
    out: Annotated[Path, opt("Feature file (.parquet or .csv).", "--out", "-o")],
    config: ConfigOpt = None,
    memory_limit: MemoryOpt = None,
    temp_dir: TempDirOpt = None,
    partitions: FeaturePartitionsOpt = None,
    population: FeaturePopulationOpt = None,
) -> None:
    """Build point-in-time features, one row per customer."""
    from churnlens.events import parse_as_of
    from churnlens.features.batched import write_features

    settings, day = _settings(config, memory_limit, temp_dir), parse_as_of(as_of)
    with rendering.partition_progress("Building features") as progress:
        result = write_features(
            events, day, out, settings, partitions=partitions, population=population,
            inputs=(config,), progress=progress,
        )  # fmt: skip
    rendering.show_features(result, out, day)


@app.command()
def train(
    events: EventsArg,
    as_of: Annotated[str, opt("Data is known up to this day (YYYY-MM-DD).", metavar=DAY)],
    horizon_days: HorizonOpt = None,
    config: ConfigOpt = None,
    memory_limit: MemoryOpt = None,
    temp_dir: TempDirOpt = None,
    models_dir: ModelsDirOpt = Path("models"),
    track: TrackOpt = True,
) -> None:
    """Train the calibrated churn model and its baselines; write a bundle, track the run."""
    from churnlens.events import parse_as_of
    from churnlens.training import train as fit

    settings = _settings(config, memory_limit, temp_dir, horizon_days)
    with rendering.status("Training on snapshots...") as status:
        day = parse_as_of(as_of)
        result = fit(
            events, day, settings, models_dir, track=track, config_path=config, step=status.update
        )
    rendering.show_training(result, settings)


@app.command()
def backtest(
    events: EventsArg,
    as_of: Annotated[str, opt("Train as of this day (YYYY-MM-DD), then check.", metavar=DAY)],
    horizon_days: HorizonOpt = None,
    config: ConfigOpt = None,
    memory_limit: MemoryOpt = None,
    temp_dir: TempDirOpt = None,
    predictions: Annotated[Path | None, opt(PREDICTIONS)] = None,
    value_horizon_days: Annotated[int | None, opt(VALUE_HORIZON, min=1, max=36_500)] = None,
    track: TrackOpt = True,
) -> None:
    """Train as of a day and score it against what really happened after it."""
    from churnlens.events import parse_as_of
    from churnlens.training import backtest as run

    settings = _settings(config, memory_limit, temp_dir, horizon_days)
    with rendering.status("Training and backtesting..."):
        day = parse_as_of(as_of)
        result = run(
            events, day, settings, track=track, config_path=config,
            predictions_path=predictions, value_horizon_days=value_horizon_days,
        )  # fmt: skip
    rendering.show_backtest(result, settings.training.horizon_days, settings)
    if predictions is not None:
        rendering.show_path("Predictions", predictions)


@app.command()
def segment(
    events: EventsArg,
    as_of: AsOfOpt,
    k: Annotated[str, opt("Number of segments, or 'auto' (best silhouette).")] = "auto",
    config: ConfigOpt = None,
    memory_limit: MemoryOpt = None,
    temp_dir: TempDirOpt = None,
    models_dir: ModelsDirOpt = Path("models"),
    track: TrackOpt = True,
) -> None:
    """Fit K-means customer segments, name them and profile them."""
    from churnlens.events import parse_as_of
    from churnlens.segmenting import segment as fit

    n = parse_k(k)
    settings = _settings(config, memory_limit, temp_dir)
    with rendering.status("Fitting segments..."):
        day = parse_as_of(as_of)
        result = fit(events, day, settings, models_dir, k=n, track=track, config_path=config)
    rendering.show_segments(result, settings)


@app.command()
def score(
    events: EventsArg,
    as_of: AsOfOpt,
    out: Annotated[Path, opt("Scores: .parquet or .csv (Spark: a .parquet dir).", "--out", "-o")],
    model: Annotated[str | None, opt(MODEL)] = None,
    segments: Annotated[str, opt(SEGMENTS)] = "auto",
    value: Annotated[str, opt(VALUE)] = "auto",
    uplift_model: Annotated[str, opt(UPLIFT)] = "auto",
    rank_by: Annotated[RankBy, opt(RANK_BY)] = RankBy.auto,
    policy: Annotated[Path | None, opt(POLICY)] = None,
    max_contacts: Annotated[int | None, opt(MAX_CONTACTS, min=0)] = None,
    control_share: Annotated[float | None, opt(CONTROL_SHARE, min=0, max=0.99)] = None,
    report: Annotated[Path | None, opt("Also write the analysts' HTML report here.")] = None,
    partitions: PartitionsOpt = None,
    population: PopulationOpt = None,
    config: ConfigOpt = None,
    memory_limit: MemoryOpt = None,
    temp_dir: TempDirOpt = None,
    track: Annotated[bool, opt("Record the scoring run in MLflow.")] = True,
    engine: Annotated[Engine, opt(ENGINE)] = Engine.duckdb,
    master: spark_cli.MasterOpt = None,
    spark_archive: spark_cli.ArchiveOpt = None,
    previous: Annotated[str, opt(PREVIOUS)] = "auto",
    fail_on_drift: Annotated[bool, opt(FAIL_ON_DRIFT)] = False,
) -> None:
    """Score every customer: churn risk, lifecycle stage, segment and next action."""
    from churnlens.jobs import ScoringRequest, score_command

    began = time.perf_counter()
    spark_cli.check_spark_options(
        engine is Engine.spark, report, population, spark_archive, given(previous), fail_on_drift
    )
    request = ScoringRequest(
        events, as_of, out, model, given(segments), given(value), given(uplift_model),
        rank_by.value, policy, config, population, report, max_contacts, partitions, track,
        engine.value, master, spark_archive, given(previous), fail_on_drift,
    )  # fmt: skip
    settings = _settings(config, memory_limit, temp_dir, control_share=control_share)
    if engine is Engine.spark:
        with rendering.status(f"Scoring on Spark ({master or 'spark-submit/local[2]'})..."):
            manifest = score_command(request, settings)
        rendering.show_spark_scores(manifest, out, manifest["spark_master"])  # type: ignore
        return
    rendering.step("score: checking the inputs, loading the models")
    with rendering.partition_progress("Scoring partitions") as progress:
        result = score_command(request, settings, progress)
    rendering.show_scores(result, report, time.perf_counter() - began)  # type: ignore[arg-type]


@app.command()
def report(
    scores: Annotated[Path, typer.Argument(help="Scores file written by `churnlens score`.")],
    events: Annotated[Path, opt("The event log that was scored.")],
    out: Annotated[Path, opt("Report file (.html).", "--out", "-o")] = Path("report.html"),
    config: ConfigOpt = None,
) -> None:
    """Write the analysts' HTML report of a scores file."""
    from churnlens.jobs import report_from_file

    with rendering.status("Writing the report..."):
        path = report_from_file(scores, events, out, _settings(config))
    rendering.show_path("Report", path)


@app.command()
def demo(
    customers: Annotated[int, opt("Customers in the sample log.", min=100)] = 20_000,
    days: Annotated[int, opt("Length of the sample log in days.", min=365)] = 730,
    workdir: Annotated[Path, opt("Folder for the log, models and outputs.")] = Path("demo"),
    seed: Annotated[int, opt("Random seed of the sample log.")] = 7,
    config: ConfigOpt = None,
) -> None:
    """The whole job on sample data: generate, train, segment, score, report, then three
    campaign cycles (simulate, measure outcomes, learn uplift, score again)."""
    from churnlens.demo import run_demo

    settings = _settings(config)
    with rendering.status("Starting...") as status:
        result = run_demo(workdir, customers, days, seed, settings, step=status.update)
    rendering.show_demo(result, settings)


@models_app.command("list")
def models_list(config: ConfigOpt = None) -> None:
    """List the registered models, their versions and aliases."""
    from churnlens.tracking import list_models, tracking_uri

    settings = _settings(config)
    rendering.show_models(list_models(settings), tracking_uri(settings))


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Registered model, e.g. churnlens-churn.")],
    version: Annotated[str, typer.Argument(help="Version to make the champion.")],
    config: ConfigOpt = None,
) -> None:
    """Make a version the champion, whatever its score."""
    from churnlens.tracking import promote

    promote(_settings(config), name, version)
    rendering.console.print(f"{name} version {version} is now the champion")


@models_app.command("convert")
def models_convert(
    bundle: Annotated[Path, typer.Argument(help="A bundle folder of the old pickle format.")],
    trust_pickle: Annotated[bool, opt(TRUST_PICKLE)] = False,
    sign: Annotated[bool, opt(SIGN)] = False,
) -> None:
    """Rewrite a bundle of the old pickle format in today's pickle-free format, in place."""
    from churnlens.bundle import convert_pickled
    from churnlens.errors import ModelError

    if not trust_pickle:
        raise ModelError(
            f"{bundle}: converting reads its pickle, which runs any code the file holds; "
            "pass --trust-pickle only for a bundle whose origin you trust (or retrain it)"
        )
    rendering.console.print(f"{convert_pickled(bundle, sign)}: converted; it loads without pickle")


@datasets_app.command("cdnow")
def datasets_cdnow(
    path: Annotated[Path, typer.Argument(help="CDNOW_master.txt (run `make data` to fetch it).")],
    out: Annotated[Path, opt("Event log to write.", "--out", "-o")],
) -> None:
    """Convert the CDNOW transaction log to the event-log contract."""
    from churnlens.datasets import convert_cdnow

    rendering.show_cdnow(convert_cdnow(path, out), out)


if __name__ == "__main__":  # pragma: no cover
    app()


app.command("outcomes")(cli_campaigns.outcomes)
app.command("train-uplift")(cli_campaigns.train_uplift)
