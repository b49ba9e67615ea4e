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
import json
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import lightgbm
import mlflow
import numpy as np
import pandas as pd
import sklearn
from sklearn.metrics import roc_auc_score

from churnlens import __version__
from churnlens.bundle import write_bundle
from churnlens.config import Settings
from churnlens.errors import InputError, Problem, TrackingError
from churnlens.evaluation import metrics_table
from churnlens.events import EventSource, EventTable, load_events, parse_as_of
from churnlens.features import build_features
from churnlens.labels import Snapshots, log_span, make_snapshot, make_snapshots, snapshot_dates
from churnlens.models.churn import ChurnModel, RecencyBaseline, logistic_rfm_baseline, time_split
from churnlens.models.segments import SegmentModel
from churnlens.sampling import CustomerSample, sample_customers

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


def _validate(
    model: ChurnModel, snaps: Snapshots, horizon_days: int
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Validation metrics, scores and features: the model and baselines fitted before the
    latest snapshot, all scored on it (the model's calibrated scores come from its stage
    fit)."""
    train, valid = time_split(snaps.X, horizon_days)
    X_valid = snaps.X[valid]
    scores = {"model": model.validation_scores_}
    for name, make in BASELINES.items():
        fitted = make().fit(snaps.X[train], snaps.y[train])
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
) -> TrainResult:
    """Fit the churn model and its baselines on snapshots up to ``as_of``.

    Writes a model bundle to ``models_dir`` (``None`` skips it) and, with ``track``,
    records the run in MLflow and registers the model. Tracking comes after the bundle:
    when the store fails, :class:`TrackingError` is raised and the bundle is kept.
    """
    table = load_events(events, settings)
    settings = table.settings
    as_of = parse_as_of(as_of)
    fingerprint = table.fingerprint()
    sampled, sample = sample_customers(table, settings.training.max_customers, settings.model.seed)
    dates = snapshot_dates(sampled, as_of, settings)
    snaps = make_snapshots(sampled, dates, settings)
    horizon = settings.training.horizon_days
    model = ChurnModel.from_settings(settings.model, horizon).fit(snaps.X, snaps.y)
    validation, valid_scores, valid_X = _validate(model, snaps, horizon)
    baselines = {name: make().fit(snaps.X, snaps.y) for name, make in BASELINES.items()}
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
    )
    if models_dir is not None:
        _write(result, table, as_of, Path(models_dir))
    if track:
        _track(result, settings, as_of, config_path, force_champion)
    return result


@contextmanager
def _tracking_failure(kept: str) -> Iterator[None]:
    """Any failure of the tracking store becomes one TrackingError naming what was kept."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TrackingError(f"MLflow tracking failed ({first}); {kept}") from None


def _track(
    result: TrainResult,
    settings: Settings,
    as_of: date,
    config_path: str | Path | None,
    force: bool,
) -> None:
    """Record the run in MLflow, register the model and move the alias if it wins."""
    from churnlens import tracking
    from churnlens.evaluation import churn_plots, importance_plot
    from churnlens.models.churn import ChurnModel as _Model

    y = result.valid_scores["churned"].to_numpy()
    scores = {k: result.valid_scores[k].to_numpy() for k in result.valid_scores if k != "churned"}
    X_valid = result.valid_X.droplevel("as_of")
    registered = settings.tracking.churn_model_name

    validation_day = result.snapshots[-1]
    horizon = settings.training.horizon_days

    def score_champion(champion: object, run: object) -> float | None:
        """The champion's validation ROC AUC, measured so that it never saw the labels.

        Same validation snapshot: the champion's own out-of-time validation score, as
        recorded. Champion trained only on labels that end by the new validation day:
        its score on the new validation rows. Anything else would favour one side.
        """
        if not isinstance(champion, _Model) or run is None:
            return None
        params, metrics = run.data.params, run.data.metrics
        days = [date.fromisoformat(d) for d in params.get("snapshot_dates", "").split(",") if d]
        if days and days[-1] == validation_day and "val_model_roc_auc" in metrics:
            return float(metrics["val_model_roc_auc"])
        needed = list(champion.feature_names_in_)
        if not days or days[-1] + timedelta(days=horizon) > validation_day:
            return None
        if any(c not in X_valid.columns for c in needed):
            return None
        return float(roc_auc_score(y, champion.predict_proba(X_valid[needed])[:, 1]))

    kept = f"the model bundle was saved at {result.bundle}"
    with _tracking_failure(kept), tracking.tracked_run(settings, f"train-{as_of}") as run:
        params = {
            "as_of": as_of,
            "horizon_days": settings.training.horizon_days,
            "snapshot_dates": ",".join(d.isoformat() for d in result.snapshots),
            "training_rows": result.rows,
            "validation_rows": len(y),
            "calibration_method": result.model.calibration_method_,
        }
        if result.sample is not None:
            params |= {
                "sample_customers": result.sample.customers,
                "sample_of_customers": result.sample.of,
                "sample_rate": round(result.sample.rate, 6),
                "sample_seed": result.sample.seed,
                "sample_strata": json.dumps(result.sample.strata),
            }
        tags = {"data_fingerprint": result.fingerprint, "kind": "train"}
        if result.bundle is not None:
            tags["bundle"] = str(result.bundle)
        tracking.log_common(settings, params, tags)
        tracking.log_metric_table(result.validation, prefix="val_")
        tracking.log_figures(churn_plots(y, scores))
        tracking.log_figures(
            {"feature_importance.png": importance_plot(result.model.feature_importance())}
        )
        tracking.log_config_file(config_path, settings)
        result.model_version = tracking.log_model(
            result.model, "churn_model", X_valid.head(5), registered
        )
        decision = tracking.update_champion(
            registered,
            result.model_version,
            float(result.validation.loc["model", "roc_auc"]),
            score_champion,
            force,
        )
        result.champion = decision.reason
        result.run_id = run.info.run_id
        tracking.retry(lambda: mlflow.set_tag("champion_decision", decision.reason))


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
    }
    payload = {"model": result.model, "baselines": result.baselines}
    result.manifest = manifest
    result.bundle = write_bundle(models_dir / f"churn-{as_of:%Y%m%d}-{stamp}", payload, manifest)


