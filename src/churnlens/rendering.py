"""What the ``churnlens`` command line prints: rich tables, progress bars, summaries, errors.

:mod:`churnlens.cli` parses options and calls the library; every line it shows comes from
here. Results go to standard output, progress and errors to standard error. The module is
imported by the CLI at start-up, so it imports nothing heavy (pandas and the library's
result types are only named for type checkers).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from churnlens.rendering_progress import err_console, line, partition_progress, step
from churnlens.rendering_progress import status as progress_status

if TYPE_CHECKING:
    import pandas as pd
    from rich.status import Status

    from churnlens.campaigns import OutcomesResult
    from churnlens.config import Settings
    from churnlens.demo import DemoResult
    from churnlens.events import EventSummary
    from churnlens.features.batched import FeatureFile
    from churnlens.scoring import ScoreResult
    from churnlens.segmenting import SegmentResult
    from churnlens.training import BacktestResult, TrainResult
    from churnlens.uplifting import UpliftResult

console = Console()
__all__ = ["console", "err_console", "error", "line", "partition_progress", "status", "step"]

FEATURE_PICKS = (
    "freq_contacts_90d",
    "chan_n_channels",
    "gap_median",
    "rfm_recency_days",
    "rfm_frequency",
    "rfm_monetary_total",
    "cycle_days",
    "cycle_overdue_ratio",
    "fatigue_touches_30d",
)
SEGMENT_COLUMNS = (
    "name",
    "size",
    "share",
    "churn_rate",
    "rfm_recency_days",
    "rfm_frequency",
    "rfm_monetary_total",
)


def error(text: str) -> None:
    """One ``error:`` message on standard error, printed as written (no markup, no colours
    guessed from the text, no wrapping of long paths)."""
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


def os_error_text(exc: OSError) -> str:
    """The operating system's word (a full disk, a missing folder) and what it left."""
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{exc.strerror or exc}; earlier outputs are unchanged"


def status(text: str) -> Status:
    """A spinner with ``text`` while a step runs (plain timestamped lines off a terminal)."""
    return progress_status(console, text)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ tables


def count_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(title.split()[-1])
    table.add_column("events", justify="right")
    for key, value in counts.items():
        table.add_row(key, f"{value:,}")
    return table


def feature_summary(summary: pd.DataFrame) -> Table:
    """Share non-missing, mean, min and max of a few telling features."""
    table = Table(title="Feature summary", title_justify="left")
    for col in ("feature", "non-missing", "mean", "min", "max"):
        table.add_column(col, justify="left" if col == "feature" else "right")
    total = summary["count"].max() if len(summary) else 0
    for name in (p for p in FEATURE_PICKS if p in summary.index):
        row = summary.loc[name]
        share = row["count"] / total if total else float("nan")
        table.add_row(
            name, f"{share:.0%}", f"{row['mean']:,.1f}", f"{row['min']:,.1f}", f"{row['max']:,.1f}"
        )
    return table


def metrics_table(title: str, frame: pd.DataFrame) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("score", no_wrap=True)
    for col in frame.columns:  # spaces, so that long names wrap instead of being cut
        table.add_column(col.replace("_", " "), justify="right")
    for name, row in frame.iterrows():
        table.add_row(str(name), *(f"{v:.4f}" for v in row))
    return table


def segment_table(profile: pd.DataFrame, as_of: date) -> Table:
    """One row per segment: its name, size, share, churn rate and RFM averages."""
    table = Table(title=f"Segments as of {as_of}", title_justify="left")
    shown = [c for c in SEGMENT_COLUMNS if c in profile.columns]
    table.add_column("id", justify="right")
    for col in shown:
        table.add_column(col, justify="left" if col == "name" else "right")
    for seg_id, row in profile.iterrows():
        cells = [
            str(row[c]) if c == "name" else f"{row[c]:,.0f}" if c == "size" else f"{row[c]:,.3g}"
            for c in shown
        ]
        table.add_row(str(seg_id), *cells)
    return table


def scores_summary(manifest: dict[str, Any]) -> Table:
    """Customers and their share per lifecycle stage and per action."""
    stages: dict[str, int] = manifest["stages"]
    actions: dict[str, int] = manifest["actions"]
    total = max(1, sum(stages.values()))
    table = Table(title=f"Scored as of {manifest['as_of']}", title_justify="left")
    table.add_column("lifecycle stage")
    table.add_column("customers", justify="right")
    table.add_column("action")
    table.add_column("customers", justify="right")
    left: list[tuple[str, int | None]] = list(stages.items())
    right: list[tuple[str, int | None]] = sorted(actions.items(), key=lambda kv: -kv[1])
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


