"""``churnlens train-uplift``: uplift models learned from past campaigns' control groups.

Each past scores file (written by ``churnlens score`` with its groups and manifest) is a
randomised experiment: within an action, treatment (contacted) and control differ only by
a hash of the customer id, with a known probability of treatment (the manifest's design:
``1 - (1 - control share) (1 - global holdout share)``). For every campaign:

- the features are built **as of the campaign's scoring day** T (point in time: only
  events on or before T), for its treated and control customers, with the churn and
  value models' outputs the scores file recorded at T (``churn_probability``,
  ``value_if_retained``: the uplift model's ``score_inputs``);
- the outcome is a purchase event in ``(T, T + H]`` (H: the scoring model's horizon from
  the manifest, or ``--horizon-days``); the log must reach T + H;

then the campaigns are stacked and :class:`~churnlens.models.uplift.UpliftModel` fits one
uplift model per action with enough treated and control customers (cross-fitted: every
customer's evaluation uplift comes from models that never saw them). The run records, per
action, the Qini coefficient and the area under the uplift curve of the model's
out-of-fold ranking, of a random ranking and of ranking by value at risk (what churnlens
ranked by before), the curves as plots; the model is saved as a bundle
(``uplift-<as-of>-<stamp>``, found beside the churn bundle when scoring) and registered as
``tracking.uplift_model_name`` under the champion rule (compared on the same campaigns).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnlens.bundle import versions, write_bundle
from churnlens.campaigns import (
    NEEDED,
    check_customers,
    check_window,
    experiment_rows,
    scoring_day,
    window_outcomes,
)
from churnlens.config import Settings
from churnlens.errors import InputError, Problem
from churnlens.events import EventSource, EventTable, load_events, parse_as_of
from churnlens.features import build_features
from churnlens.models.uplift import UpliftModel
from churnlens.scores_file import read_scores_file
from churnlens.uplift_metrics import SUMMARY, thin, uplift_curve, uplift_summary


@dataclass
class UpliftResult:
    """A fitted uplift model, its evaluation and where it was written and recorded."""

    model: UpliftModel
    as_of: date  # the latest campaign's scoring day
    campaigns: list[dict[str, Any]]
    evaluation: pd.DataFrame  # per action and ranking: qini, auuc, random, customers
    frame: pd.DataFrame = dataclasses.field(repr=False)  # one row per customer and campaign
    X: pd.DataFrame = dataclasses.field(repr=False)
    bundle: Path | None = None
    run_id: str | None = None
    model_version: str | None = None
    champion: str | None = None


def control_probability(action: str, design: dict[str, Any] | None) -> float:
    """P(control) of an action's customer under a scores manifest's experiment design."""
    design = design or {}
    share = float(
        (design.get("control_shares") or {}).get(action, design.get("control_share", 0.1))
    )
    held = float(design.get("global_control_share") or 0.0)
    return 1 - (1 - share) * (1 - held)


def campaign_frame(
    path: str | Path, table: EventTable, settings: Settings, horizon_days: int | None
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """One past campaign: the features as of its day and, per customer of its treatment
    and control groups, action, treated, outcome, propensity and value at risk."""
    inputs = UpliftModel.score_inputs
    scores, manifest = read_scores_file(path, (*NEEDED, "value_at_risk", *inputs))
    manifest = manifest or {}
    as_of = scoring_day(scores, str(path))
    horizon = int(horizon_days or manifest.get("horizon_days") or settings.training.horizon_days)
    check_window(table, "the event log", as_of, horizon)
    arms = experiment_rows(scores)
    check_customers(table, arms, as_of, str(path))
    kept = [*NEEDED, "value_at_risk", *inputs]
    rows = window_outcomes(table, arms[kept], as_of, horizon)
    design = manifest.get("experiment")
    rows["treated"] = rows["group"] == "treatment"
    rows["outcome"] = rows["retained"].astype(int)
    treated_share = {a: 1 - control_probability(a, design) for a in rows["action"].unique()}
    rows["propensity"] = rows["action"].map(treated_share).astype(float)
    rows["campaign"] = as_of.isoformat()
    X = build_features(table, as_of, settings)
    X.index = X.index.astype(str)
    features = X.loc[rows["customer_id"]].reset_index(drop=True)
    for column in inputs:  # the models' outputs at the campaign, as scoring passes them
        features[column] = rows[column].to_numpy(dtype=float)
    info = {
        "scores": str(path),
        "as_of": as_of.isoformat(),
        "horizon_days": horizon,
        "window_end": (as_of + timedelta(days=horizon)).isoformat(),
        "treated": int(rows["treated"].sum()),
        "control": int((~rows["treated"]).sum()),
        "experiment": (design or {}).get("name"),
        "scores_sha256": manifest.get("output_sha256"),
    }
    return features, rows.reset_index(drop=True), info


def train_uplift(
    scores: list[str | Path],
    events: EventSource | EventTable,
    settings: Settings | None = None,
    horizon_days: int | None = None,
) -> UpliftResult:
    """Fit the uplift model on past campaigns (see the module docstring)."""
    settings = settings or Settings()
    if not scores:
        raise InputError("SCORES", [Problem("-", "no scores file given", fix="give one")])
    table = load_events(events, settings)
    if len(scores) > 1:  # each campaign reads the log twice (features, outcomes): copy it once
        table = table.materialised()
    parts = [campaign_frame(p, table, settings, horizon_days) for p in scores]
    X = pd.concat([p[0] for p in parts], ignore_index=True)
    frame = pd.concat([p[1] for p in parts], ignore_index=True)
    u = settings.uplift
    model = UpliftModel(
        learner=u.learner, n_estimators=u.n_estimators, learning_rate=u.learning_rate,
        num_leaves=u.num_leaves, min_child_samples=u.min_child_samples, folds=u.folds,
        min_treated=u.min_treated, min_control=u.min_control, seed=u.seed,
    )  # fmt: skip
    threads = settings.engine.threads or 2
    model.fit(
        X, frame["action"], frame["treated"], frame["outcome"], frame["propensity"], threads,
        groups=frame["customer_id"],
    )  # fmt: skip
    latest = max(parse_as_of(p[2]["as_of"]) for p in parts)
    result = UpliftResult(model, latest, [p[2] for p in parts], pd.DataFrame(), frame, X)
    result.evaluation = evaluate(result)
    return result


def _fitted_actions(result: UpliftResult) -> Iterator[tuple[str, pd.DataFrame]]:
    """Per fitted action (by name), its customers' rows of the training frame."""
    for action, part in result.frame.groupby("action", sort=True):
        if str(action) in result.model.evaluation_:
            yield str(action), part


def evaluate(result: UpliftResult) -> pd.DataFrame:
    """Per fitted action, the Qini coefficient and AUUC of three rankings of its customers:
    the model's out-of-fold ranking score (the model's own evaluation), value at risk,
    and random (the diagonal)."""
    rows = []
    for action, part in _fitted_actions(result):
        fitted = result.model.evaluation_[action]
        model = {key: fitted[key] for key in SUMMARY}
        t, y = part["treated"].to_numpy(), part["outcome"].to_numpy()
        at_risk = uplift_summary(part["value_at_risk"].fillna(-np.inf).to_numpy(), t, y)
        for name, summary in (("model", model), ("value_at_risk", at_risk)):
            rows.append({"action": action, "ranking": name, **summary, "customers": len(part)})
    return pd.DataFrame(rows)


def curves(result: UpliftResult) -> dict[str, dict[str, pd.DataFrame]]:
    """Per action, the thinned Qini curves of the model's ranking (the model's own) and
    value at risk's."""
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for action, part in _fitted_actions(result):
        t, y = part["treated"].to_numpy(), part["outcome"].to_numpy()
        at_risk = uplift_curve(part["value_at_risk"].fillna(-np.inf).to_numpy(), t, y)
        out[action] = {"uplift model": result.model.curves_[action], "value at risk": thin(at_risk)}
    return out


def write_uplift_bundle(result: UpliftResult, models_dir: Path, settings: Settings) -> Path:
    """The uplift model's bundle in ``models_dir``."""
    now = dt.datetime.now(dt.UTC)
    manifest = {
        "kind": "uplift",
        "created": now.isoformat(),
        "as_of": result.as_of.isoformat(),
        "campaigns": result.campaigns,
        "feature_names": list(result.model.feature_names_in_),
        "settings": settings.model_dump(mode="json"),
        "versions": versions(),
        "model": result.model.metadata(),
        "evaluation": result.evaluation.round(6).to_dict(orient="records"),
    }
    name = f"uplift-{result.as_of:%Y%m%d}-{now:%Y%m%dT%H%M%S%f}"
    result.bundle = write_bundle(Path(models_dir) / name, result.model, manifest)
    return result.bundle


def track_uplift(
    result: UpliftResult, settings: Settings, config_path: str | Path | None = None
) -> None:
    """Record the run ``uplift-<as-of>`` (metrics, curves) and register the model."""
    from churnlens.tracking import ModelToRegister, RunContent, record_run
    from churnlens.uplift_metrics import uplift_plot

    campaigns = ",".join(sorted(c["as_of"] for c in result.campaigns))
    params = {"campaigns": campaigns, "learner": result.model.learner}
    params["skipped"] = "; ".join(f"{a}: {r}" for a, r in sorted(result.model.skipped_.items()))
    content = RunContent(dicts={"uplift/campaigns.json": {"campaigns": result.campaigns}})
    for row in result.evaluation.to_dict(orient="records"):
        for key in ("qini", "qini_random", "auuc", "auuc_random"):
            content.metrics[f"{row['action']}.{row['ranking']}.{key}"] = float(row[key])
    for action, fitted in result.model.evaluation_.items():  # the calibration
        for key in ("ate_raw", "ate_se", "ate", "slope_raw", "slope", "shape_weight"):
            content.metrics[f"{action}.{key}"] = float(fitted[key])
    score = result.model.validation_score(result.X)
    if score is not None:
        content.metrics["val_model_score"] = score
    content.figures["uplift_curves"] = {
        f"{action}.png": uplift_plot(lines, f"Qini curve: {action}")
        for action, lines in curves(result).items()
    }

    def champion_score(champion: Any, params_: dict[str, str], metrics: dict[str, float]) -> Any:
        same = params_.get("campaigns") == campaigns and getattr(champion, "kind", "") == "uplift"
        return metrics.get("val_model_score") if same else None

    register = ModelToRegister(
        model=result.model,
        artifact="uplift_model",
        example=result.X.head(5),
        registered_name=settings.tracking.uplift_model_name,
        score=-np.inf if score is None else score,
        champion_score=champion_score,
        bundle=result.bundle,
    )
    record = record_run(
        settings,
        f"uplift-{result.as_of}",
        params,
        {"kind": "uplift", "model_kind": "uplift"},
        content,
        kept=f"the uplift bundle was saved at {result.bundle}",
        config_path=config_path,
        register=register,
    )
    result.run_id, result.model_version, result.champion = dataclasses.astuple(record)


__all__ = ["UpliftResult", "campaign_frame", "control_probability", "train_uplift"]
