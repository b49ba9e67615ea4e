"""Metrics for churn scores: ranking, calibration and the business view (lift)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

METRICS = ("roc_auc", "pr_auc_stayers", "brier", "log_loss", "top_decile_lift")


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float:
    """Churn rate among the 10% highest scores divided by the overall churn rate."""
    y = np.asarray(y, dtype=float)
    n = max(1, int(np.ceil(0.1 * len(y))))
    top = np.argsort(-np.asarray(p, dtype=float), kind="stable")[:n]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else float("nan")


def churn_metrics(y: pd.Series | np.ndarray, p: pd.Series | np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC of the stayers, Brier score, log loss and top-decile lift.

    ``y`` is 1 for churners; ``p`` the predicted churn probability. The PR AUC is taken
    for the stayers (label 0, score 1 - p), the minority class in most churn logs.
    Ranking metrics are NaN when only one class is present.
    """
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    both = 0 < y.sum() < len(y)
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc_stayers": float(average_precision_score(1 - y, 1 - p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "top_decile_lift": top_decile_lift(y, p),
    }


def metrics_table(y: pd.Series, scores: dict[str, pd.Series | np.ndarray]) -> pd.DataFrame:
    """One row of :func:`churn_metrics` per named score."""
    return pd.DataFrame({name: churn_metrics(y, p) for name, p in scores.items()}).T[list(METRICS)]
