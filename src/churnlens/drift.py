"""Drift against training: is tonight's population the one the model was trained on?

At training, :func:`make_reference` keeps a small picture of the training population as of
the training day (the customers a scoring run that day would see): for every feature, its
shares in bins cut at the training deciles (plus a bin for missing values); the churn
scores' shares in their own decile bins and on a fine grid of 1,000 bins (for the
Kolmogorov-Smirnov statistic); and the lifecycle stage mix. The reference is a plain dict
of lists and arrays, saved inside the churn model's pickle-free files
(:mod:`churnlens.models.state`), so it is hashed and signed with the model.

At scoring, :class:`DriftCounter` counts each partition's customers into the same bins
(the counts add up across partitions, so drift costs one ``searchsorted`` per feature and
partition), and :func:`drift_report` compares:

- the population stability index (PSI) per feature, of the score and of the stage mix:
  ``sum((cur - ref) * ln(cur / ref))`` over the bins, each share floored at
  :data:`EPSILON` so that an empty bin costs a finite amount;
- the KS statistic of the score: the largest gap between the two cumulative shares on the
  0.001-wide grid (exact up to that grid);
- the stage mix's shift in points per stage.

A feature that grows with time by construction (``settings.drift.exclude``: the tenure
features, days since the first event) is reported but never warns: a stable business
scored months after training has older customers, which is no reason to distrust it. So
is ``cycle_days``, which puts every customer with one purchase on the population's median
cycle: a third of the customers on one value, which a shift of the median by a day (27.6
instead of 28.2) moves across a decile cut (a PSI above 1 on two of eight simulated
stable businesses); the customers' own cycles are checked through ``cycle_own_days``,
``cycle_n_intervals`` and ``cycle_overdue_ratio``.
Levels: ``ok`` below ``psi_warn`` (and ``ks_warn``), ``warn`` below ``psi_alert`` (and
``ks_alert``), ``alert`` beyond.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from churnlens.config import DriftSettings, Settings
from churnlens.lifecycle import STAGES, assign_stages, stage_thresholds

EPSILON = 1e-4  # the floor of a bin's share in the PSI
GRID = 1000  # score bins of width 0.001 for the KS statistic
QUANTILES = tuple(i / 10 for i in range(1, 10))  # decile cut points
LEVELS = ("ok", "warn", "alert")
REFERENCE = "drift_reference_"  # the churn model's attribute that holds it


def cut_points(values: np.ndarray) -> np.ndarray:
    """The distinct training deciles of ``values`` (missing values ignored). When the top
    decile is the training maximum (a constant feature, a flag, a count mostly at its
    top), one more cut just above it keeps values the training never reached apart:
    otherwise a feature constant at 0 could turn half 5s and still read a PSI of 0."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return np.array([], dtype=float)
    edges = np.unique(np.quantile(v, QUANTILES))
    if edges[-1] >= v.max():
        edges = np.append(edges, np.nextafter(edges[-1], np.inf))
    return edges


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """How many values fall in each bin: ``len(edges) + 1`` bins (a value on a cut point
    goes above it), then one bin for missing values."""
    v = np.asarray(values, dtype=float)
    missing = ~np.isfinite(v)
    index = np.searchsorted(edges, v, side="right")
    index[missing] = len(edges) + 1
    return np.bincount(index, minlength=len(edges) + 2).astype(float)


def grid_counts(scores: np.ndarray) -> np.ndarray:
    """Scores counted on the KS grid (bin ``i`` holds ``[i / GRID, (i + 1) / GRID)``)."""
    p = np.clip(np.nan_to_num(np.asarray(scores, dtype=float), nan=0.0), 0.0, 1.0)
    return np.bincount(np.minimum((p * GRID).astype(int), GRID - 1), minlength=GRID).astype(float)


def shares(counts: np.ndarray) -> np.ndarray:
    total = float(np.sum(counts))
    return np.asarray(counts, dtype=float) / total if total > 0 else np.zeros(len(counts))


