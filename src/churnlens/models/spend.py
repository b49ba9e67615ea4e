"""Gamma-Gamma model of the mean spend per transaction, fitted by maximum likelihood.

Each transaction's value is Gamma(p, ν) (shape p, rate ν) around a customer's own mean p/ν,
and ν is Gamma(q, γ) across customers (``v`` below is γ), independently of the purchase
process. The model is fitted on customers with ``x >= 1`` repeat transactions and a positive
mean repeat-transaction value ``m_x``. References: Fader, Hardie and Lee (2005), "RFM and
CLV: Using Iso-Value Curves for Customer Base Analysis", Journal of Marketing Research 42(4);
Fader and Hardie (2013), "The Gamma-Gamma Model of Monetary Value", brucehardie.com/notes/025
(likelihood eq. 1a, conditional expectation eq. 5).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import digamma, gammaln

from churnlens.errors import ModelError
from churnlens.models.btyd import (
    FloatArray,
    Serialisable,
    as_floats,
    check_columns,
    maximise,
    weighted_sum,
)


def gamma_gamma_log_likelihood(
    p: float, q: float, v: float, x: ArrayLike, m_x: ArrayLike
) -> FloatArray:
    """Per-customer log density of the mean spend ``m_x`` over ``x >= 1`` transactions.

    log f = log Γ(px+q) - log Γ(px) - log Γ(q) + q log γ + (px-1) log m_x + px log x
    - (px+q) log(γ + x m_x): x m_x is Gamma(px, ν) given ν, mixed over ν ~ Gamma(q, γ).
    """
    x, m_x = as_floats(x, m_x)
    px = p * x
    return (
        gammaln(px + q) - gammaln(px) - gammaln(q) + q * math.log(v) + (px - 1) * np.log(m_x)
        + px * np.log(x) - (px + q) * np.log(v + x * m_x)
    )  # fmt: skip


@dataclass(frozen=True)
class GammaGamma(Serialisable):
    """A fitted Gamma-Gamma spend model: parameters ``p``, ``q``, ``v`` (= γ)."""

    p: float
    q: float
    v: float
    log_likelihood: float
    n: int

    def population_mean(self) -> float:
        """E[spend per transaction] of a customer with no repeat purchase yet: γp/(q-1).

        ``inf`` when q <= 1 (the mean of the mixing distribution does not exist).
        """
        return float(self.conditional_expected_average_profit(0, 0))

    def conditional_expected_average_profit(self, x: ArrayLike, m_x: ArrayLike) -> FloatArray:
        """E[mean spend | x, m_x] = (q-1)/(px+q-1) γp/(q-1) + px/(px+q-1) m_x, eq. 5.

        That is p(γ + x m_x)/(px+q-1), the posterior mean of p/ν; ``m_x`` is ignored when
        ``x == 0`` (the population mean), and the value is ``inf`` when px + q <= 1.
        """
        x, m_x = as_floats(x, m_x)
        den = self.p * x + self.q - 1
        value = self.p * (self.v + x * np.where(x > 0, m_x, 0.0)) / np.where(den > 0, den, 1.0)
        return np.where(den > 0, value, math.inf)


def fit_gamma_gamma(x: ArrayLike, m_x: ArrayLike, weights: ArrayLike | None = None) -> GammaGamma:
    """Fit the Gamma-Gamma model by maximum likelihood (analytic gradient, L-BFGS-B on logs).

    Parameters
    ----------
    x
        Repeat transactions per customer; rows with ``x == 0`` or ``m_x <= 0`` are left out.
    m_x
        Mean value of those repeat transactions.
    weights
        Number of customers on each row (default 1).

    Returns
    -------
    GammaGamma
        The parameters, the total log-likelihood and ``n``, the customers used.

    Raises
    ------
    InputError
        On invalid columns (negative or fractional counts, non-finite values).
    ModelError
        With fewer than 2 customers with ``x >= 1`` and ``m_x > 0``, or if the optimiser fails.
    """
    x, m_x = as_floats(x, m_x)
    m_x = np.where(x > 0, m_x, 0.0)  # the mean of no repeat transaction may be NaN
    d = check_columns("Gamma-Gamma fit", x=x, m_x=m_x, weights=weights)
    keep = (d["x"] > 0) & (d["m_x"] > 0) & (d["weights"] > 0)
    x, m, w = d["x"][keep], d["m_x"][keep], d["weights"][keep]
    if w.sum() < 2:
        raise ModelError("Gamma-Gamma fit: need at least 2 customers with x >= 1 and m_x > 0")
    total, log_x, log_m = float(w.sum()), np.log(x), np.log(m)

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        p, q, v = np.exp(theta)
        px, log_vxm = p * x, np.log(v + x * m)
        d_pq = digamma(px + q)
        ll = gamma_gamma_log_likelihood(p, q, v, x, m)
        grads = (
            px * (d_pq - digamma(px) + log_m + log_x - log_vxm),
            q * (d_pq - digamma(q) + math.log(v) - log_vxm),
            q - v * (px + q) / (v + x * m),
        )
        return -weighted_sum(w, ll) / total, np.array([-weighted_sum(w, g) / total for g in grads])

    # moment start: q = 2 makes the population mean γp/(q-1) = γp equal the mean of m_x
    start = [1.0, 2.0, weighted_sum(w, m) / total]
    params, nll = maximise(objective, start, ("p", "q", "v"), True)
    return GammaGamma(*params, log_likelihood=-nll * total, n=int(total))


def simulate_gamma_gamma(
    p: float, q: float, v: float, x: ArrayLike, rng: np.random.Generator
) -> FloatArray:
    """Draw the mean spend ``m_x`` of ``x >= 1`` transactions for each customer (0 if x == 0)."""
    (x,) = as_floats(x)
    nu = rng.gamma(q, 1.0 / v, x.shape)
    total = rng.gamma(np.maximum(p * x, 1e-300), 1.0 / nu)
    return np.where(x > 0, total / np.maximum(x, 1), 0.0)