def backtest(
    events: EventSource | EventTable,
    as_of: str | date,
    settings: Settings | None = None,
    models_dir: str | Path | None = None,
    *,
    track: bool = False,
    config_path: str | Path | None = None,
) -> BacktestResult:
    """Train as of ``as_of`` and score it against the H days that really followed.

    With ``track``, the training run is recorded as in :func:`train` and the realised
    metrics and plots are added to it (``backtest_*``). Raises :class:`InputError` when
    the log does not reach ``as_of + H``.
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
    if track and trained.run_id:
        _track_backtest(result, settings, y.to_numpy(), scores)
    return result


def _track_backtest(
    result: BacktestResult, settings: Settings, y: np.ndarray, scores: dict[str, np.ndarray]
) -> None:
    import mlflow

    from churnlens import tracking
    from churnlens.evaluation import churn_plots

    with _tracking_failure("the training run was recorded without the backtest metrics"):
        mlflow.set_tracking_uri(tracking.tracking_uri(settings))
        with mlflow.start_run(run_id=result.train.run_id):
            tracking.log_metric_table(result.metrics, prefix="backtest_")
            tracking.log_figures(churn_plots(y, scores), folder="backtest_plots")
            tracking.retry(lambda: mlflow.set_tag("kind", "backtest"))


@dataclass
class SegmentResult:
    """A fitted segment model, its profile table and where it was recorded."""

    model: SegmentModel
    as_of: date
    profile: pd.DataFrame
    bundle: Path | None = None
    run_id: str | None = None
    model_version: str | None = None
    champion: str | None = None


def _previous_segments(settings: Settings) -> SegmentModel | None:
    """The champion segment model of the registry, to keep segment ids stable."""
    try:
        import mlflow

        from churnlens import tracking

        mlflow.set_tracking_uri(tracking.tracking_uri(settings))
        name = settings.tracking.segment_model_name
        model = mlflow.sklearn.load_model(f"models:/{name}@{tracking.CHAMPION}")
    except Exception:
        return None
    return model if isinstance(model, SegmentModel) else None


def segment(
    events: EventSource | EventTable,
    as_of: str | date,
    settings: Settings | None = None,
    models_dir: str | Path | None = "models",
    *,
    k: int | None = None,
    track: bool = False,
    config_path: str | Path | None = None,
) -> SegmentResult:
    """Fit K-means segments on the features as of ``as_of``.

    Segment ids follow the registered champion segment model when there is one (its
    centroids are matched to the new ones), so a retrain does not relabel customers.
    The profile's churn rate is the realised one of the latest labelled snapshot
    (as_of - H), when the log is long enough for it.
    """
    table = load_events(events, settings)
    settings = table.settings
    as_of = parse_as_of(as_of)
    X = build_features(table, as_of, settings)
    previous = _previous_segments(settings) if track else None
    model = SegmentModel.from_settings(settings.segments, k=k).fit(X, previous=previous)
    profile = model.profile(X)
    horizon = settings.training.horizon_days
    labelled = as_of - timedelta(days=horizon)
    first, _ = log_span(table)
    if labelled > first:
        X_past, y_past = make_snapshot(table, labelled, horizon)
        past = model.profile(X_past, y_past)
        profile["churn_rate"] = past["churn_rate"].reindex(profile.index)
    result = SegmentResult(model=model, as_of=as_of, profile=profile)
    if models_dir is not None:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        manifest = {
            "kind": "segments",
            "created": dt.datetime.now(dt.UTC).isoformat(),
            "as_of": as_of.isoformat(),
            "k": model.k_,
            "segment_names": {str(i): n for i, n in model.segment_names_.items()},
            "features": list(model.features_),
            "settings": settings.model_dump(mode="json"),
            "versions": versions(),
            "data_fingerprint": table.fingerprint(),
        }
        result.bundle = write_bundle(
            Path(models_dir) / f"segments-{as_of:%Y%m%d}-{stamp}", {"model": model}, manifest
        )
    if track:
        _track_segments(result, settings, X, config_path, previous)
    return result


def _track_segments(
    result: SegmentResult,
    settings: Settings,
    X: pd.DataFrame,
    config_path: str | Path | None,
    previous: SegmentModel | None,
) -> None:
    from sklearn.metrics import silhouette_score

    from churnlens import tracking
    from churnlens.evaluation import segment_plot

    model = result.model
    sample = X.sample(min(len(X), settings.segments.silhouette_sample), random_state=0)

    def silhouette(candidate: object, run: object = None) -> float | None:
        if not isinstance(candidate, SegmentModel):
            return None
        try:
            labels = candidate.predict(sample)
            Z = candidate.pipeline_[:-1].transform(sample[list(candidate.features_)])
        except Exception:
            return None
        return float(silhouette_score(Z, labels)) if labels.nunique() > 1 else None

    kept = f"the segment bundle was saved at {result.bundle}"
    with _tracking_failure(kept), tracking.tracked_run(settings, f"segment-{result.as_of}") as run:
        params = {
            "as_of": result.as_of,
            "k": model.k_,
            "customers": len(X),
            "ids_from_previous": previous is not None,
        }
        tracking.log_common(settings, params, {"kind": "segment"})
        metrics = {f"silhouette_k{k}": v for k, v in model.silhouette_.items()}
        tracking.retry(lambda: mlflow.log_metrics(metrics))
        profile = result.profile.reset_index()
        tracking.retry(lambda: mlflow.log_table(profile, "segments/profile.json"))
        tracking.log_figures({"profile.png": segment_plot(result.profile)}, "segments")
        tracking.log_config_file(config_path, settings)
        registered = settings.tracking.segment_model_name
        result.model_version = tracking.log_model(
            model,
            "segment_model",
            X[list(model.features_)].head(5),
            registered,
            predict="predict",
        )
        own = silhouette(model)
        decision = tracking.update_champion(
            registered, result.model_version, own if own is not None else -1.0, silhouette
        )
        result.champion = decision.reason
        result.run_id = run.info.run_id