def psi(reference: np.ndarray, current: np.ndarray) -> float:
    """The population stability index of two share (or count) vectors on the same bins."""
    ref = np.maximum(shares(np.asarray(reference, dtype=float)), EPSILON)
    cur = np.maximum(shares(np.asarray(current, dtype=float)), EPSILON)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def ks(reference: np.ndarray, current: np.ndarray) -> float:
    """The largest gap between the cumulative shares of two vectors on the same bins."""
    gap = np.cumsum(shares(reference)) - np.cumsum(shares(current))
    return float(np.max(np.abs(gap))) if len(gap) else 0.0


def stage_counts(stages: pd.Series | np.ndarray) -> np.ndarray:
    values = pd.Series(np.asarray(stages, dtype=object)).value_counts()
    return np.array([float(values.get(s, 0)) for s in STAGES])


def make_reference(
    features: pd.DataFrame, scores: np.ndarray, stages: pd.Series, as_of: str
) -> dict[str, Any]:
    """The training population's picture (see the module docstring): plain lists, dicts
    and float arrays, which the model files store without pickle."""
    out: dict[str, Any] = {"as_of": as_of, "customers": len(features), "features": {}}
    for name in features.columns:
        values = features[name].to_numpy(dtype=float)
        edges = cut_points(values)
        out["features"][str(name)] = {"edges": edges, "shares": shares(bin_counts(values, edges))}
    edges = cut_points(scores)
    out["score"] = {
        "edges": edges,
        "shares": shares(bin_counts(scores, edges)),
        "grid": shares(grid_counts(scores)),
    }
    out["stages"] = dict(zip(STAGES, shares(stage_counts(stages)).tolist(), strict=True))
    return out


class DriftCounter:
    """This run's customers counted into the reference's bins, partition by partition
    (thread-safe: each partition is counted apart, then added under a lock)."""

    def __init__(self, reference: dict[str, Any]) -> None:
        self.reference = reference
        self.features = {name: np.zeros(len(r["edges"]) + 2) for name, r in self.ref_features()}
        self.score = np.zeros(len(reference["score"]["edges"]) + 2)
        self.grid = np.zeros(GRID)
        self.stages = np.zeros(len(STAGES))
        self.customers = 0
        self.lock = threading.Lock()

    def ref_features(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self.reference["features"].items())

    def add(self, features: pd.DataFrame, scores: np.ndarray, stages: pd.Series) -> None:
        counted = {
            name: bin_counts(features[name].to_numpy(dtype=float), np.asarray(r["edges"]))
            for name, r in self.ref_features()
            if name in features.columns
        }
        score = bin_counts(scores, np.asarray(self.reference["score"]["edges"]))
        grid, stage = grid_counts(scores), stage_counts(stages)
        with self.lock:
            for name, counts in counted.items():
                self.features[name] += counts
            self.score += score
            self.grid += grid
            self.stages += stage
            self.customers += len(features)


@dataclass(frozen=True)
class FeatureDrift:
    name: str
    psi: float
    level: str
    excluded: bool


def level_of(value: float, warn: float, alert: float) -> str:
    return "alert" if value >= alert else "warn" if value >= warn else "ok"


