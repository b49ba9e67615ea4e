"""Training pipelines: snapshots -> fit -> evaluate against baselines -> bundle.

``train`` means "data is known up to ``as_of``": snapshots are taken at as_of - H,
as_of - H - step, ... so that every label window ends on or before ``as_of``; the
latest is the time-based validation set, then everything is refitted on all snapshots.
``backtest`` does the same training and then scores every customer as of ``as_of``
against what really happened in the H days after it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnlens.bundle import versions, write_bundle
from churnlens.config import Settings
from churnlens.drift import REFERENCE, training_reference
from churnlens.errors import InputError, Problem
from churnlens.evaluation import metrics_table, value_table
from churnlens.events import EventSource, EventTable, days_after, load_events, parse_as_of
from churnlens.features import build_features
from churnlens.labels import (
    Snapshots,
    log_span,
    make_snapshot,
    make_snapshots,
    snapshot_dates,
    spend_labels,
)
from churnlens.models.churn import ChurnModel, RecencyBaseline, logistic_rfm_baseline
from churnlens.models.fitting import Background, side_by_side, time_split
from churnlens.models.value import naive_rate
from churnlens.outputs import check_output_path, write_table
from churnlens.sampling import CustomerSample, sample_customers
from churnlens.stakes import implausible_amounts
from churnlens.valuing import ValueResult, fit_value, track_value, write_value_bundle

BASELINES = {"logistic_rfm": logistic_rfm_baseline, "recency": RecencyBaseline}


@dataclass
class TrainResult:
    """What ``train`` produced: the fitted models and how they did on validation."""

    model: ChurnModel
    baselines: dict[str, Any]
    snapshots: tuple[date, ...]
    rows: int
    validation: pd.DataFrame
    fingerprint: str
    valid_X: pd.DataFrame
    valid_scores: pd.DataFrame
    bundle: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    model_version: str | None = None
    champion: str | None = None
    sample: CustomerSample | None = None
    value: ValueResult | None = None
    source: str = ""  # the events' path (or how a frame was named)
    started: float = field(default_factory=time.time)  # when train began (epoch seconds)
    notes: tuple[str, ...] = ()  # what the user should know of the data (implausible amounts)


@dataclass
class BacktestResult:
    """Realised metrics as of ``as_of`` and the per-customer predictions behind them."""

    train: TrainResult
    as_of: date
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    value_metrics: pd.DataFrame | None = None  # when the log reaches the value horizon
    value_scores: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    realized_spend: np.ndarray | None = field(default=None, repr=False)


def _fit_churn(
    snaps: Snapshots, settings: Settings
) -> tuple[ChurnModel, dict[str, Any], dict[str, Any]]:
    """The churn model and the baselines (see :func:`_baselines`) fitted on ``snaps``."""
    horizon = settings.training.horizon_days
    model = ChurnModel.from_settings(settings.model, horizon).fit(snaps.X, snaps.y)
    return model, *_baselines(snaps, horizon)


def _baselines(snaps: Snapshots, horizon_days: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each baseline fitted before the latest snapshot (to be scored on it) and on every
    snapshot: independent fits, side by side."""
    train, _ = time_split(snaps.X, horizon_days)
    X_train, y_train = snaps.X[train], snaps.y[train]
    fits = side_by_side(
        {f"{part}/{name}": (lambda make=make, X=X, y=y: make().fit(X, y))
         for part, X, y in (("staged", X_train, y_train), ("final", snaps.X, snaps.y))
         for name, make in BASELINES.items()}
    )  # fmt: skip
    staged = {name: fits[f"staged/{name}"] for name in BASELINES}
    return staged, {name: fits[f"final/{name}"] for name in BASELINES}


