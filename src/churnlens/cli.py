"""The ``churnlens`` command line: parse options, call one library function, render.

Library errors (:class:`~churnlens.errors.ChurnlensError`) are printed as readable
lines on standard error with exit code 1; usage errors exit 2.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from churnlens import __version__
from churnlens.config import Settings, load_settings
from churnlens.errors import ChurnlensError
from churnlens.events import load_events, parse_as_of
from churnlens.outputs import check_output_path, write_table

P = ParamSpec("P")
R = TypeVar("R")

CONTEXT = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    name="churnlens",
    help="Churn risk, customer segments and a next action for every customer.",
    context_settings=CONTEXT,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(
    help="Convert public data sets to the event-log contract.",
    context_settings=CONTEXT,
    no_args_is_help=True,
)
app.add_typer(datasets_app, name="datasets")
models_app = typer.Typer(
    help="Registered models in the MLflow store.", context_settings=CONTEXT, no_args_is_help=True
)
app.add_typer(models_app, name="models")

console = Console()
err_console = Console(stderr=True)

EventsArg = Annotated[
    Path, typer.Argument(help="Event log: .csv, .csv.gz, .parquet or a folder of .parquet files.")
]
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML configuration (defaults: configs/default.yaml)."),
]
MemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--memory-limit", help="DuckDB memory cap, e.g. 4GB; beyond it DuckDB spills to disk."
    ),
]
TempDirOpt = Annotated[
    Path | None, typer.Option("--temp-dir", help="Folder DuckDB spills to (default: its own).")
]
PartitionsOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Customer-hash partitions (default: one per 40M events for features, 20M for score).",
    ),
]
AsOfOpt = Annotated[
    str, typer.Option("--as-of", help="Features see every event up to and including this day.")
]


def reports_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn library errors into one clear message on stderr and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ChurnlensError as exc:
            err_console.print(
                f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None
        except OSError as exc:  # the operating system's word: a full disk, a missing folder
            where = f"{exc.filename}: " if exc.filename else ""
            text = f"{where}{exc.strerror or exc}; earlier outputs are unchanged"
            err_console.print(
                f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        console.print(f"churnlens {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Churn risk, customer segments and a next action for every customer."""
    # MLflow narrates every schema migration and registration; the CLI reports outcomes.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "ERROR")
    logging.getLogger("mlflow").setLevel(logging.ERROR)


def _settings(
    config: Path | None, memory_limit: str | None = None, temp_dir: Path | None = None
) -> Settings:
    settings = load_settings(config)
    engine = {"memory_limit": memory_limit, "temp_dir": str(temp_dir) if temp_dir else None}
    return settings.with_overrides(engine=engine)


@app.command()
@reports_errors
def sample(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the log.")] = Path(
        "data/sample/events.parquet"
    ),
    customers: Annotated[int, typer.Option(min=1, help="Number of customers.")] = 5000,
    days: Annotated[int, typer.Option(min=30, help="Length of the log in days.")] = 730,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same log.")] = 7,
    start: Annotated[str, typer.Option(help="First day of the log (YYYY-MM-DD).")] = "2024-01-01",
) -> None:
    """Write a realistic synthetic multichannel event log."""
    from churnlens.sample import generate_events

    check_output_path(out)
    began = time.perf_counter()
    with console.status(f"Generating {customers:,} customers over {days} days..."):
        events = generate_events(
            customers=customers, days=days, seed=seed, start=parse_as_of(start)
        )
        write_table(events, out)
    console.print(
        f"Wrote {len(events):,} events of {events['customer_id'].nunique():,} customers "
        f"({events['timestamp'].min():%Y-%m-%d} to {events['timestamp'].max():%Y-%m-%d}) "
        f"to [bold]{out}[/] in {time.perf_counter() - began:.1f} s"
    )


def _count_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(title.split()[-1])
    table.add_column("events", justify="right")
    for key, value in counts.items():
        table.add_row(key, f"{value:,}")
    return table