# ------------------------------------------------------------------ one per command


def show_path(label: str, path: Path) -> None:
    console.print(f"{label}: [bold]{path}[/]")


def show_sample(events: pd.DataFrame, out: Path, seconds: float) -> None:
    console.print(
        f"Wrote {len(events):,} events of {events['customer_id'].nunique():,} customers "
        f"({events['timestamp'].min():%Y-%m-%d} to {events['timestamp'].max():%Y-%m-%d}) "
        f"to [bold]{out}[/] in {seconds:.1f} s"
    )


def warn(notes: tuple[str, ...] | list[str], indent: str = "") -> None:
    """Each note as a warning line (escaped: a note may quote the data)."""
    for text in notes:
        console.print(f"{indent}[yellow]warning:[/] {escape(text)}")


def show_validation(s: EventSummary) -> None:
    console.print(f"[bold green]OK[/] {s.source}: the log meets the event-log contract")
    console.print(
        f"  {s.events:,} events of {s.customers:,} customers, "
        f"{s.first_timestamp:%Y-%m-%d %H:%M} to {s.last_timestamp:%Y-%m-%d %H:%M} UTC"
    )
    dropped = f"{s.duplicates_dropped:,} exact duplicate rows dropped ({s.rows_read:,} rows read)"
    warn([dropped, *s.notes] if s.duplicates_dropped else s.notes, "  ")
    for title, counts in (
        ("Events per role", s.by_role),
        ("Events per event_type", s.by_event_type),
        ("Events per channel", s.by_channel),
    ):
        console.print(count_table(title, counts))


def show_features(result: FeatureFile, out: Path, day: date) -> None:
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
    console.print(feature_summary(result.summary))


def show_training(result: TrainResult, settings: Settings) -> None:
    console.print(
        f"Trained on {len(result.snapshots)} snapshots "
        f"({result.snapshots[0]} to {result.snapshots[-1]}), {result.rows:,} rows; "
        f"calibration: {result.model.calibration_method_}"
    )
    console.print(metrics_table("Validation (latest snapshot, out of time)", result.validation))
    warn(result.notes)
    console.print(f"Model bundle: [bold]{result.bundle}[/]")
    show_registered(result, settings)


def show_registered(result: TrainResult, settings: Settings) -> None:
    """The MLflow run and the registered version of a tracked training (or backtest)."""
    if result.run_id:
        from churnlens.tracking import tracking_uri

        console.print(
            f"MLflow run {result.run_id} at {tracking_uri(settings)}; registered "
            f"{settings.tracking.churn_model_name} version {result.model_version} "
            f"(champion: {result.champion})"
        )
    value = result.value
    if value is not None and value.run_id:
        console.print(
            f"Value run {value.run_id}; registered {settings.tracking.value_model_name} "
            f"version {value.model_version} (champion: {value.champion})"
        )


def show_backtest(result: BacktestResult, horizon_days: int, settings: Settings) -> None:
    churn_rate = result.predictions["churned"].mean()
    console.print(
        f"Backtest as of {result.as_of}: {len(result.predictions):,} customers, "
        f"realised churn rate {churn_rate:.3f} over {horizon_days} days"
    )
    console.print(metrics_table("Realised metrics", result.metrics))
    warn(result.train.notes)
    if result.value_metrics is not None:
        method = result.train.value.model.reason_ if result.train.value else ""
        title = "Customer value against the spend that followed"
        console.print(metrics_table(title, result.value_metrics))
        console.print(f"Value model: {method}")
    show_registered(result.train, settings)


def show_segments(result: SegmentResult, settings: Settings) -> None:
    model = result.model
    scores = ", ".join(f"k={key}: {value:.3f}" for key, value in model.silhouette_.items())
    console.print(f"{model.k_} segments (silhouette {scores})")
    console.print(segment_table(result.profile, result.as_of))
    console.print(f"Segment bundle: [bold]{result.bundle}[/]")
    if result.run_id:
        console.print(
            f"MLflow run {result.run_id}; registered {settings.tracking.segment_model_name} "
            f"version {result.model_version} (champion: {result.champion})"
        )


