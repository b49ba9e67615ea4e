"""The segments pipeline: features as of a day -> K-means segments -> profile -> bundle.

``segment`` fits :class:`~churnlens.models.segments.SegmentModel` on the features as of
``as_of``, profiles the segments (with the realised churn rate of the latest labelled
snapshot when the log is long enough), writes a bundle and, with ``track``, records the
run and registers the model; ids follow the registry's champion so that a retrain does
not relabel customers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from churnlens.bundle import versions, write_bundle
from churnlens.config import Settings
from churnlens.events import EventSource, EventTable, load_events, parse_as_of
from churnlens.features import build_features
from churnlens.labels import log_span, make_snapshot
from churnlens.models.segments import SegmentModel


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
    from churnlens.tracking import load_champion

    model = load_champion(settings, settings.tracking.segment_model_name, "segments")
    return model if getattr(model, "kind", None) == "segments" else None


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
        bundle = Path(models_dir) / f"segments-{as_of:%Y%m%d}-{stamp}"
        result.bundle = write_bundle(bundle, model, manifest)
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
    from churnlens.evaluation import segment_plot
    from churnlens.tracking import ModelToRegister, RunContent, record_run

    model = result.model

    def silhouette(
        candidate: Any, params: dict[str, str], metrics: dict[str, float]
    ) -> float | None:
        if getattr(candidate, "kind", None) != "segments":
            return None
        return candidate.validation_score(X)

    params = {
        "as_of": result.as_of,
        "k": model.k_,
        "customers": len(X),
        "ids_from_previous": previous is not None,
    }
    content = RunContent(
        metrics={f"silhouette_k{k}": v for k, v in model.silhouette_.items()},
        tables={"segments/profile.json": result.profile.reset_index()},
        figures={"segments": {"profile.png": segment_plot(result.profile)}},
    )
    own = model.validation_score(X)
    register = ModelToRegister(
        model=model,
        artifact="segment_model",
        example=X[list(model.features_)].head(5),
        registered_name=settings.tracking.segment_model_name,
        score=own if own is not None else -1.0,
        champion_score=silhouette,
        bundle=result.bundle,
    )
    record = record_run(
        settings,
        f"segment-{result.as_of}",
        params,
        {"kind": "segment", "model_kind": "segments"},
        content,
        kept=f"the segment bundle was saved at {result.bundle}",
        config_path=config_path,
        register=register,
    )
    result.run_id, result.model_version, result.champion = dataclasses.astuple(record)
