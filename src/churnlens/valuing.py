"""The customer value pipeline: features and spend snapshots -> value model -> bundle -> run.

``fit_value`` is what ``train`` runs beside the churn model: the features as of the as-of
day, snapshots at as_of - H, as_of - H - step, ... (H = ``value.horizon_days``) whose
spend windows end by the as-of day, and :class:`~churnlens.models.value.ValueModel`
fitted on them (the buy-till-you-die model alone when no snapshot fits). The model is
written as its own bundle (``value-<as-of>-<stamp>``, found beside the churn bundle when
scoring) and, with tracking, recorded in its own run and registered as
``tracking.value_model_name`` under the champion rule (compared on the same validation
snapshot; otherwise no fair comparison).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnlens.bundle import versions, write_bundle
from churnlens.config import Settings
from churnlens.events import EventTable
from churnlens.features import build_features
from churnlens.labels import make_value_snapshots, value_snapshot_dates
from churnlens.models.value import ValueModel


@dataclass
class ValueResult:
    """A fitted value model and where it was written and recorded."""

    model: ValueModel
    as_of: date
    snapshots: tuple[date, ...]
    features: pd.DataFrame = dataclasses.field(repr=False)  # as of the as-of day
    bundle: Path | None = None
    run_id: str | None = None
    model_version: str | None = None
    champion: str | None = None


def fit_value(
    table: EventTable, as_of: date, settings: Settings, features: pd.DataFrame | None = None
) -> ValueResult:
    """Fit the value model on ``table`` as of ``as_of`` (see the module docstring);
    ``features`` are the features as of ``as_of`` when they are built already."""
    table = table.with_settings(settings)  # the labels' horizon is the settings' own
    X = build_features(table, as_of, settings) if features is None else features
    dates = value_snapshot_dates(table, as_of, settings)
    snapshots = make_value_snapshots(table, dates)
    v = settings.value
    model = ValueModel(horizon_days=v.horizon_days, seed=v.seed).fit(X, snapshots)
    return ValueResult(model, as_of, tuple(dates), X)


def write_value_bundle(
    result: ValueResult, table: EventTable, models_dir: Path, settings: Settings
) -> Path:
    """The value model's bundle in ``models_dir``."""
    now = dt.datetime.now(dt.UTC)
    model = result.model
    manifest = {
        "kind": "value",
        "created": now.isoformat(),
        "as_of": result.as_of.isoformat(),
        "horizon_days": model.horizon_days,
        "snapshots": [d.isoformat() for d in result.snapshots],
        "method": model.method_,
        "reason": model.reason_,
        "feature_names": list(model.feature_names_in_),
        "settings": settings.model_dump(mode="json"),
        "versions": versions(),
        "data_fingerprint": table.fingerprint(),
        "validation": None
        if model.validation_ is None
        else model.validation_.round(6).to_dict(orient="index"),
    }
    name = f"value-{result.as_of:%Y%m%d}-{now:%Y%m%dT%H%M%S%f}"
    result.bundle = write_bundle(models_dir / name, model, manifest)
    return result.bundle


def _champion_score(result: ValueResult) -> Any:
    validation_day = result.snapshots[-1].isoformat() if result.snapshots else None

    def score(champion: Any, params: dict[str, str], metrics: dict[str, float]) -> float | None:
        same = validation_day is not None and params.get("validation_day") == validation_day
        if getattr(champion, "kind", None) != "value" or not same:
            return None
        return metrics.get("val_model_score")

    return score


def track_value(
    result: ValueResult, settings: Settings, config_path: str | Path | None, force: bool = False
) -> None:
    """Record the value model's run (metrics, plots, method and reason) and register it."""
    from churnlens.evaluation import value_plots
    from churnlens.tracking import ModelToRegister, RunContent, record_run

    model = result.model
    params = {
        "as_of": result.as_of,
        "horizon_days": model.horizon_days,
        "snapshot_dates": ",".join(d.isoformat() for d in result.snapshots),
        "validation_day": result.snapshots[-1].isoformat() if result.snapshots else "",
        "method": model.method_,
        "weights": list(model.weights_),
    }
    content = RunContent(texts={"value/reason.txt": model.reason_ + "\n"})
    content.dicts["value/lifetimes.json"] = model.lifetimes_.to_dict()
    score = -np.inf
    if model.validation_ is not None:
        table = model.validation_
        score = float(np.nanmean(table.loc["model", ["spearman", "gini"]]))
        content.metric_tables["val_"] = table
        content.metrics["val_model_score"] = score
        frame = model.validation_frame_
        scores = {c: frame[c].to_numpy() for c in frame.columns if c != "spend"}
        content.figures["value_plots"] = value_plots(frame["spend"].to_numpy(), scores)
    register = ModelToRegister(
        model=model,
        artifact="value_model",
        example=result.features.head(5),
        registered_name=settings.tracking.value_model_name,
        score=score,
        champion_score=_champion_score(result),
        bundle=result.bundle,
        force=force,
    )
    record = record_run(
        settings,
        f"value-{result.as_of}",
        params,
        {"kind": "value", "model_kind": "value"},
        content,
        kept=f"the value bundle was saved at {result.bundle}",
        config_path=config_path,
        register=register,
    )
    result.run_id, result.model_version, result.champion = dataclasses.astuple(record)
