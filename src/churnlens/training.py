"""Training pipelines: snapshots -> fit -> evaluate against baselines -> bundle.

``train`` means "data is known up to ``as_of``": snapshots are taken at as_of - H,
as_of - H - step, ... so that every label window ends on or before ``as_of``; the
latest is the time-based validation set, then everything is refitted on all snapshots.
``backtest`` does the same training and then scores every customer as of ``as_of``
against what really happened in the H days after it.
"""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import lightgbm
import numpy as np
import pandas as pd
import sklearn

from churnlens import __version__
from churnlens.bundle import write_bundle
from churnlens.config import Settings
from churnlens.errors import InputError, Problem
from churnlens.evaluation import metrics_table
from churnlens.events import EventSource, EventTable, load_events, parse_as_of
from churnlens.features import compute_population
from churnlens.labels import Snapshots, log_span, make_snapshot, make_snapshots, snapshot_dates
from churnlens.models.churn import ChurnModel, RecencyBaseline, logistic_rfm_baseline, time_split

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
    bundle: Path | None = None
    manifest: dict[str, Any] = field(default_factory=dict)


@dataclass
class BacktestResult:
    """Realised metrics as of ``as_of`` and the per-customer predictions behind them."""

    train: TrainResult
    as_of: date
    metrics: pd.DataFrame
    predictions: pd.DataFrame


def versions() -> dict[str, str]:
    """Versions of everything a bundle depends on."""
    return {
        "churnlens": __version__,
        "python": platform.python_version(),
        "lightgbm": lightgbm.__version__,
        "scikit-learn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "duckdb": duckdb.__version__,
    }


def _validation_table(model: ChurnModel, snaps: Snapshots) -> pd.DataFrame:
    """Validation metrics: the model (raw and calibrated) and baselines fitted before it."""
    train, valid = time_split(snaps.X)
    y_valid = snaps.y[valid]
    scores = {}
    for name, make in BASELINES.items():
        fitted = make().fit(snaps.X[train], snaps.y[train])
        scores[name] = fitted.predict_proba(snaps.X[valid])[:, 1]
    table = metrics_table(y_valid, scores)
    for kind in ("calibrated", "raw"):
        if kind in model.validation_:
            row = pd.DataFrame(model.validation_[kind], index=[f"model_{kind}"])
            table = pd.concat([row, table])
    return table.rename(index={"model_calibrated": "model"})


def train(
    events: EventSource | EventTable,
    as_of: str | date,
    settings: Settings | None = None,
    models_dir: str | Path | None = "models",
) -> TrainResult:
    """Fit the churn model and its baselines on snapshots up to ``as_of``; write a bundle.

    ``models_dir=None`` skips the bundle.
    """
    table = load_events(events, settings)
    settings = table.settings
    as_of = parse_as_of(as_of)
    dates = snapshot_dates(table, as_of, settings)
    snaps = make_snapshots(table, dates, settings)
    model = ChurnModel.from_settings(settings.model).fit(snaps.X, snaps.y)
    validation = _validation_table(model, snaps)
    baselines = {name: make().fit(snaps.X, snaps.y) for name, make in BASELINES.items()}
    result = TrainResult(
        model=model,
        baselines=baselines,
        snapshots=snaps.dates,
        rows=len(snaps.X),
        validation=validation,
        fingerprint=table.fingerprint(),
    )
    if models_dir is not None:
        _write(result, table, as_of, Path(models_dir))
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
    }
    population = compute_population(table, as_of)
    payload = {"model": result.model, "baselines": result.baselines, "population": population}
    result.manifest = manifest
    result.bundle = write_bundle(models_dir / f"churn-{as_of:%Y%m%d}-{stamp}", payload, manifest)


def backtest(
    events: EventSource | EventTable,
    as_of: str | date,
    settings: Settings | None = None,
    models_dir: str | Path | None = None,
) -> BacktestResult:
    """Train as of ``as_of`` and score it against the H days that really followed.

    Raises :class:`InputError` when the log does not reach ``as_of + H``.
    """
    table = load_events(events, settings)
    settings = table.settings
    as_of = parse_as_of(as_of)
    horizon = settings.training.horizon_days
    _, last = log_span(table)
    if last < as_of + timedelta(days=horizon):
        raise InputError(
            table.source,
            [
                Problem(
                    column="timestamp",
                    message=(
                        f"the log ends {last}, but a backtest as of {as_of} needs events up "
                        f"to {as_of + timedelta(days=horizon)} ({horizon} days after it) to "
                        "know who really churned"
                    ),
                    fix=f"give an --as-of on or before {last - timedelta(days=horizon)}",
                )
            ],
        )
    trained = train(table, as_of, settings, models_dir)
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
    return BacktestResult(trained, as_of, metrics_table(y, scores), predictions)