@app.command()
@reports_errors
def validate(events: EventsArg, config: ConfigOpt = None) -> None:
    """Check an event log against the contract and summarise it."""
    table = load_events(events, _settings(config))
    s = table.summary()
    console.print(f"[bold green]OK[/] {s.source}: the log meets the event-log contract")
    console.print(
        f"  {s.events:,} events of {s.customers:,} customers, "
        f"{s.first_timestamp:%Y-%m-%d %H:%M} to {s.last_timestamp:%Y-%m-%d %H:%M} UTC"
    )
    if s.duplicates_dropped:
        console.print(
            f"  [yellow]warning:[/] {s.duplicates_dropped:,} exact duplicate rows dropped "
            f"({s.rows_read:,} rows read)"
        )
    for title, counts in (
        ("Events per role", s.by_role),
        ("Events per event_type", s.by_event_type),
        ("Events per channel", s.by_channel),
    ):
        console.print(_count_table(title, counts))


@app.command()
@reports_errors
def features(
    events: EventsArg,
    as_of: AsOfOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Feature file (.parquet or .csv).")],
    config: ConfigOpt = None,
    memory_limit: MemoryOpt = None,
    temp_dir: TempDirOpt = None,
    partitions: PartitionsOpt = None,
) -> None:
    """Build point-in-time features, one row per customer."""
    from churnlens.features.batched import write_features

    settings = _settings(config, memory_limit, temp_dir)
    day: date = parse_as_of(as_of)
    check_output_path(out, inputs=[events, config])
    with _partition_progress("Building features") as advance:
        result = write_features(events, day, out, settings, partitions=partitions, progress=advance)
    console.print(
        f"Wrote {len(result.summary)} features for {result.customers:,} customers as of {day} "
        f"to [bold]{out}[/] in {result.seconds:.1f} s ({result.partitions} partition(s))"
    )
    if result.duplicates_dropped:
        dropped = result.duplicates_dropped
        console.print(f"  [yellow]warning:[/] {dropped:,} duplicate rows dropped")
    if result.events_after_as_of:
        later = result.events_after_as_of
        console.print(f"  {later:,} events after {day} ignored (features see up to the as-of day)")
    console.print(_feature_summary(result.summary))


def _feature_summary(summary: object) -> Table:
    import pandas as pd

    assert isinstance(summary, pd.DataFrame)
    picks = [
        "freq_contacts_90d",
        "chan_n_channels",
        "gap_median",
        "rfm_recency_days",
        "rfm_frequency",
        "rfm_monetary_total",
        "cycle_days",
        "cycle_overdue_ratio",
        "fatigue_touches_30d",
    ]
    table = Table(title="Feature summary", title_justify="left")
    for col in ("feature", "non-missing", "mean", "min", "max"):
        table.add_column(col, justify="left" if col == "feature" else "right")
    total = summary["count"].max() if len(summary) else 0
    for name in (p for p in picks if p in summary.index):
        row = summary.loc[name]
        share = row["count"] / total if total else float("nan")
        table.add_row(
            name, f"{share:.0%}", f"{row['mean']:,.1f}", f"{row['min']:,.1f}", f"{row['max']:,.1f}"
        )
    return table


