"""Calibration of an uplift ranking score by the best linear predictor, shrunk by signal
to noise (step 4 of :mod:`churnlens.models.uplift`).

Chernozhukov, Demirer, Duflo & Fernandez-Val, "Generic machine learning inference on
heterogeneous treatment effects": regressing the doubly robust pseudo-outcomes on the
centred out-of-fold score gives the average effect (intercept) and how much of the
score's spread is real (slope). Each estimate is shrunk toward 0 by its own standard
error (``est x max(0, 1 - se^2 / est^2)``); the slope is kept only when the one-sided
test of "no heterogeneity" rejects at 5% over the actions (Bonferroni), and within
[0, 1]. Standard errors are robust to heteroskedasticity, and clustered by customer when
a customer has rows in several stacked campaigns.

The average effect is spread over the customers by the room each has for it
(:func:`risk_shape`): a contact can raise the chance to buy only of a customer who would
otherwise not buy, so a positive effect is taken as proportional to the churn
probability, a negative one (the sleeping dogs) to the chance to buy. The slope then
measures the score's heterogeneity beyond that shape.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def shrunk(estimate: float, se: float) -> float:
    """Shrunk toward 0 by its own signal to noise: ``estimate x max(0, 1 - se^2 /
    estimate^2)`` (0 within one standard error)."""
    if estimate == 0 or not np.isfinite(se):
        return 0.0
    return float(estimate * max(0.0, 1.0 - (se / estimate) ** 2))


def risk_shape(risk: np.ndarray | None, ate: float, risk_mean: float | None) -> np.ndarray | float:
    """How an average effect ``ate`` spreads over customers of churn probability ``risk``
    (``risk_mean`` its mean over the action's training rows), with mean 1 over those
    rows: ``risk / risk_mean`` for a positive effect (only a customer who would not buy
    can be made to), ``(1 - risk) / (1 - risk_mean)`` for a negative one (only one who
    would buy can be put off). Without the churn probability, or when it does not vary
    the way the shape needs (a mean of 0 or 1), every customer gets the average: 1. A
    missing probability counts as the mean."""
    if risk is None or risk_mean is None or ate == 0:
        return 1.0
    room, mean = (risk, risk_mean) if ate > 0 else (1.0 - risk, 1.0 - risk_mean)
    if not mean > 1e-9:
        return 1.0
    return np.nan_to_num(np.clip(room, 0.0, 1.0) / mean, nan=1.0)


def mean_risk(risk: np.ndarray | None) -> float | None:
    """The mean churn probability (within [0, 1], missing ones left out); ``None``
    without any."""
    if risk is None or not np.isfinite(risk).any():
        return None
    return float(np.nanmean(np.clip(risk, 0.0, 1.0)))


def calibration(
    phi: np.ndarray,
    score: np.ndarray,
    tests: int = 1,
    clusters: np.ndarray | None = None,
    risk: np.ndarray | None = None,
) -> dict[str, float]:
    """The best linear predictor of the pseudo-outcomes ``phi`` from the out-of-fold
    ranking ``score`` (see the module docstring): the average effect and the
    slope, each with its standard error (the slope's robust to heteroskedasticity) and
    shrunk toward 0; ``center`` is the score's mean. The slope is kept only when the
    one-sided test of "no heterogeneity" rejects at 5% over ``tests`` actions
    (Bonferroni: ``slope_p < 0.05 / tests``), then shrunk and kept within [0, 1]. With
    ``clusters`` (a customer's rows in several campaigns), both standard errors are
    clustered by them. With ``risk`` (each row's churn probability), the average effect
    is spread by :func:`risk_shape`, weighted by ``shape_weight``: the pseudo-outcomes
    regressed on what the shape adds to the average give a weight (1: the shape holds,
    0: no sign of it, below: reversed), moved from 1 only by what exceeds its standard
    error (:func:`shrunk`) and kept within [0, 1]; the slope is fitted to what the
    weighted shape leaves. ``risk_mean`` is returned for predictions (``None`` without
    ``risk``)."""
    n = len(phi)
    ate = float(phi.mean())
    risk_mean = mean_risk(risk)
    ate_se = float(phi.std(ddof=1) / np.sqrt(n))  # n >= 2 (an action has a row per fold)
    if clusters is not None:
        ate_se = float(np.sqrt((cluster_sums(phi - ate, clusters) ** 2).sum()) / n)
    # the shape is a prior the data may overrule: regressed on what it adds to the
    # average, a weight of 1 keeps it, 0 drops it; moved from 1 only beyond its noise
    deviation = ate * (np.asarray(risk_shape(risk, ate, risk_mean), dtype=float) - 1.0)
    weight, weight_raw, weight_se = 1.0, 1.0, 0.0
    size = float(np.dot(deviation, deviation)) if deviation.ndim else 0.0
    if size > 1e-12:
        weight_raw = float(deviation @ (phi - ate) / size)
        terms = deviation * (phi - ate - weight_raw * deviation)
        if clusters is not None:
            terms = cluster_sums(terms, clusters)
        weight_se = float(np.sqrt((terms**2).sum()) / size)
        weight = float(np.clip(1.0 + shrunk(weight_raw - 1.0, weight_se), 0.0, 1.0))
    left = phi - ate - weight * deviation
    center = float(score.mean())
    c = score - center
    spread = float(c @ c)
    slope_raw, slope_se, slope_p = 0.0, 0.0, 1.0  # a constant score: no slope to estimate
    if spread > 1e-12 * max(n, 1):
        slope_raw = float(c @ left / spread)
        terms = c * (left - slope_raw * c)
        if clusters is not None:
            terms = cluster_sums(terms, clusters)
        slope_se = float(np.sqrt((terms**2).sum()) / spread)
        if slope_se > 0:
            slope_p = 0.5 * math.erfc(slope_raw / slope_se / math.sqrt(2))
        elif slope_raw > 0:  # an exact fit
            slope_p = 0.0
    kept = slope_p < 0.05 / max(tests, 1)
    return {
        "ate_raw": ate,
        "ate_se": ate_se,
        "ate": shrunk(ate, ate_se),
        "slope_raw": slope_raw,
        "slope_se": slope_se,
        "slope_p": slope_p,
        "slope": float(np.clip(shrunk(slope_raw, slope_se), 0.0, 1.0)) if kept else 0.0,
        "center": center,
        "risk_mean": risk_mean,
        "shape_weight_raw": weight_raw,
        "shape_weight_se": weight_se,
        "shape_weight": weight,
    }


def calibrated_uplift(
    fitted: dict[str, Any], score: np.ndarray, risk: np.ndarray | None
) -> np.ndarray:
    """``ate x shape(risk) + slope x (score - center)`` within [-1, 1], the shape weighted
    by ``shape_weight`` (a model saved before the shape has no ``risk_mean``: shape 1)."""
    shape = risk_shape(risk, fitted["ate"], fitted.get("risk_mean"))
    shape = 1.0 + fitted.get("shape_weight", 1.0) * (np.asarray(shape) - 1.0)
    return np.clip(fitted["ate"] * shape + fitted["slope"] * (score - fitted["center"]), -1.0, 1.0)


def cross_calibrated(
    phi: np.ndarray,
    score: np.ndarray,
    risk: np.ndarray | None,
    fold: np.ndarray,
    clusters: np.ndarray | None,
    tests: int,
) -> np.ndarray:
    """One action's out-of-fold uplift: each fold's rows calibrated on the other folds'
    (so that no customer's own outcome sets the effect its ranking is judged by)."""
    out = np.empty(len(phi))
    for k in np.unique(fold):
        held, rest = fold == k, fold != k
        part = calibration(
            phi[rest], score[rest], tests, None if clusters is None else clusters[rest],
            None if risk is None else risk[rest],
        )  # fmt: skip
        out[held] = calibrated_uplift(part, score[held], None if risk is None else risk[held])
    return out


def common_effect(ate: np.ndarray, se: np.ndarray, risk_mean: np.ndarray) -> float:
    """What the actions do on average, per unit of churn risk: the precision-weighted mean
    of each action's effect over its customers' mean risk (the raw effect where
    ``risk_mean`` is NaN), shrunk toward 0 by its own standard error (:func:`shrunk`).
    The prior of a contact action without a model of its own (too few customers)."""
    ate, se = np.asarray(ate, dtype=float), np.asarray(se, dtype=float)
    scale = np.where(np.isfinite(risk_mean) & (np.asarray(risk_mean) > 1e-9), risk_mean, 1.0)
    theta, weight = ate / scale, 1.0 / np.maximum(se / scale, 1e-12) ** 2
    return shrunk(float(weight @ theta / weight.sum()), float(1.0 / np.sqrt(weight.sum())))


def prior(fitted: list[dict[str, Any]], risk: np.ndarray | None) -> dict[str, Any]:
    """The uplift of a contact action without a model of its own, from the fitted
    actions' :func:`calibration` results: their :func:`common_effect` spread by risk
    (``risk``: the churn probability over every fitted action's rows), no slope."""
    means = np.array([np.nan if f["risk_mean"] is None else f["risk_mean"] for f in fitted])
    raw, se = np.array([f["ate_raw"] for f in fitted]), np.array([f["ate_se"] for f in fitted])
    theta = common_effect(raw, se, means)
    mean = mean_risk(risk)
    return {
        "ate": theta * (1.0 if mean is None else mean),
        "slope": 0.0,
        "center": 0.0,
        "risk_mean": mean,
        "theta": theta,
    }


def cluster_sums(values: np.ndarray, clusters: np.ndarray) -> np.ndarray:
    """``values`` summed within each cluster."""
    _, inverse = np.unique(clusters, return_inverse=True)
    return np.bincount(inverse, weights=values)
