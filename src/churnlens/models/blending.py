"""Choosing the churn model's blend and calibration out of time.

The boosted model's log-odds are the logistic RFM baseline's plus the trees'
(:class:`~churnlens.models.churn.BoostedFromBaseline`), so ``offset + w * trees`` is a
blend of the two: ``w = 0`` is the baseline exactly, ``w = 1`` the full model. Each
candidate weight and calibration (none, sigmoid, isotonic) is scored by log loss on the
out-of-time validation snapshot, with the calibration cross-fitted (fitted on one half of
the snapshot's customers, scored on the other, and the reverse), so that the comparison
is out of sample for the calibrator too; and, when the log has one, on a second, earlier
validation snapshot scored by a model fitted before it, which guards the choice itself
from being fitted to one snapshot. The candidate with the lowest mean log loss wins (ties:
the larger weight, then the simpler calibration).

A sigmoid calibrator then keeps its slope (how far the blend's log-odds spread compared
with what the validation snapshot bears out) but not the validation snapshot's level:
:func:`keep_level` re-solves its intercept so that the final model's mean probability on
its own training rows is their churn rate, the level a logistic regression fitted on the
pooled snapshots has too. The level of one period does not carry over to the next where
churn drifts or is seasonal: on ten CDNOW backtests (five as-of days and horizons, the
whole log and its 1/10 sample) the validation snapshot's level made the Brier score worse
than logistic RFM's on four, the pooled level on one (``benchmarks/never_lose.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq
from scipy.special import expit
from sklearn.calibration import _SigmoidCalibration
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import log_loss

METHODS = ("none", "sigmoid", "isotonic")


@dataclass(frozen=True)
class Snapshot:
    """A validation snapshot's logistic log-odds, tree log-odds and labels."""

    offset: np.ndarray
    trees: np.ndarray
    y: np.ndarray


def fit_calibrator(method: str, log_odds: np.ndarray, y: np.ndarray) -> Any:
    """A calibrator of log-odds (``predict`` gives probabilities), None for ``none``."""
    if method == "none" or len(np.unique(y)) < 2:
        return None
    if method == "sigmoid":
        return fit_sigmoid(log_odds, y)
    return IsotonicRegression(out_of_bounds="clip", increasing=True).fit(log_odds, y)


def fit_sigmoid(log_odds: np.ndarray, y: np.ndarray) -> _SigmoidCalibration:
    """Platt's sigmoid ``p = 1 / (1 + exp(a * f + b))`` fitted as scikit-learn fits it
    (log loss against Platt's prior-smoothed targets), by Newton's method with step
    halving: the same optimum in a few vectorised steps instead of dozens of L-BFGS
    calls (the choice fits dozens of calibrators per training)."""
    f = np.asarray(log_odds, dtype=float)
    negatives = float(np.sum(y <= 0))
    positives = len(y) - negatives
    target = np.where(y > 0, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    ab = np.array([0.0, np.log((negatives + 1) / (positives + 1))])

    def loss(ab: np.ndarray) -> float:
        z = ab[0] * f + ab[1]  # p = sigmoid(-z)
        return float(np.sum(np.logaddexp(0, z) - (1 - target) * z))

    current = loss(ab)
    for _ in range(100):
        p = expit(-(ab[0] * f + ab[1]))
        r = target - p  # d loss / d z, per row
        # element-wise sums, not BLAS dot products: those start threads that cost more
        # than the sums themselves on a busy machine
        grad = np.array([np.sum(r * f), r.sum()])
        w = p * (1 - p)
        wf = np.sum(w * f)
        hessian = np.array([[np.sum(w * f * f), wf], [wf, w.sum()]])
        step = np.linalg.lstsq(hessian, grad, rcond=None)[0]  # singular if f is constant
        if float(grad @ step) < 1e-12 * len(f):  # Newton decrement: at the optimum
            ab = ab - step
            break
        for _ in range(30):  # halve until the loss does not rise
            new = loss(ab - step)
            if new <= current:
                break
            step = step / 2
        ab, current = ab - step, new
    calibrator = _SigmoidCalibration()
    calibrator.a_, calibrator.b_ = float(ab[0]), float(ab[1])
    return calibrator


def keep_level(calibrator: Any, log_odds: np.ndarray, y: np.ndarray) -> Any:
    """A sigmoid ``calibrator`` with its intercept re-solved so that its mean probability
    over ``log_odds`` is the mean of ``y`` (the slope kept); any other calibrator, or
    labels of one class, as given."""
    rate = float(np.mean(y)) if len(y) else 0.0
    if not isinstance(calibrator, _SigmoidCalibration) or not 0.0 < rate < 1.0:
        return calibrator
    z = calibrator.a_ * np.asarray(log_odds, dtype=float)  # p = expit(-(z + b))
    # the mean probability falls from about 1 to about 0 as b runs over this bracket
    b = brentq(lambda b: float(expit(-(z + b)).mean()) - rate, -z.max() - 40, -z.min() + 40)
    kept = _SigmoidCalibration()
    kept.a_, kept.b_ = float(calibrator.a_), float(b)
    return kept


def calibrated(calibrator: Any, log_odds: np.ndarray) -> np.ndarray:
    """Probabilities from log-odds through ``calibrator`` (the logistic function if None)."""
    p = 1.0 / (1.0 + np.exp(-log_odds)) if calibrator is None else calibrator.predict(log_odds)
    return np.clip(np.asarray(p, dtype=float), 0.0, 1.0)


def cross_fitted(method: str, log_odds: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-sample calibrated probabilities: two halves, each calibrated on the other."""
    half = np.random.default_rng(seed).permutation(len(y)) % 2 == 0
    out = np.empty(len(y))
    for part in (half, ~half):
        out[part] = calibrated(fit_calibrator(method, log_odds[~part], y[~part]), log_odds[part])
    return out


@dataclass(frozen=True)
class Choice:
    weight: float
    method: str
    table: pd.DataFrame  # log loss per (weight, method) and snapshot, and their mean


def choose(
    snapshots: list[Snapshot], weights: tuple[float, ...], methods: tuple[str, ...], seed: int
) -> Choice:
    """The weight and calibration with the lowest mean cross-fitted log loss."""
    rows = []
    for w in weights:
        for method in methods:
            losses = [
                log_loss(
                    s.y,
                    np.clip(
                        cross_fitted(method, s.offset + w * s.trees, s.y, seed), 1e-6, 1 - 1e-6
                    ),
                    labels=[0, 1],
                )
                for s in snapshots
            ]
            rows.append({"weight": w, "calibration": method, **_named(losses)})
    table = pd.DataFrame(rows)
    table["mean"] = table[[c for c in table.columns if c.startswith("log_loss_")]].mean(axis=1)
    rank = table.assign(
        order=-table["weight"], simple=table["calibration"].map(METHODS.index)
    ).sort_values(["mean", "order", "simple"], kind="stable")
    best = rank.iloc[0]
    return Choice(float(best["weight"]), str(best["calibration"]), table)


def _named(losses: list[float]) -> dict[str, float]:
    names = ["log_loss_validation", "log_loss_guard"]
    return {names[i] if i < 2 else f"log_loss_{i}": v for i, v in enumerate(losses)}