@contextlib.contextmanager
def _partition_progress(label: str) -> Iterator[Callable[[int, int, int], None]]:
    """A rich progress bar over partitions, with customers per second."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    started = time.perf_counter()
    with Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=None, rate="")

        def advance(done: int, total: int, customers: int) -> None:
            rate = customers / max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} customers/s")

        yield advance


HorizonOpt = Annotated[
    int | None,
    typer.Option("--horizon-days", min=1, help="Churn = no purchase in this many days."),
]
TrackOpt = Annotated[bool, typer.Option(help="Record the run in MLflow and register the model.")]
ModelsDirOpt = Annotated[Path, typer.Option("--models-dir", help="Folder for the model bundle.")]


def _training_settings(
    config: Path | None,
    horizon_days: int | None,
    memory_limit: str | None = None,
    temp_dir: Path | None = None,
) -> Settings:
    settings = _settings(config, memory_limit, temp_dir)
    return settings.with_overrides(training={"horizon_days": horizon_days})


def _metrics_table(title: str, frame: object) -> Table:
    import pandas as pd

    assert isinstance(frame, pd.DataFrame)
    table = Table(title=title, title_justify="left")
    table.add_column("score")
    for col in frame.columns:
        table.add_column(col, justify="right")
    for name, row in frame.iterrows():
        table.add_row(str(name), *(f"{v:.4f}" for v in row))
    return table


@app.command()
@reports_errors
def train(
    events: EventsArg,
    as_of: Annotated[str, typer.Option("--as-of", help="Data is known up to this day.")],
    horizon_days: HorizonOpt = None,
    config: ConfigOpt = None,
    memory_limit: MemoryOpt = None,
    temp_dir: TempDirOpt = None,
    models_dir: ModelsDirOpt = Path("models"),
    track: TrackOpt = True,
) -> None:
    """Train the calibrated churn model and its baselines; write a bundle, track the run."""
    from churnlens.training import train as train_model

    settings = _training_settings(config, horizon_days, memory_limit, temp_dir)
    with console.status("Training on snapshots..."):
        result = train_model(
            events, parse_as_of(as_of), settings, models_dir, track=track, config_path=config
        )
    console.print(
        f"Trained on {len(result.snapshots)} snapshots "
        f"({result.snapshots[0]} to {result.snapshots[-1]}), {result.rows:,} rows; "
        f"calibration: {result.model.calibration_method_}"
    )
    console.print(_metrics_table("Validation (latest snapshot, out of time)", result.validation))
    console.print(f"Model bundle: [bold]{result.bundle}[/]")
    if result.run_id:
        from churnlens.tracking import tracking_uri

        console.print(
            f"MLflow run {result.run_id} at {tracking_uri(settings)}; registered "
            f"{settings.tracking.churn_model_name} version {result.model_version} "
            f"(champion: {result.champion})"
        )


@app.command()
@reports_errors
def backtest(
    events: EventsArg,
    as_of: Annotated[str, typer.Option("--as-of", help="Train as of this day, then check.")],
    horizon_days: HorizonOpt = None,
    config: ConfigOpt = None,
    memory_limit: MemoryOpt = None,
    temp_dir: TempDirOpt = None,
    predictions: Annotated[
        Path | None,
        typer.Option(help="Write customer_id, churn_probability, churned and baselines here."),
    ] = None,
    track: TrackOpt = True,
) -> None:
    """Train as of a day and score it against what really happened after it."""
    from churnlens.training import backtest as run_backtest

    settings = _training_settings(config, horizon_days, memory_limit, temp_dir)
    if predictions is not None:
        check_output_path(predictions, inputs=[events, config])
    with console.status("Training and backtesting..."):
        result = run_backtest(events, parse_as_of(as_of), settings, track=track, config_path=config)
    horizon = settings.training.horizon_days
    churn_rate = result.predictions["churned"].mean()
    console.print(
        f"Backtest as of {result.as_of}: {len(result.predictions):,} customers, "
        f"realised churn rate {churn_rate:.3f} over {horizon} days"
    )
    console.print(_metrics_table("Realised metrics", result.metrics))
    if predictions is not None:
        write_table(result.predictions, predictions)
        console.print(f"Predictions: [bold]{predictions}[/]")


def _parse_k(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 2:
        raise typer.BadParameter("give 'auto' or a whole number of segments >= 2")
    return int(value)


@app.command()
@reports_errors
def segment(
    events: EventsArg,
    as_of: AsOfOpt,
    k: Annotated[
        str, typer.Option("--k", help="Number of segments, or 'auto' (best silhouette).")
    ] = "auto",
    config: ConfigOpt = None,
    memory_limit: MemoryOpt = None,
    temp_dir: TempDirOpt = None,
    models_dir: ModelsDirOpt = Path("models"),
    track: TrackOpt = True,
) -> None:
    """Fit K-means customer segments, name them and profile them."""
    from churnlens.training import segment as fit_segments

    n = _parse_k(k)
    settings = _settings(config, memory_limit, temp_dir)
    with console.status("Fitting segments..."):
        result = fit_segments(
            events, parse_as_of(as_of), settings, models_dir, k=n, track=track, config_path=config
        )
    model = result.model
    scores = ", ".join(f"k={key}: {value:.3f}" for key, value in model.silhouette_.items())
    console.print(f"{model.k_} segments (silhouette {scores})")
    profile = result.profile
    table = Table(title=f"Segments as of {result.as_of}", title_justify="left")
    shown = [
        "name",
        "size",
        "share",
        "churn_rate",
        "rfm_recency_days",
        "rfm_frequency",
        "rfm_monetary_total",
    ]
    shown = [c for c in shown if c in profile.columns]
    table.add_column("id", justify="right")
    for col in shown:
        table.add_column(col, justify="left" if col == "name" else "right")
    for seg_id, row in profile.iterrows():
        cells = [
            str(row[c]) if c == "name" else f"{row[c]:,.0f}" if c == "size" else f"{row[c]:,.3g}"
            for c in shown
        ]
        table.add_row(str(seg_id), *cells)
    console.print(table)
    console.print(f"Segment bundle: [bold]{result.bundle}[/]")
    if result.run_id:
        console.print(
            f"MLflow run {result.run_id}; registered {settings.tracking.segment_model_name} "
            f"version {result.model_version} (champion: {result.champion})"
        )


def _scores_summary(manifest: dict[str, object]) -> Table:
    """Customers and their share per lifecycle stage and per action."""
    stages = manifest["stages"]
    actions = manifest["actions"]
    assert isinstance(stages, dict) and isinstance(actions, dict)
    total = max(1, sum(stages.values()))
    table = Table(title=f"Scored as of {manifest['as_of']}", title_justify="left")
    table.add_column("lifecycle stage")
    table.add_column("customers", justify="right")
    table.add_column("action")
    table.add_column("customers", justify="right")
    left = [(k, v) for k, v in stages.items()]
    right = sorted(actions.items(), key=lambda kv: -kv[1])
    for i in range(max(len(left), len(right))):
        a = left[i] if i < len(left) else ("", None)
        b = right[i] if i < len(right) else ("", None)
        table.add_row(
            a[0],
            "" if a[1] is None else f"{a[1]:,} ({a[1] / total:.0%})",
            b[0],
            "" if b[1] is None else f"{b[1]:,} ({b[1] / total:.0%})",
        )
    return table


def _print_scores(result: object, report: Path | None) -> None:
    from churnlens.scoring import ScoreResult

    assert isinstance(result, ScoreResult)
    manifest = result.manifest
    console.print(_scores_summary(manifest))
    rate = manifest["rows"] / max(result.seconds, 1e-9)
    console.print(
        f"{manifest['rows']:,} customers in {result.seconds:.1f} s ({rate:,.0f}/s); "
        f"value at risk {manifest['value_at_risk']:,.0f}; model {manifest['model_version']}"
    )
    console.print(f"Scores: [bold]{result.path}[/] (manifest {result.manifest_path.name})")
    if manifest.get("events_after_as_of_ignored"):
        later = manifest["events_after_as_of_ignored"]
        console.print(f"  {later:,} events after {manifest['as_of']} ignored")
    if report is not None:
        console.print(f"Report: [bold]{report}[/]")


@app.command()
@reports_errors
def score(
    events: EventsArg,
    as_of: AsOfOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="Scores file: .parquet or .csv.")],
    model: Annotated[
        str | None,
        typer.Option(
            help="Model bundle folder or models:/NAME@ALIAS (default: the registry champion)."
        ),
    ] = None,
    segments: Annotated[
        str,
        typer.Option(help="Segments bundle or models:/ URI; 'auto' (beside the model) or 'none'."),
    ] = "auto",
    policy: Annotated[
        Path | None,
        typer.Option(help="Action policy YAML (default: the shipped configs/actions.yaml)."),
    ] = None,
    max_contacts: Annotated[
        int | None,
        typer.Option(min=0, help="Contact at most N customers, highest value at risk first."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Also write the analysts' HTML report here.")
    ] = None,
    partitions: PartitionsOpt = None,
    config: ConfigOpt = None,
    memory_limit: MemoryOpt = None,
    temp_dir: TempDirOpt = None,
    track: Annotated[bool, typer.Option(help="Record the scoring run in MLflow.")] = True,
    engine: Annotated[
        str, typer.Option(help="'duckdb' (this machine) or 'spark' (needs churnlens[spark]).")
    ] = "duckdb",
    master: Annotated[
        str, typer.Option(help="Spark master with --engine spark, e.g. local[2] or yarn.")
    ] = "local[2]",
) -> None:
    """Score every customer: churn risk, lifecycle stage, segment and next action."""
    from churnlens.actions import load_policy
    from churnlens.jobs import score_job
    from churnlens.model_source import load_models

    check_output_path(out, inputs=[events, model, segments, policy, config])
    if report is not None:
        check_output_path(report, (".html",), inputs=[events, out, model, segments, policy, config])
    rules = load_policy(policy)
    settings = _settings(config, memory_limit, temp_dir)
    models = load_models(model, None if segments == "none" else segments, settings)
    if engine not in ("duckdb", "spark"):
        raise typer.BadParameter("give 'duckdb' or 'spark'", param_hint="--engine")
    if engine == "spark":
        from churnlens.spark import score_to_file

        if report is not None:
            raise typer.BadParameter(
                "the report needs the local engine; run `churnlens report` on the scores",
                param_hint="--report",
            )
        with console.status(f"Scoring on Spark ({master})..."):
            manifest = score_to_file(
                events,
                as_of,
                out,
                models,
                rules,
                max_contacts=max_contacts,
                master=master,
                buckets=partitions,
            )
        console.print(_scores_summary(manifest))
        console.print(f"Scores: [bold]{out}[/] (Spark, {master}; not tracked in MLflow)")
        return
    with _partition_progress("Scoring partitions") as advance:
        result = score_job(
            events,
            as_of,
            out,
            models,
            rules,
            max_contacts=max_contacts,
            partitions=partitions,
            report=report,
            track=track,
            progress=advance,
        )
    _print_scores(result, report)


@app.command()
@reports_errors
def report(
    scores: Annotated[Path, typer.Argument(help="Scores file written by `churnlens score`.")],
    events: Annotated[Path, typer.Option("--events", help="The event log that was scored.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Report file (.html).")] = Path(
        "report.html"
    ),
    config: ConfigOpt = None,
) -> None:
    """Write the analysts' HTML report of a scores file."""
    from churnlens.jobs import report_from_file

    with console.status("Writing the report..."):
        path = report_from_file(scores, events, out, _settings(config))
    console.print(f"Report: [bold]{path}[/]")


