"""Metrics for churn scores: ranking, calibration and the business view (lift)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

METRICS = (
    "roc_auc", "pr_auc", "pr_auc_stayers", "brier", "log_loss", "capture_at_rate",
    "stayer_lift_top_decile",
)  # fmt: skip
# what every candidate and baseline logs under the same key (MLflow's compare view)
COMPARED = ("roc_auc", "pr_auc", "brier", "log_loss")


def top_decile_lift(y: np.ndarray, p: np.ndarray) -> float:
    """Churn rate among the 10% highest scores divided by the overall churn rate. At its
    ceiling (1 / churn rate) for any fair model once more than 10% churn, so churnlens
    does not report it; see :func:`capture_at_rate` and :func:`stayer_lift_top_decile`."""
    y = np.asarray(y, dtype=float)
    n = max(1, int(np.ceil(0.1 * len(y))))
    top = np.argsort(-np.asarray(p, dtype=float), kind="stable")[:n]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else float("nan")


def capture_at_rate(y: np.ndarray, p: np.ndarray) -> float:
    """The share of churners among as many highest scores as there are churners (1 for a
    perfect ranking, the churn rate for a random one): a budget the size of the churn
    problem, never saturated short of perfection."""
    y = np.asarray(y, dtype=float)
    k = int(y.sum())
    if k == 0:
        return float("nan")
    top = np.argsort(-np.asarray(p, dtype=float), kind="stable")[:k]
    return float(y[top].mean())


def stayer_lift_top_decile(y: np.ndarray, p: np.ndarray) -> float:
    """Stayer rate among the 10% lowest churn scores over the overall stayer rate: how
    well a score finds the customers who stay, the minority in most churn logs (ceiling
    1 / stayer rate)."""
    return top_decile_lift(1 - np.asarray(y, dtype=float), -np.asarray(p, dtype=float))


def churn_metrics(y: pd.Series | np.ndarray, p: pd.Series | np.ndarray) -> dict[str, float]:
    """ROC AUC, PR AUC of the churners and of the stayers, Brier score, log loss, capture
    at the churn rate and the stayers' top-decile lift.

    ``y`` is 1 for churners; ``p`` the predicted churn probability. The stayers' PR AUC
    ranks by 1 - p. Ranking metrics are NaN when only one class is present.
    """
    y = np.asarray(y, dtype=int)
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    both = 0 < y.sum() < len(y)
    nan = float("nan")
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else nan,
        "pr_auc": float(average_precision_score(y, p)) if both else nan,
        "pr_auc_stayers": float(average_precision_score(1 - y, 1 - p)) if both else nan,
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "capture_at_rate": capture_at_rate(y, p) if both else nan,
        "stayer_lift_top_decile": stayer_lift_top_decile(y, p) if both else nan,
    }


def metrics_table(y: pd.Series, scores: dict[str, pd.Series | np.ndarray]) -> pd.DataFrame:
    """One row of :func:`churn_metrics` per named score."""
    return pd.DataFrame({name: churn_metrics(y, p) for name, p in scores.items()}).T[list(METRICS)]


def comparison_metrics(table: pd.DataFrame, model: str = "model") -> dict[str, float]:
    """The model's gain over each other row of a :func:`metrics_table` on the compared
    metrics (``gain_roc_auc_over_recency``; for Brier and log loss the gain is the
    baseline's minus the model's, so positive always means the model is better)."""
    out = {}
    lower_better = {"brier", "log_loss"}
    for other in table.index.drop(model):
        for metric in COMPARED:
            gain = table.loc[model, metric] - table.loc[other, metric]
            out[f"gain_{metric}_over_{other}"] = float(-gain if metric in lower_better else gain)
    return {k: v for k, v in out.items() if np.isfinite(v)}


VALUE_METRICS = ("total_error", "mae", "spearman", "gini", "top_decile_capture")


def normalised_gini(y: np.ndarray, p: np.ndarray) -> float:
    """The Gini of the spend captured when customers are taken by decreasing ``p``,
    divided by that of the perfect order (1: perfect, 0: random). Ties in ``p`` are
    broken by the input order (stable)."""
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n == 0 or y.sum() <= 0:
        return float("nan")

    def area(ordered: np.ndarray) -> float:
        return float(np.cumsum(ordered).sum() / ordered.sum() / n - 0.5 - 0.5 / n)

    return area(y[np.argsort(-np.asarray(p, dtype=float), kind="stable")]) / area(np.sort(y)[::-1])


def value_metrics(y: pd.Series | np.ndarray, p: pd.Series | np.ndarray) -> dict[str, float]:
    """How a predicted value ``p`` matches the spend ``y`` that followed: total error (the
    predicted total's relative error, as a fraction), mean absolute error, Spearman rank
    correlation, normalised Gini and the top decile's capture (the share of all spend
    made by the 10% of customers with the highest ``p``)."""
    from scipy.stats import spearmanr

    y, p = np.asarray(y, dtype=float), np.asarray(p, dtype=float)
    total = y.sum()
    top = np.argsort(-p, kind="stable")[: max(1, int(np.ceil(0.1 * len(y))))]
    constant = len(np.unique(p)) < 2 or len(np.unique(y)) < 2
    return {
        "total_error": float((p.sum() - total) / total) if total else float("nan"),
        "mae": float(np.abs(p - y).mean()),
        "spearman": float("nan") if constant else float(spearmanr(p, y)[0]),
        "gini": normalised_gini(y, p),
        "top_decile_capture": float(y[top].sum() / total) if total else float("nan"),
    }


def value_table(y: pd.Series | np.ndarray, scores: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row of :func:`value_metrics` per named prediction."""
    rows = {name: value_metrics(y, p) for name, p in scores.items()}
    return pd.DataFrame(rows).T[list(VALUE_METRICS)]