def show_scores(result: ScoreResult, report: Path | None, seconds: float | None = None) -> None:
    """The summary of a scoring run; ``seconds``: the whole command's time (checks, model
    loading, report and tracking included), else the scoring's."""
    manifest = result.manifest
    history = manifest.get("history") or {}
    for text in [*(manifest.get("notes") or ()), *(history.get("notes") or ())]:
        err_console.print(f"note: {escape(text)}")
    console.print(scores_summary(manifest))
    total = result.seconds if seconds is None else seconds
    rate = manifest["rows"] / max(total, 1e-9)
    console.print(
        f"{manifest['rows']:,} customers in {total:.1f} s ({rate:,.0f}/s; scoring "
        f"{result.seconds:.1f} s); value at risk {manifest['value_at_risk']:,.0f}; model "
        f"{manifest['model_version']}"
    )
    show_drift(manifest.get("drift") or {})
    show_history(history)
    console.print(f"Scores: [bold]{result.path}[/] (manifest {result.manifest_path.name})")
    if manifest.get("events_after_as_of_ignored"):
        later = manifest["events_after_as_of_ignored"]
        console.print(f"  {later:,} events after {manifest['as_of']} ignored")
    if report is not None:
        console.print(f"Report: [bold]{report}[/]")


def _points(value: float) -> str:
    return "–" if value != value else f"{100 * value:+.1f}"


def outcomes_table(result: OutcomesResult, truth: dict[str, float] | None = None) -> Table:
    """Per action: groups, retention lift (points) with its 95% interval, p-value and
    incremental customers (and the true effect, when known: the demo's simulator)."""
    m = result.manifest
    out = Table(title=f"Outcomes of {m['as_of']} over {m['horizon_days']} days")
    columns = ["action", "treated", "controls", "lift, pts [95% interval]", "p", "incr. cust."]
    columns += ["true effect"] if truth is not None else []
    for c in columns:
        out.add_column(c, justify="left" if c == "action" else "right")
    for r in result.table.to_dict(orient="records"):
        lift = f"{_points(r['lift'])} [{_points(r['lift_low'])}, {_points(r['lift_high'])}]"
        row = [
            escape(str(r["action"])), f"{r['n_treatment']:,}", f"{r['n_control']:,}", lift,
            "–" if r["p_value"] != r["p_value"] else f"{r['p_value']:.3f}",
            "–" if r["incremental_customers"] != r["incremental_customers"]
            else f"{r['incremental_customers']:,.0f}",
        ]  # fmt: skip
        if truth is not None:
            row.append(_points(truth.get(str(r["action"]), float("nan"))))
        out.add_row(*row)
    return out


def show_outcomes(result: OutcomesResult) -> None:
    console.print(outcomes_table(result))
    small = result.table[(result.table["action"] != "all") & ~result.table["detectable"]]
    for r in small.to_dict(orient="records"):
        console.print(
            f"  {escape(str(r['action']))}: lift not told apart from 0; its groups detect "
            f"{_points(r['mde'])} points with 80% power"
        )
    console.print(f"Outcomes: [bold]{result.path}[/]")
    if result.report is not None:
        console.print(f"Report: [bold]{result.report}[/]")


def show_uplift(result: UpliftResult) -> None:
    campaigns = ", ".join(c["as_of"] for c in result.campaigns)
    title = f"Uplift from the campaigns of {campaigns}: out-of-fold Qini (random = 0)"
    out = Table(title=title)
    for c in ("action", "customers", "uplift model", "value at risk"):
        out.add_column(c, justify="left" if c == "action" else "right")
    frame = result.evaluation
    for action, rows in frame.groupby("action", sort=True):
        by = rows.set_index("ranking")["qini"]
        out.add_row(
            escape(str(action)), f"{int(rows['customers'].iloc[0]):,}",
            f"{by.get('model', float('nan')):.4f}", f"{by.get('value_at_risk', float('nan')):.4f}",
        )  # fmt: skip
    console.print(out)
    for action, reason in sorted(result.model.skipped_.items()):
        console.print(f"  {escape(action)} skipped: {escape(reason)}")
    check = getattr(result.model, "ranking_check_", None)
    if check is not None:
        verdict = "incremental value" if check["ranks_by_increment"] else "value at risk"
        console.print(f"Top {check['share']:.0%} by out-of-fold incremental value: "
                      f"{1000 * check['incremental_value']:+.1f} buyers per 1,000 contacts, by "
                      f"value at risk {1000 * check['value_at_risk']:+.1f} (difference +- "
                      f"{1000 * check['difference_se']:.1f}): auto ranks by {verdict}")  # fmt: skip
    console.print(f"Bundle: [bold]{result.bundle}[/]")
    if result.model_version:
        console.print(f"Registered version {result.model_version} (champion {result.champion})")


def show_spark_scores(manifest: dict[str, Any], out: Path, master: str) -> None:
    console.print(scores_summary(manifest))
    console.print(f"Scores: [bold]{out}[/] (Spark, {master}; not tracked in MLflow)")


def show_demo(result: DemoResult, settings: Settings) -> None:
    from churnlens.tracking import tracking_uri

    validation = result.trained.validation
    console.print(
        f"Churn model: validation ROC AUC {validation.loc['model', 'roc_auc']:.3f} "
        f"(recency alone {validation.loc['recency', 'roc_auc']:.3f}); "
        f"{result.segments.model.k_} segments"
    )
    show_scores(result.scored, result.report)
    for cycle in result.cycles:
        console.print(outcomes_table(cycle.outcomes, cycle.truth))
        console.print(f"Outcomes report: [bold]{cycle.outcomes.report}[/]")
    if result.cycles:
        console.print(targeting_table(result))
    uri = tracking_uri(settings)
    console.print(f"Browse the runs: [bold]mlflow ui --backend-store-uri {uri}[/]")


def targeting_table(result: DemoResult) -> Table:
    """Per cycle, true incremental customers per 1,000 contacts of each ranking."""
    names = ("value_at_risk", "incremental_value", "as_ranked", "random", "oracle")
    out = Table(title="True incremental customers per 1,000 contacts, top 20% contacted")
    out.add_column("cycle")
    for name in names:
        out.add_column(name.replace("_", " "), justify="right")
    for cycle in result.cycles:
        got = cycle.per_thousand
        out.add_row(str(cycle.number), *(f"{got[n]:.1f}" if n in got else "–" for n in names))
    return out


# the `models list` columns and their headers
MODEL_LIST = {
    "name": "name", "version": "ver", "aliases": "alias", "as_of": "as of",
    "val_roc_auc": "val AUC", "val_brier": "val Brier", "created": "created",
}  # fmt: skip


def show_models(frame: pd.DataFrame, uri: str) -> None:
    if not len(frame):
        console.print("No registered models yet: run `churnlens train`.")
        return
    shown = frame.assign(created=frame["created"].dt.strftime("%Y-%m-%d %H:%M"))
    shown = shown[list(MODEL_LIST)].rename(columns=MODEL_LIST)
    console.print(f"Registered models at {escape(uri)}")
    # plain aligned text: never cut to the terminal's width (the run ids are in MLflow)
    console.print(shown.to_string(index=False), markup=False, highlight=False, soft_wrap=True)


def show_cdnow(events: pd.DataFrame, out: Path) -> None:
    console.print(
        f"Wrote {len(events):,} purchases of {events['customer_id'].nunique():,} customers "
        f"to [bold]{out}[/]"
    )


def show_drift(drift: dict[str, Any]) -> None:
    """One line on drift against training, and the worst features when it warns."""
    if not drift.get("checked"):
        reason = drift.get("reason", "no reference")
        console.print(f"Drift: [yellow]not checked[/] ({escape(reason)})")
        return
    level, score = drift["level"], drift["score"]
    colour = {"ok": "green", "warn": "yellow", "alert": "bold red"}[level]
    console.print(
        f"Drift against training of {drift['reference_as_of']}: [{colour}]{level}[/] "
        f"(score PSI {score['psi']:.3f}, KS {score['ks']:.3f}; stage mix PSI "
        f"{drift['stages']['psi']:.3f})"
    )
    top = drift["thresholds"]["top"]
    worst = [f for f in drift["features"] if not f["excluded"]][:top]
    if level != "ok" or any(f["level"] != "ok" for f in worst):
        listed = ", ".join(f"{f['name']} {f['psi']:.3f} ({f['level']})" for f in worst)
        console.print(f"  worst features by PSI: {escape(listed)}")


def show_history(history: dict[str, Any]) -> None:
    """One line on the changes since the last run."""
    if not history.get("compared"):
        return
    console.print(
        f"Since {history.get('previous_as_of') or 'the last run'}: {history['matched']:,} "
        "customers compared, "
        f"{history['new']:,} new, {history['gone']:,} gone; {history['stage_changed']:,} "
        f"changed stage, {history['action_changed']:,} changed action"
    )
