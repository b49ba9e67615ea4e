"""How well a ranking finds the customers a contact moves: Qini and uplift curves.

The data are a randomised experiment: per customer a score (the predicted uplift, or any
ranking), whether they were treated (contacted) or kept as a control, and the outcome
(1 when they bought within the horizon; any number works). Customers are sorted by score,
highest first; ties keep their original order (a stable sort), so the curves are
reproducible and a tie is never resolved in the ranking's favour. For the first ``k`` of
the ``N`` customers:

- ``n_t(k)``, ``n_c(k)``: treated and control customers among them;
- ``Y_t(k)``, ``Y_c(k)``: the sum of the outcome of those treated and of those controls;
- ``qini(k) = Y_t(k) - Y_c(k) * n_t(k) / n_c(k)`` (0 while ``n_c(k) = 0``): Radcliffe's
  Qini curve, the incremental outcomes (extra buyers) among the treated of the top ``k``,
  the controls' outcomes scaled to the treated group's size (Radcliffe, "Using control
  groups to target on predicted lift", Direct Marketing Analytics Journal, 2007);
- ``uplift(k) = (Y_t(k) / n_t(k) - Y_c(k) / n_c(k)) * (n_t(k) + n_c(k))`` (0 while either
  group is empty): the uplift (cumulative gain) curve, the difference in outcome rates
  times everyone in the top ``k``, as in Gutierrez & Gérardy, "Causal inference and uplift
  modelling: a review of the literature", PMLR 67, 2017;
- ``fraction = k / N``, the share of customers targeted. Every curve starts at the
  origin (``k = 0``, everything 0).

Random targeting expects a straight line from the origin to the curve's end: ``random(k)
= fraction * qini(N)`` (``uplift(N) * fraction`` for the uplift curve). Areas are over the
fraction targeted in [0, 1], by the trapezoidal rule on the ``N + 1`` points (origin
included), each step ``1 / N`` wide:

- :func:`qini_coefficient` = area under the Qini curve - :func:`random_qini`, the area
  under the random line (``qini(N) / 2``). It is in incremental outcomes (buyers), so it
  grows with ``N``: positive when the ranking beats random targeting, 0 for random
  targeting, negative when it is worse (it puts those the contact puts off first);
- :func:`auuc` = area under the uplift curve / ``N``: the area per customer, in outcome
  per customer (a rate), comparable across data sets of different sizes; random
  targeting gets ``uplift(N) / (2 N)``, half the average treatment effect
  (:func:`uplift_summary` gives it as ``auuc_random``);
- :func:`qini_at` = ``qini(k)`` with ``k`` = ``fraction * N`` rounded half up: the
  incremental outcomes among the top ``fraction``.

The ranking is all that counts: any strictly increasing transform of the score gives the
same curves. Scores may be infinite (``-inf`` ranks last, say, for a customer with no
score), never NaN.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

CURVE_COLUMNS = (
    "k",
    "fraction",
    "n_t",
    "n_c",
    "y_t",
    "y_c",
    "qini",
    "uplift",
    "qini_random",
    "uplift_random",
)


def _inputs(score: Any, treated: Any, outcome: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(score, dtype=np.float64).ravel()
    t = np.asarray(treated).ravel()
    y = np.asarray(outcome, dtype=np.float64).ravel()
    if not (len(s) == len(t) == len(y)):
        raise ValueError(
            f"score, treated and outcome differ in length ({len(s)}, {len(t)}, {len(y)})"
        )
    if len(s) == 0:
        raise ValueError("no customers to evaluate")
    if np.isnan(s).any():  # -inf and inf rank last and first; NaN has no place
        raise ValueError(f"{int(np.isnan(s).sum())} score(s) are NaN")
    if not np.isfinite(y).all():
        raise ValueError(f"{int((~np.isfinite(y)).sum())} outcome(s) are not finite")
    if t.dtype != bool:
        values = np.unique(t)
        if not np.isin(values, [0, 1]).all():
            raise ValueError(f"treated must be boolean or 0/1, found {values[:5].tolist()}")
        t = t.astype(bool)
    return s, t, y


def uplift_curve(score: Any, treated: Any, outcome: Any) -> pd.DataFrame:
    """The Qini and uplift curves at every cut ``k`` = 0..N (see the module docstring).

    Columns: ``k``, ``fraction``, ``n_t``, ``n_c``, ``y_t``, ``y_c``, ``qini``, ``uplift``
    and the random-targeting lines ``qini_random`` and ``uplift_random``; ``N + 1`` rows,
    the first the origin.
    """
    s, t, y = _inputs(score, treated, outcome)
    order = np.argsort(-s, kind="stable")
    t, y = t[order], y[order]
    n = len(s)
    k = np.arange(n + 1)
    n_t = np.concatenate([[0], np.cumsum(t)]).astype(np.int64)
    n_c = k - n_t
    y_t = np.concatenate([[0.0], np.cumsum(np.where(t, y, 0.0))])
    y_c = np.concatenate([[0.0], np.cumsum(np.where(t, 0.0, y))])
    with np.errstate(divide="ignore", invalid="ignore"):
        rate_t = np.where(n_t > 0, y_t / np.maximum(n_t, 1), 0.0)
        rate_c = np.where(n_c > 0, y_c / np.maximum(n_c, 1), 0.0)
    qini = np.where(n_c > 0, y_t - rate_c * n_t, 0.0)
    uplift = np.where((n_t > 0) & (n_c > 0), (rate_t - rate_c) * (n_t + n_c), 0.0)
    fraction = k / n
    return pd.DataFrame(
        {
            "k": k,
            "fraction": fraction,
            "n_t": n_t,
            "n_c": n_c,
            "y_t": y_t,
            "y_c": y_c,
            "qini": qini,
            "uplift": uplift,
            "qini_random": fraction * qini[-1],
            "uplift_random": fraction * uplift[-1],
        }
    )


def _area(curve: pd.DataFrame, column: str) -> float:
    return float(np.trapezoid(curve[column].to_numpy(), curve["fraction"].to_numpy()))


SUMMARY = ("qini", "qini_random", "auuc", "auuc_random", "incremental")  # uplift_summary's keys


def _summary(curve: pd.DataFrame) -> dict[str, float]:
    n = int(curve["k"].iloc[-1])
    qini_end = float(curve["qini"].iloc[-1])
    uplift_end = float(curve["uplift"].iloc[-1])
    return {
        "qini": _area(curve, "qini") - qini_end / 2,
        "qini_random": qini_end / 2,
        "auuc": _area(curve, "uplift") / n,
        "auuc_random": uplift_end / (2 * n),
        "incremental": qini_end,
    }


def qini_coefficient(score: Any, treated: Any, outcome: Any) -> float:
    """The area between the Qini curve and the random line over the fraction targeted."""
    return _summary(uplift_curve(score, treated, outcome))["qini"]


def random_qini(score: Any, treated: Any, outcome: Any) -> float:
    """The area under the random-targeting line, ``qini(N) / 2`` (the score only fixes
    which customers are counted; the order does not matter)."""
    return _summary(uplift_curve(score, treated, outcome))["qini_random"]


def auuc(score: Any, treated: Any, outcome: Any) -> float:
    """The area under the uplift curve over the fraction targeted, divided by ``N``."""
    return _summary(uplift_curve(score, treated, outcome))["auuc"]


def qini_at(score: Any, treated: Any, outcome: Any, fraction: float) -> float:
    """``qini(k)``: the incremental outcomes among the top ``fraction`` of customers
    (``k = fraction * N`` rounded half up)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    curve = uplift_curve(score, treated, outcome)
    n = int(curve["k"].iloc[-1])
    k = min(n, math.floor(fraction * n + 0.5))
    return float(curve["qini"].iloc[k])