def _figure(title: str) -> tuple[Any, Any]:
    """A figure of its own (matplotlib's object API: no pyplot state, no backend change,
    so a notebook keeps its backend and nothing needs closing)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4.5), dpi=100)
    ax = fig.subplots()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def churn_plots(y: np.ndarray, scores: dict[str, np.ndarray], where: str = "") -> dict[str, object]:
    """ROC, precision-recall (churners and stayers, each with its prevalence line),
    calibration (with the customers per bin) and cumulative-gains (with the perfect
    model's line) figures; every title says which customers (``where``) and how many."""
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = np.asarray(y, dtype=int)
    n, rate = len(y), float(y.mean()) if len(y) else 0.0
    on = f"\n{where}, n = {n:,}" if where else f"\nn = {n:,}"
    figures = {}
    fig, ax = _figure("ROC curve" + on)
    for name, p in scores.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(loc="lower right")
    figures["roc.png"] = fig

    for key, label, target, prevalence in (
        ("precision_recall.png", "churners", y, rate),
        ("precision_recall_stayers.png", "stayers", 1 - y, 1 - rate),
    ):
        fig, ax = _figure(f"Precision-recall of the {label}" + on)
        for name, p in scores.items():
            ranked = np.asarray(p) if label == "churners" else 1 - np.asarray(p)
            precision, recall, _ = precision_recall_curve(target, ranked)
            ax.plot(recall, precision, label=name)
        ax.axhline(prevalence, color="k", ls=":", lw=1, label=f"prevalence {prevalence:.3f}")
        ax.set(xlabel="recall", ylabel="precision")
        ax.legend()
        figures[key] = fig

    fig, ax = _figure(f"Calibration: 10 bins of about {n // 10:,} customers" + on)
    for name, p in scores.items():
        observed, predicted = calibration_curve(y, np.clip(p, 0, 1), n_bins=10, strategy="quantile")
        ax.plot(predicted, observed, marker="o", label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="predicted churn probability", ylabel="observed churn rate")
    ax.legend()
    figures["calibration.png"] = fig

    fig, ax = _figure("Cumulative gains (churners found)" + on)
    share = np.arange(1, n + 1) / max(n, 1)
    ax.plot(share, np.minimum(share / max(rate, 1e-12), 1.0), "k--", lw=1, label="perfect model")
    for name, p in scores.items():
        order = np.argsort(-np.asarray(p), kind="stable")
        ax.plot(share, np.cumsum(y[order]) / max(y.sum(), 1), label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="share of customers contacted", ylabel="share of churners reached")
    ax.legend()
    figures["cumulative_gains.png"] = fig
    return figures


def value_plots(y: np.ndarray, scores: dict[str, np.ndarray]) -> dict[str, object]:
    """Spend captured by the customers taken in decreasing predicted value (with the
    perfect order's line), and predicted against realised spend per decile of the model."""
    y = np.asarray(y, dtype=float)
    share = np.arange(1, len(y) + 1) / max(len(y), 1)
    total = max(y.sum(), 1e-12)
    figures = {}
    fig, ax = _figure(f"Spend captured (n = {len(y):,})")
    ax.plot(share, np.cumsum(np.sort(y)[::-1]) / total, "k--", lw=1, label="perfect order")
    for name, p in scores.items():
        order = np.argsort(-np.asarray(p, dtype=float), kind="stable")
        ax.plot(share, np.cumsum(y[order]) / total, label=name)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="share of customers, highest value first", ylabel="share of the spend")
    ax.legend(loc="lower right")
    figures["value_gains.png"] = fig
    model = np.asarray(next(iter(scores.values())), dtype=float)
    deciles = pd.qcut(pd.Series(model).rank(method="first"), 10, labels=False)
    frame = pd.DataFrame({"decile": deciles, "predicted": model, "realised": y})
    means = frame.groupby("decile")[["predicted", "realised"]].mean()
    fig, ax = _figure("Predicted and realised spend per decile of the model")
    ax.plot(means.index + 1, means["predicted"], marker="o", label="predicted")
    ax.plot(means.index + 1, means["realised"], marker="s", label="realised")
    ax.set(xlabel="decile of predicted value (10 = highest)", ylabel="mean spend")
    ax.legend()
    figures["value_calibration.png"] = fig
    return figures


def importance_plot(
    importance: pd.Series, top: int = 20, title: str = "gain", xlabel: str = "total gain"
) -> object:
    """Horizontal bar chart of the largest feature importances."""
    fig, ax = _figure(f"Feature importance ({title}, top {top})")
    head = importance.head(top)[::-1]
    ax.barh(list(head.index), head.to_numpy())
    ax.set(xlabel=xlabel)
    fig.tight_layout()
    return fig


def segment_plot(profile: pd.DataFrame) -> object:
    """Segment sizes, with the churn rate of each when the profile has one."""
    fig, ax = _figure("Segments")
    labels = [f"{i}: {n}" for i, n in zip(profile.index, profile["name"], strict=True)]
    ax.barh(labels[::-1], profile["share"].to_numpy()[::-1], label="share of customers")
    if "churn_rate" in profile:
        ax.plot(
            profile["churn_rate"].to_numpy()[::-1],
            labels[::-1],
            "o",
            color="C3",
            label="churn rate",
        )
    ax.set(xlabel="share")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig
