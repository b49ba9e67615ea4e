"""Recording a training run in MLflow: params, the comparison with the baselines (child
runs, gains, tables), plots, feature importance, the datasets it used, and the churn model
registered with the champion rule (see :func:`churnlens.training.train`)."""

from __future__ import annotations

import dataclasses
import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from churnlens.config import Settings
from churnlens.evaluation import COMPARED, churn_plots, comparison_metrics, importance_plot
from churnlens.tracking import (
    ChampionScore,
    DatasetRecord,
    ModelToRegister,
    RunContent,
    dataset_digest,
    record_run,
)
from churnlens.training import TrainResult

# rows of the validation snapshot the importance plot averages over: the mean absolute
# contribution of a feature is within about 1.5% of the whole snapshot's at 5,000 rows,
# and exact SHAP costs about 0.5 ms a row with 600 trees
IMPORTANCE_ROWS = 5_000


def champion_score(result: TrainResult, horizon: int) -> ChampionScore:
    """How the churn champion is scored against a new run, so that it never saw the
    labels: on the same validation snapshot, its own out-of-time score as recorded; when
    it was trained only on labels that end by the new validation day, its score on the
    new validation rows; otherwise no comparison (anything else would favour one side)."""
    validation_day = result.snapshots[-1]
    y = result.valid_scores["churned"]
    X_valid = result.valid_X.droplevel("as_of")

    def score(champion: Any, params: dict[str, str], metrics: dict[str, float]) -> float | None:
        if getattr(champion, "kind", None) != "churn":
            return None
        days = [date.fromisoformat(d) for d in params.get("snapshot_dates", "").split(",") if d]
        if days and days[-1] == validation_day and "val_model_roc_auc" in metrics:
            return float(metrics["val_model_roc_auc"])
        if not days or days[-1] + timedelta(days=horizon) > validation_day:
            return None
        return champion.validation_score(X_valid, y)

    return score


def track_training(
    result: TrainResult,
    settings: Settings,
    as_of: date,
    config_path: str | Path | None,
    force: bool,
) -> None:
    """Record the run in MLflow, register the model and move the alias if it wins."""

    y = result.valid_scores["churned"].to_numpy()
    scores = {k: result.valid_scores[k].to_numpy() for k in result.valid_scores if k != "churned"}
    params = {
        "as_of": as_of,
        "horizon_days": settings.training.horizon_days,
        "snapshot_dates": ",".join(d.isoformat() for d in result.snapshots),
        "training_rows": result.rows,
        "validation_rows": len(y),
        "validation_date": result.snapshots[-1].isoformat(),
        "validation_churn_rate": round(float(y.mean()), 6),
        "calibration_method": result.model.calibration_method_,
        "tree_weight": result.model.tree_weight_,
        "guard_rows": result.model.validation_["guard_rows"],
    }
    if result.sample is not None:
        params |= {
            "sample_customers": result.sample.customers,
            "sample_of_customers": result.sample.of,
            "sample_rate": round(result.sample.rate, 6),
            "sample_seed": result.sample.seed,
            "sample_strata": json.dumps(result.sample.strata),
        }
    tags = {"data_fingerprint": result.fingerprint, "kind": "train", "model_kind": "churn"}
    if result.bundle is not None:
        tags["bundle"] = str(result.bundle)
    importance = result.model.feature_importance(
        result.valid_X.droplevel("as_of").sample(
            min(len(result.valid_X), IMPORTANCE_ROWS), random_state=settings.model.seed
        )
    )
    value_bundle = None if result.value is None else result.value.bundle
    model_row, baselines = result.validation.loc["model"], result.validation.loc["logistic_rfm"]
    content = RunContent(
        metrics=comparison_metrics(result.validation),
        metric_tables={"val_": result.validation},
        figures={
            "plots": {
                **churn_plots(y, scores, f"validation snapshot {result.snapshots[-1]}"),
                "feature_importance.png": importance_plot(
                    importance,
                    title="logistic part and trees, validation snapshot",
                    xlabel="mean |contribution| to the log-odds",
                ),
            }
        },
        tables={
            "comparison.json": result.validation.rename_axis("score").reset_index(),
            # the out-of-time choice of the trees' weight and the calibration
            "selection.json": result.model.selection_,
            "feature_importance.json": importance.rename("mean_abs_contribution")
            .rename_axis("feature")
            .reset_index(),
        },
        children={
            name: {k: row[k] for k in COMPARED} for name, row in result.validation.iterrows()
        },
        datasets=training_datasets(result, y),
    )
    register = ModelToRegister(
        model=result.model,
        artifact="churn_model",
        example=result.valid_X.droplevel("as_of").head(5),
        registered_name=settings.tracking.churn_model_name,
        score=float(result.validation.loc["model", "roc_auc"]),
        champion_score=champion_score(result, settings.training.horizon_days),
        bundle=result.bundle,
        # served with the churn model by its pyfunc (expected_value, value_if_retained)
        companions={} if value_bundle is None else {"value": value_bundle},
        tags={
            "as_of": str(as_of),
            "val_roc_auc": f"{model_row['roc_auc']:.4f}",
            "val_brier": f"{model_row['brier']:.4f}",
            "validation_date": result.snapshots[-1].isoformat(),
            "data_fingerprint": result.fingerprint,
        },
        description=(
            f"Churn model on data up to {as_of}, horizon {settings.training.horizon_days} "
            f"days. Out-of-time validation on the {result.snapshots[-1]} snapshot "
            f"({len(y):,} customers, churn rate {y.mean():.3f}): ROC AUC "
            f"{model_row['roc_auc']:.4f} (logistic RFM {baselines['roc_auc']:.4f}), Brier "
            f"{model_row['brier']:.4f} (logistic RFM {baselines['brier']:.4f})."
        ),
        force=force,
    )
    kept = f"the model bundle was saved at {result.bundle}"
    record = record_run(
        settings,
        f"train-{as_of}",
        params,
        tags,
        content,
        kept=kept,
        started=result.started,
        config_path=config_path,
        register=register,
    )
    result.run_id, result.model_version, result.champion = dataclasses.astuple(record)


def training_datasets(result: TrainResult, y: np.ndarray) -> list[DatasetRecord]:
    """The training snapshots and the validation snapshot as MLflow dataset inputs."""

    columns = {**result.valid_X.dtypes.astype(str).to_dict(), "churned": "int64"}
    days = [d.isoformat() for d in result.snapshots]
    common = {"data_fingerprint": result.fingerprint, "horizon_days": result.model.horizon_days}
    return [
        DatasetRecord(
            "training-snapshots",
            result.source,
            dataset_digest(result.fingerprint, *days, result.rows),
            "training",
            columns,
            {**common, "rows": result.rows, "snapshot_dates": ",".join(days)},
        ),
        DatasetRecord(
            "validation-snapshot",
            result.source,
            dataset_digest(result.fingerprint, days[-1], len(y)),
            "validation",
            columns,
            {**common, "rows": len(y), "date": days[-1], "churn_rate": f"{y.mean():.4f}"},
        ),
    ]