def uplift_summary(score: Any, treated: Any, outcome: Any) -> dict[str, float]:
    """Every number above from one sort: ``qini`` (:func:`qini_coefficient`),
    ``qini_random`` (:func:`random_qini`), ``auuc``, ``auuc_random`` (the random line's
    area / ``N``) and ``incremental`` (``qini(N)``, the incremental outcomes of treating
    everyone)."""
    return _summary(uplift_curve(score, treated, outcome))


def thin(curve: pd.DataFrame, points: int = 101) -> pd.DataFrame:
    """About ``points`` rows of a curve, evenly spread over the fraction targeted (the
    origin and the end kept): enough to plot, small enough to store."""
    n = int(curve["k"].iloc[-1])
    keep = np.unique(np.rint(np.linspace(0, n, max(points, 2))).astype(np.int64))
    return curve.iloc[keep].reset_index(drop=True)


def uplift_plot(
    curves: dict[str, pd.DataFrame], title: str = "Qini curve", column: str = "qini"
) -> Figure:
    """A matplotlib ``Figure`` with one line per ranking (``column``: ``"qini"`` or
    ``"uplift"``) against the fraction targeted, and the random-targeting line (one per
    ranking when the curves end at different points, say, from different data)."""
    from matplotlib.figure import Figure

    if column not in ("qini", "uplift"):
        raise ValueError(f"column must be 'qini' or 'uplift', got {column!r}")
    fig = Figure(figsize=(6, 4.5), dpi=100)
    ax = fig.subplots()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ends = {name: float(c[column].iloc[-1]) for name, c in curves.items()}
    shared = len({round(v, 9) for v in ends.values()}) <= 1
    for i, (name, curve) in enumerate(curves.items()):
        ax.plot(curve["fraction"], curve[column], color=f"C{i}", label=name)
        if not shared:
            ax.plot([0, 1], [0, ends[name]], ":", color=f"C{i}", lw=1, label=f"{name}: random")
    if shared and ends:
        ax.plot([0, 1], [0, next(iter(ends.values()))], "k:", lw=1, label="random")
    ylabel = "incremental outcomes" if column == "qini" else "uplift x customers targeted"
    ax.set(xlabel="fraction targeted", ylabel=ylabel)
    if curves:
        ax.legend()
    return fig