def _validate(
    model: ChurnModel, staged: dict[str, Any], snaps: Snapshots, horizon_days: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Validation metrics, scores and features: the model and the ``staged`` baselines
    fitted before the latest snapshot, all scored on it (the model's calibrated scores
    come from its stage fit)."""
    _, valid = time_split(snaps.X, horizon_days)
    X_valid = snaps.X[valid]
    scores = {"model": model.validation_scores_}
    for name, fitted in staged.items():
        scores[name] = fitted.predict_proba(X_valid)[:, 1]
    table = metrics_table(snaps.y[valid], scores)
    raw = pd.DataFrame(model.validation_["raw"], index=["model_raw"])
    frame = pd.DataFrame({"churned": snaps.y[valid].to_numpy(), **scores}, index=X_valid.index)
    return pd.concat([table.iloc[:1], raw, table.iloc[1:]]), frame, X_valid


def train(
    events: EventSource | EventTable,
    as_of: str | date,
    settings: Settings | None = None,
    models_dir: str | Path | None = "models",
    *,
    track: bool = False,
    config_path: str | Path | None = None,
    force_champion: bool = False,
    step: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fit the churn model and its baselines on snapshots up to ``as_of``, and the value
    model beside it (:mod:`churnlens.valuing`); ``step`` is told each step as it starts.

    Writes a bundle of each to ``models_dir`` (``None`` skips them) and, with ``track``,
    records their runs in MLflow and registers the models. Tracking comes after the bundle:
    when the store fails, :class:`TrackingError` is raised and the bundle is kept.
    """
    started = time.time()
    say = step or (lambda text: None)
    say("train: reading and checking the log")
    table = load_events(events, settings)
    settings = table.settings  # the settings given, else those the table was loaded with
    as_of = parse_as_of(as_of)
    fingerprint = table.fingerprint()
    sampled, sample = sample_customers(table, settings.training.max_customers, settings.model.seed)
    # snapshots, labels and the value model read the (sampled) log a dozen times: copy it
    # into DuckDB once rather than decode the source (and filter the sample) each time
    sampled = sampled.materialised()
    dates = snapshot_dates(sampled, as_of, settings)
    say(f"train: features and labels of {len(dates)} snapshots")
    snaps = make_snapshots(sampled, dates, settings)
    horizon = settings.training.horizon_days
    ChurnModel.from_settings(settings.model, horizon).split(snaps.X, snaps.y)  # fails early
    # the churn model and its baselines (pure computation) fit in the background while
    # this thread builds the value model, the only one that reads the log (DuckDB)
    fitted = Background(lambda: _fit_churn(snaps, settings))
    say(f"train: fitting the churn model on {len(snaps.X):,} rows, and beside it the value model")
    current = build_features(sampled, as_of, settings)  # for the reference and the value model
    value = fit_value(sampled, as_of, settings, current)
    if not fitted.done():
        say("train: waiting for the churn model")
    model, staged, baselines = fitted.result()
    say("train: the training population's reference for drift checks")
    # the training population as of the day, for drift checks when scoring (churnlens.drift)
    setattr(model, REFERENCE, training_reference(sampled, as_of, settings, model, current))
    validation, valid_scores, valid_X = _validate(model, staged, snaps, horizon)
    result = TrainResult(
        model=model,
        baselines=baselines,
        snapshots=snaps.dates,
        rows=len(snaps.X),
        validation=validation,
        fingerprint=fingerprint,
        valid_X=valid_X,
        valid_scores=valid_scores,
        sample=sample,
        source=table.source,
        started=started,
    )
    result.value = value
    result.notes = implausible_amounts(current["rfm_monetary_mean"])
    if models_dir is not None:
        say(f"train: writing the bundles to {models_dir}")
        _write(result, table, as_of, Path(models_dir))
        write_value_bundle(result.value, table, Path(models_dir), settings)
    if track:
        from churnlens.training_runs import track_training

        say("train: recording the runs in MLflow")
        track_training(result, settings, as_of, config_path, force_champion)
        track_value(result.value, settings, config_path, force_champion)
    return result


def _write(result: TrainResult, table: EventTable, as_of: date, models_dir: Path) -> None:
    settings = table.settings
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    manifest = {
        "kind": "churn",
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "as_of": as_of.isoformat(),
        "horizon_days": settings.training.horizon_days,
        "snapshots": [d.isoformat() for d in result.snapshots],
        "rows": result.rows,
        "feature_names": list(result.model.feature_names_in_),
        "calibration": result.model.calibration_method_,
        "settings": settings.model_dump(mode="json"),
        "versions": versions(),
        "data_fingerprint": result.fingerprint,
        "validation": result.validation.round(6).to_dict(orient="index"),
        "source": table.source,
        "sample": None if result.sample is None else dataclasses.asdict(result.sample),
        "notes": list(result.notes),
    }
    result.manifest = manifest
    bundle = models_dir / f"churn-{as_of:%Y%m%d}-{stamp}"
    result.bundle = write_bundle(bundle, result.model, manifest)


def backtest(
    events: EventSource | EventTable,
    as_of: str | date,
    settings: Settings | None = None,
    models_dir: str | Path | None = None,
    *,
    track: bool = False,
    config_path: str | Path | None = None,
    predictions_path: str | Path | None = None,
    value_horizon_days: int | None = None,
) -> BacktestResult:
    """Train as of ``as_of`` and score it against the H days that really followed.

    With ``track``, the training run is recorded as in :func:`train` and the realised
    metrics and plots are added to it (``backtest_*``); with ``predictions_path``, the
    per-customer predictions are written there (the path is checked first). The value
    model (over ``value_horizon_days``, default ``value.horizon_days``) is scored against
    the spend that followed when the log reaches that far. Raises :class:`InputError`
    when the log does not reach ``as_of + H`` (or ``as_of`` + the value horizon given).
    """
    if predictions_path is not None:
        predictions_path = check_output_path(predictions_path, inputs=[events, config_path])
    table = load_events(events, settings)
    settings = table.settings.with_overrides(value={"horizon_days": value_horizon_days})
    as_of = parse_as_of(as_of)
    horizon = settings.training.horizon_days
    _, last = log_span(table)
    _reaches(table.source, last, as_of, horizon, "who really churned")
    value_horizon = settings.value.horizon_days
    if value_horizon_days is not None:
        _reaches(table.source, last, as_of, value_horizon, "what customers really spent")
    trained = train(table, as_of, settings, models_dir, track=track, config_path=config_path)
    X, y = make_snapshot(table, as_of, horizon)
    scores = {"model": trained.model.predict_proba(X)[:, 1]}
    for name, fitted in trained.baselines.items():
        scores[name] = fitted.predict_proba(X)[:, 1]
    predictions = pd.DataFrame(
        {
            "customer_id": X.index.astype(str),
            "churn_probability": scores["model"],
            "churned": y.to_numpy(),
            **{f"{name}_probability": scores[name] for name in trained.baselines},
        }
    )
    result = BacktestResult(trained, as_of, metrics_table(y, scores), predictions)
    assert trained.value is not None
    values = trained.value.model.predict_columns(X)
    predictions["expected_value"] = values["expected_value"].to_numpy()
    predictions["value_if_retained"] = values["value_if_retained"].to_numpy()
    if as_of + timedelta(days=value_horizon) <= last:
        spend = spend_labels(table, as_of, value_horizon).reindex(X.index, fill_value=0.0)
        predictions["realized_spend"] = spend.to_numpy()
        lifetimes = trained.value.model.lifetimes_
        result.value_scores = {
            "model": values["expected_value"].to_numpy(),
            "pareto_nbd": lifetimes.expected(X, value_horizon),
            "bg_nbd": lifetimes.expected(X, value_horizon, baseline=True),
            "naive_rate": naive_rate(X, value_horizon),
        }
        result.value_metrics = value_table(spend.to_numpy(), result.value_scores)
        result.realized_spend = spend.to_numpy()
    if predictions_path is not None:
        write_table(predictions, predictions_path)
    if track and trained.run_id:
        _track_backtest(result, settings, y.to_numpy(), scores)
    return result


def _reaches(source: str, last: date, as_of: date, horizon: int, what: str) -> None:
    """Refuse a backtest whose window ends after the log does."""
    if last < days_after(as_of, horizon):
        raise InputError(
            source,
            [
                Problem(
                    column="timestamp",
                    message=(
                        f"the log ends {last}, but a backtest as of {as_of} needs events up "
                        f"to {as_of + timedelta(days=horizon)} ({horizon} days after it) to "
                        f"know {what}"
                    ),
                    fix=f"give an --as-of on or before {last - timedelta(days=horizon)}",
                )
            ],
        )


def _track_backtest(
    result: BacktestResult, settings: Settings, y: np.ndarray, scores: dict[str, np.ndarray]
) -> None:
    from churnlens.evaluation import churn_plots, value_plots
    from churnlens.tracking import RunContent, add_to_run

    assert result.train.run_id is not None
    content = RunContent(
        metric_tables={"backtest_": result.metrics},
        figures={"backtest_plots": churn_plots(y, scores, f"backtest as of {result.as_of}")},
    )
    if result.value_metrics is not None and result.realized_spend is not None:
        content.metric_tables["backtest_value_"] = result.value_metrics
        plots = value_plots(result.realized_spend, result.value_scores)
        content.figures["backtest_value_plots"] = plots
    kept = "the training run was recorded without the backtest metrics"
    add_to_run(settings, result.train.run_id, content, {"kind": "backtest"}, kept=kept)