@app.command()
@reports_errors
def demo(
    customers: Annotated[int, typer.Option(min=100, help="Customers in the sample log.")] = 20_000,
    days: Annotated[int, typer.Option(min=365, help="Length of the sample log in days.")] = 730,
    workdir: Annotated[Path, typer.Option(help="Folder for the log, models and outputs.")] = Path(
        "demo"
    ),
    seed: Annotated[int, typer.Option(help="Random seed of the sample log.")] = 7,
    config: ConfigOpt = None,
) -> None:
    """The whole job on sample data: generate, train, segment, score, report."""
    from churnlens.demo import run_demo
    from churnlens.tracking import tracking_uri

    settings = _settings(config)
    with console.status("Starting...") as status:
        result = run_demo(workdir, customers, days, seed, settings, step=status.update)
    validation = result.trained.validation
    console.print(
        f"Churn model: validation ROC AUC {validation.loc['model', 'roc_auc']:.3f} "
        f"(recency alone {validation.loc['recency', 'roc_auc']:.3f}); "
        f"{result.segments.model.k_} segments"
    )
    _print_scores(result.scored, result.report)
    uri = tracking_uri(settings)
    console.print(f"Browse the runs: [bold]mlflow ui --backend-store-uri {uri}[/]")


@models_app.command("list")
@reports_errors
def models_list(config: ConfigOpt = None) -> None:
    """List the registered models, their versions and aliases."""
    from churnlens.tracking import list_models, tracking_uri

    settings = _settings(config)
    frame = list_models(settings)
    table = Table(title=f"Registered models at {tracking_uri(settings)}", title_justify="left")
    for col in frame.columns:
        table.add_column(col)
    for row in frame.itertuples(index=False):
        table.add_row(*(str(v) for v in row))
    console.print(table if len(frame) else "No registered models yet: run `churnlens train`.")


@models_app.command("promote")
@reports_errors
def models_promote(
    name: Annotated[str, typer.Argument(help="Registered model, e.g. churnlens-churn.")],
    version: Annotated[str, typer.Argument(help="Version to make the champion.")],
    config: ConfigOpt = None,
) -> None:
    """Make a version the champion, whatever its score."""
    from churnlens.tracking import promote

    promote(_settings(config), name, version)
    console.print(f"{name} version {version} is now the champion")


@datasets_app.command("cdnow")
@reports_errors
def datasets_cdnow(
    path: Annotated[Path, typer.Argument(help="CDNOW_master.txt (run `make data` to fetch it).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Event log to write.")],
) -> None:
    """Convert the CDNOW transaction log to the event-log contract."""
    from churnlens.datasets import read_cdnow

    check_output_path(out, inputs=[path])
    events = read_cdnow(path)
    write_table(events, out)
    console.print(
        f"Wrote {len(events):,} purchases of {events['customer_id'].nunique():,} customers "
        f"to [bold]{out}[/]"
    )


if __name__ == "__main__":  # pragma: no cover
    app()