def ranking_check(
    phi: np.ndarray,
    uplift: np.ndarray,
    risk: np.ndarray | None,
    value: np.ndarray | None,
    share: float = 0.2,
) -> dict[str, Any] | None:
    """Does ranking by incremental value beat value at risk on the learning campaigns?

    The doubly robust pseudo-outcomes ``phi`` (their mean over a set of customers chosen
    without their own outcomes estimates its true mean uplift) averaged over the top
    ``share`` by out-of-fold incremental value (``uplift x value``, ties by value at risk)
    and by value at risk (``risk x value``): incremental buyers per contact of each, the
    paired standard error of their difference, and ``ranks_by_increment``: whether the
    first is higher. ``None`` without the churn probability or the value."""
    if risk is None or value is None or len(phi) == 0:
        return None
    v = np.nan_to_num(np.asarray(value, dtype=float), nan=0.0)
    at_risk = np.nan_to_num(np.asarray(risk, dtype=float), nan=0.0) * v
    n = max(1, round(share * len(phi)))
    increment = np.nan_to_num(np.asarray(uplift, dtype=float), nan=0.0) * v
    tops = {
        "incremental_value": np.lexsort((-at_risk, -increment))[:n],
        "value_at_risk": np.argsort(-at_risk, kind="stable")[:n],
    }
    out: dict[str, Any] = {"share": share, "customers": n}
    weight = np.zeros(len(phi))
    for sign, (name, top) in zip((1.0, -1.0), tops.items(), strict=True):
        out[name] = float(np.mean(phi[top]))
        weight[top] += sign / n
    out["difference_se"] = float(np.sqrt(np.sum((weight * (phi - np.mean(phi))) ** 2)))
    out["ranks_by_increment"] = bool(out["incremental_value"] > out["value_at_risk"])
    return out