def drift_report(counter: DriftCounter, settings: DriftSettings) -> dict[str, Any]:
    """The drift section of the manifest: the score's PSI and KS, the stage mix, every
    feature's PSI (worst first), the overall level and what raised it."""
    ref = counter.reference
    warn, alert = settings.psi_warn, settings.psi_alert
    rows = []
    for name, r in counter.ref_features():
        value = psi(np.asarray(r["shares"]), counter.features[name])
        excluded = name in settings.exclude
        level = "ok" if excluded else level_of(value, warn, alert)
        rows.append(FeatureDrift(name, value, level, excluded))
    rows.sort(key=lambda f: (f.excluded, -f.psi))
    score_psi = psi(np.asarray(ref["score"]["shares"]), counter.score)
    score_ks = ks(np.asarray(ref["score"]["grid"]), counter.grid)
    ref_stages = np.array([float(ref["stages"].get(s, 0.0)) for s in STAGES])
    stage_psi = psi(ref_stages, counter.stages)
    now = shares(counter.stages)
    checks = {
        "score_psi": level_of(score_psi, warn, alert),
        "score_ks": level_of(score_ks, settings.ks_warn, settings.ks_alert),
        "stage_psi": level_of(stage_psi, warn, alert),
        **{f"feature {f.name}": f.level for f in rows},
    }
    worst = max(checks.values(), key=LEVELS.index, default="ok")
    return {
        "checked": True,
        "level": worst,
        "raised_by": sorted(k for k, v in checks.items() if v == worst and v != "ok"),
        "reference_as_of": ref.get("as_of"),
        "reference_customers": int(ref.get("customers", 0)),
        "customers": counter.customers,
        "thresholds": settings.model_dump(mode="json"),
        "score": {"psi": round(score_psi, 6), "ks": round(score_ks, 6)},
        "stages": {
            "psi": round(stage_psi, 6),
            "reference": {s: round(float(v), 6) for s, v in zip(STAGES, ref_stages, strict=True)},
            "current": {s: round(float(v), 6) for s, v in zip(STAGES, now, strict=True)},
            "shift_points": {
                s: round(100 * float(n - r), 3)
                for s, n, r in zip(STAGES, now, ref_stages, strict=True)
            },
        },
        "features": [
            {"name": f.name, "psi": round(f.psi, 6), "level": f.level, "excluded": f.excluded}
            for f in rows
        ],
    }


def not_checked(reason: str) -> dict[str, Any]:
    """The drift section of a run that could not check drift (an older bundle)."""
    return {"checked": False, "level": "unknown", "reason": reason}


def worst_features(report: dict[str, Any], top: int) -> list[dict[str, Any]]:
    """The ``top`` features with the largest PSI that may warn (excluded ones left out)."""
    return [f for f in report.get("features", []) if not f["excluded"]][:top]


def training_reference(
    events: Any, as_of: date, settings: Settings, model: Any, features: Any = None
) -> dict[str, Any]:
    """The reference of a churn model trained on ``events`` as of ``as_of``: the features
    of every customer seen by then (those a scoring run that day would see; ``features``
    when they are built already), the model's scores and the stages, as
    :func:`make_reference` keeps them."""
    from churnlens.features.aggregation import build_features

    if features is None:
        features = build_features(events, as_of, settings)
    X = features[list(model.feature_names_in_)]
    scores = model.predict_proba(X)[:, 1]
    thresholds = stage_thresholds(X["cycle_own_days"], settings)
    stages = assign_stages(X, as_of, thresholds, settings.lifecycle)["lifecycle_stage"]
    return make_reference(X, scores, stages, as_of.isoformat())


def model_reference(model: Any) -> dict[str, Any] | None:
    """The reference a churn model carries (``None`` for models trained before it)."""
    reference = getattr(model, REFERENCE, None)
    return reference if isinstance(reference, dict) and "features" in reference else None


def drift_metrics(report: dict[str, Any]) -> dict[str, float]:
    """The drift section as MLflow metrics: ``drift_level`` (0 ok, 1 warn, 2 alert), the
    score's PSI and KS, the stage mix's PSI and ``drift_psi_<feature>`` for every feature."""
    if not report.get("checked"):
        return {}
    out = {
        "drift_level": float(LEVELS.index(report["level"])),
        "drift_score_psi": report["score"]["psi"],
        "drift_score_ks": report["score"]["ks"],
        "drift_stage_psi": report["stages"]["psi"],
    }
    return out | {f"drift_psi_{f['name']}": f["psi"] for f in report["features"]}
