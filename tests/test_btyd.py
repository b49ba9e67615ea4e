"""Tests of the buy-till-you-die models: churnlens.models.btyd (BG/NBD, Pareto/NBD) and
churnlens.models.spend (Gamma-Gamma).

Published values reproduced on the CDNOW 1/10th sample (``data/external/CDNOW_sample.txt``,
fetched by ``make data``): Fader, Hardie and Lee (2005), "Counting Your Customers the Easy
Way", Marketing Science 24(2): BG/NBD r = 0.243, alpha = 4.414, a = 0.793, b = 2.426
(LL -9582.4) and, for comparison, Pareto/NBD r = 0.553, alpha = 10.578, s = 0.606,
beta = 11.669 (LL -9595.0); Fader, Hardie and Lee (2005), "RFM and CLV", JMR 42(4), and
Fader and Hardie (2013), "The Gamma-Gamma Model of Monetary Value": p = 6.25, q = 3.74,
gamma = 15.44 (LL -4055.9, as in CLVTools' correctness tests).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy.optimize import OptimizeResult
from scipy.special import hyp2f1

import churnlens.models.btyd as btyd
from churnlens.errors import InputError, ModelError
from churnlens.models.btyd import (
    BGNBD,
    bgnbd_log_likelihood,
    compress,
    fit_bgnbd,
    simulate_bgnbd,
)
from churnlens.models.pareto_nbd import (
    ParetoNBD,
    fit_pareto_nbd,
    pareto_nbd_log_likelihood,
    simulate_pareto_nbd,
)
from churnlens.models.spend import (
    GammaGamma,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood,
    simulate_gamma_gamma,
)
from tests.conftest import ROOT

CDNOW_SAMPLE = ROOT / "data" / "external" / "CDNOW_sample.txt"
CALIBRATION_END = pd.Timestamp("1997-09-30")


# ---------------------------------------------------------------------------- CDNOW data


@pytest.fixture(scope="module")
def cdnow_sample_path() -> Path:
    if not CDNOW_SAMPLE.exists():
        pytest.fail(f"{CDNOW_SAMPLE} is missing: run `make data` to fetch it")
    return CDNOW_SAMPLE


def calibration_summary(path: Path) -> pd.DataFrame:
    """x, t_x, T (weeks) and m_x per customer of the sample, calibration to 1997-09-30.

    The file has no header: customer id, sample id (1..2357), date YYYYMMDD, CDs, dollars.
    Transactions on the same day are one purchase (amounts summed): x counts repeat purchase
    days, t_x and T run from the first purchase day to the last one and to 1997-09-30
    (transactions on that day included), in days / 7; m_x is the mean of the repeat days'
    amounts. This is lifetimes' ``summary_data_from_transaction_data`` recipe and matches
    its ``cdnow_customers_summary_with_transactions.csv`` row for row.
    """
    log = pd.read_csv(
        path,
        sep=r"\s+",
        header=None,
        names=["customer", "id", "date", "cds", "amount"],
        dtype={"customer": str, "id": str, "date": str},
    )
    log["date"] = pd.to_datetime(log["date"], format="%Y%m%d")
    days = (
        log[log["date"] <= CALIBRATION_END]
        .groupby(["id", "date"], as_index=False)["amount"]
        .sum()
        .sort_values(["id", "date"])
    )
    days["repeat"] = days.groupby("id").cumcount() > 0
    per = days.groupby("id").agg(first=("date", "min"), last=("date", "max"), n=("date", "size"))
    out = pd.DataFrame(
        {
            "x": (per["n"] - 1).astype(float),
            "t_x": (per["last"] - per["first"]).dt.days / 7,
            "T": (CALIBRATION_END - per["first"]).dt.days / 7,
        }
    )
    out["m_x"] = days[days["repeat"]].groupby("id")["amount"].mean().reindex(out.index).fillna(0)
    return out


@pytest.fixture(scope="module")
def cdnow(cdnow_sample_path: Path) -> pd.DataFrame:
    return calibration_summary(cdnow_sample_path)


def rel(got: float, want: float) -> float:
    return abs(got - want) / abs(want)


@pytest.mark.cdnow
def test_cdnow_sample_summary(cdnow: pd.DataFrame) -> None:
    """The calibration summary has the sample's shape (2,357 customers, 946 repeaters)."""
    assert len(cdnow) == 2357
    assert int((cdnow["x"] > 0).sum()) == 946
    assert cdnow["x"].sum() == 2457
    assert cdnow["T"].max() == pytest.approx(272 / 7)  # first purchase on 1997-01-01
    assert (cdnow["t_x"] <= cdnow["T"]).all()


@pytest.mark.cdnow
def test_bgnbd_reproduces_fader_hardie_lee_2005(cdnow: pd.DataFrame) -> None:
    """BG/NBD on the 39-week calibration period: the published estimates within 1%.

    Only the per-day convention above reproduces them; counting every transaction gives
    r = 0.218, alpha = 3.27, a = 0.80, b = 2.29 (LL -9743.9), leaving out 1997-09-30's
    transactions r = 0.238, alpha = 4.30, a = 0.85, b = 2.57, and T one day longer
    r = 0.242, alpha = 4.39, a = 0.81, b = 2.48.
    """
    model = fit_bgnbd(cdnow["x"], cdnow["t_x"], cdnow["T"])
    published = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    for name, value in published.items():
        assert rel(getattr(model, name), value) < 0.01, (name, getattr(model, name))
    assert model.log_likelihood == pytest.approx(-9582.4, abs=0.1)
    assert model.n == 2357
    per_customer = bgnbd_log_likelihood(*published.values(), cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert per_customer.sum() == pytest.approx(-9582.4, abs=0.1)
    # the sample's mean expected repeat purchases in the next 39 weeks, a sanity bound
    future = model.conditional_expected_purchases(39, cdnow["x"], cdnow["t_x"], cdnow["T"])
    assert 0.5 < future.mean() < 1.5


@pytest.mark.cdnow
def test_pareto_nbd_reproduces_published_values(cdnow: pd.DataFrame) -> None:
    """Pareto/NBD on the same data: FHL (2005) report r = 0.553, alpha = 10.578, s = 0.606,
    beta = 11.669, LL -9595.0 (CLVTools asserts the same). s and beta are weakly identified
    (standard error of beta ~6.2), so beta gets 1% and the likelihood 0.05."""
    model = fit_pareto_nbd(cdnow["x"], cdnow["t_x"], cdnow["T"])
    published = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
    for name, value in published.items():
        assert rel(getattr(model, name), value) < 0.01, (name, getattr(model, name))
    assert model.log_likelihood == pytest.approx(-9595.0, abs=0.05)
    per_customer = pareto_nbd_log_likelihood(
        *published.values(), *cdnow[["x", "t_x", "T"]].T.values
    )
    assert per_customer.sum() == pytest.approx(-9595.0, abs=0.05)


@pytest.mark.cdnow
def test_gamma_gamma_reproduces_published_values(cdnow: pd.DataFrame) -> None:
    """Gamma-Gamma on the 946 customers with a repeat purchase: p = 6.25, q = 3.74,
    gamma = 15.44 (we get 6.2496, 3.7442, 15.4435; LL -4055.92) within 1%."""
    model = fit_gamma_gamma(cdnow["x"], cdnow["m_x"])
    assert model.n == 946
    for name, value in {"p": 6.25, "q": 3.74, "v": 15.44}.items():
        assert rel(getattr(model, name), value) < 0.01, (name, getattr(model, name))
    assert model.log_likelihood == pytest.approx(-4055.92, abs=0.05)
    repeat = cdnow[cdnow["x"] > 0]
    per_customer = gamma_gamma_log_likelihood(6.25, 3.74, 15.44, repeat["x"], repeat["m_x"])
    assert per_customer.sum() == pytest.approx(-4055.92, abs=0.01)
    # population mean gamma p / (q - 1) = 35.17 dollars
    assert model.population_mean() == pytest.approx(15.4435 * 6.2496 / 2.7442, rel=1e-3)


# ------------------------------------------------------------------ hand-computed values


def bgnbd_ll_by_hand(r: float, alpha: float, a: float, b: float, x: int, tx: float, T: float):
    """Eq. 6 of FHL (2005) written out with the beta functions, not the a/(b+x-1) form."""

    def lbeta(p: float, q: float) -> float:
        return math.lgamma(p) + math.lgamma(q) - math.lgamma(p + q)

    nbd = math.lgamma(r + x) - math.lgamma(r) + r * math.log(alpha)
    alive = math.exp(lbeta(a, b + x) - lbeta(a, b) + nbd - (r + x) * math.log(alpha + T))
    if x == 0:
        return math.log(alive)
    dead = math.exp(lbeta(a + 1, b + x - 1) - lbeta(a, b) + nbd - (r + x) * math.log(alpha + tx))
    return math.log(alive + dead)


@pytest.mark.parametrize(
    ("params", "row"),
    [
        ((0.7, 2.5, 0.9, 3.1), (2, 3.5, 6.0)),
        ((0.243, 4.414, 0.793, 2.426), (0, 0.0, 38.86)),
        ((1.5, 0.8, 2.0, 0.6), (1, 0.5, 9.0)),  # b < 1 with x = 1: b + x - 1 = b
        ((0.243, 4.414, 0.793, 2.426), (30, 37.5, 38.0)),
    ],
)
def test_bgnbd_log_likelihood_by_hand(params: tuple, row: tuple) -> None:
    got = float(bgnbd_log_likelihood(*params, *row))
    assert got == pytest.approx(bgnbd_ll_by_hand(*params, *row), rel=1e-12, abs=1e-12)


def pnbd_ll_by_integration(r: float, alpha: float, s: float, beta: float, x: int, tx, T):
    """log of the individual Pareto/NBD likelihood integrated over lambda and mu.

    Given lambda, mu: L = lambda^x e^-(lambda+mu)T + lambda^x mu/(lambda+mu)
    (e^-(lambda+mu)t_x - e^-(lambda+mu)T) [Fader-Hardie note 009, eq. 3], mixed over
    lambda ~ Gamma(r, alpha) and mu ~ Gamma(s, beta), in log scale for the quadrature.
    """

    def integrand(v: float, u: float) -> float:
        lam, mu = math.exp(u), math.exp(v)
        both = lam + mu
        given = lam**x * math.exp(-both * T)
        given += lam**x * mu / both * (math.exp(-both * tx) - math.exp(-both * T))
        log_prior = (
            r * math.log(alpha) + r * u - alpha * lam - math.lgamma(r)
            + s * math.log(beta) + s * v - beta * mu - math.lgamma(s)
        )  # fmt: skip
        return given * math.exp(log_prior)

    value, _ = integrate.dblquad(integrand, -40, 8, -40, 8, epsabs=0, epsrel=1e-11)
    return math.log(value)


@pytest.mark.parametrize(
    ("params", "row"),
    [
        ((0.8, 3.0, 1.3, 9.0), (3, 4.5, 6.0)),  # alpha < beta
        ((1.2, 7.0, 1.7, 2.5), (2, 1.0, 5.0)),  # alpha > beta
        ((1.2, 7.0, 0.7, 7.0), (1, 2.0, 5.0)),  # alpha == beta
        ((0.8, 3.0, 1.3, 9.0), (0, 0.0, 5.0)),
        ((1.1, 2.0, 1.4, 5.0), (2, 6.0, 6.0)),  # t_x == T: A_0 = 0
    ],
)
def test_pareto_nbd_log_likelihood_by_integration(params: tuple, row: tuple) -> None:
    got = float(pareto_nbd_log_likelihood(*params, *row))
    assert got == pytest.approx(pnbd_ll_by_integration(*params, *row), rel=1e-8)


def test_pareto_nbd_alpha_equals_beta_closed_form() -> None:
    """With alpha == beta, A_0 = (alpha+t_x)^-(r+s+x) - (alpha+T)^-(r+s+x) (z = 0); the
    implementation must be continuous there (alpha = beta (1 + 1e-9) on both sides)."""
    r, s, x, tx, T = 0.8, 0.9, 3, 4.5, 6.0
    for alpha in (5.0, 500.0):
        rsx = r + s + x
        a0 = (alpha + tx) ** -rsx - (alpha + T) ** -rsx
        head = math.lgamma(r + x) - math.lgamma(r) + (r + s) * math.log(alpha)
        want = head + math.log((alpha + T) ** -(r + x) * (alpha + T) ** -s + s / rsx * a0)
        for beta in (alpha, alpha * (1 + 1e-9), alpha * (1 - 1e-9)):
            got = float(pareto_nbd_log_likelihood(r, alpha, s, beta, x, tx, T))
            assert got == pytest.approx(want, rel=1e-9)


# mpmath 1.4.1 at 50 digits, from the hyp2f1 closed form of eqs. 18-20 (Fader-Hardie 009):
# (r, alpha, s, beta, x, t_x, T) -> (log-likelihood, P(alive)). scipy's hyp2f1 returns nan
# or inf for the first three on the textbook arguments; the second is CLVTools' regression
# case "PAlive that produced NaNs in previous implementation".
MPMATH_CASES = [
    ((0.7, 1e7, 0.9, 1e-7, 500, 700.0, 730.0), (-5470.2816066023108, 0.96290935688198899)),
    (
        (0.5143, 2.8845, 0.2856, 14.1087, 221, 103.42857, 103.57143),
        (-61.58464856172922, 0.9995960523179381),
    ),
    ((1.0, 2000.0, 1.0, 0.5, 400, 3.0, 700.0), (-1043.1555410447212, 1.0491361527455681e-54)),
    ((2.0, 0.01, 1.0, 300.0, 50, 1.0, 500.0), (133.0493874507361, 4.3168766427542933e-137)),
    ((0.8, 5.0, 0.9, 5.0, 3, 4.5, 6.0), (-6.9659162144123965, 0.84039388542175889)),
]


@pytest.mark.parametrize(("case", "want"), MPMATH_CASES)
def test_pareto_nbd_extreme_arguments_match_mpmath(case: tuple, want: tuple) -> None:
    got_ll = float(pareto_nbd_log_likelihood(*case))
    model = ParetoNBD(*case[:4], log_likelihood=0.0, n=1)
    got_alive = float(model.probability_alive(*case[4:]))
    assert got_ll == pytest.approx(want[0], rel=1e-11)
    assert got_alive == pytest.approx(want[1], rel=1e-9)


def test_gamma_gamma_by_hand() -> None:
    p, q, v, x, m = 6.25, 3.74, 15.44, 3, 27.5
    want = (
        math.lgamma(p * x + q) - math.lgamma(p * x) - math.lgamma(q) + q * math.log(v)
        + (p * x - 1) * math.log(m) + p * x * math.log(x) - (p * x + q) * math.log(v + x * m)
    )  # fmt: skip
    assert float(gamma_gamma_log_likelihood(p, q, v, x, m)) == pytest.approx(want, rel=1e-13)
    model = GammaGamma(p, q, v, log_likelihood=0.0, n=1)
    weight = p * x / (p * x + q - 1)
    expected = (1 - weight) * v * p / (q - 1) + weight * m
    assert float(model.conditional_expected_average_profit(x, m)) == pytest.approx(expected)
    assert model.population_mean() == pytest.approx(v * p / (q - 1))
    assert float(model.conditional_expected_average_profit(0, np.nan)) == model.population_mean()
    assert GammaGamma(p, 0.9, v, 0.0, 1).population_mean() == math.inf


def bgnbd_eq10(t: float, x: int, tx: float, T: float, r: float, alpha: float, a, b) -> float:
    """Eq. 10 of FHL (2005) as printed, with scipy's hyp2f1 on its own arguments."""
    z = t / (alpha + T + t)
    hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
    bracket = 1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp
    alive = 1 + (x > 0) * a / (b + x - 1) * ((alpha + T) / (alpha + tx)) ** (r + x)
    return (a + b + x - 1) / (a - 1) * bracket / alive


@pytest.mark.parametrize(
    ("t", "x", "tx", "T"),
    [(39, 0, 0.0, 38.86), (39, 2, 30.43, 38.86), (39, 10, 35.0, 38.0), (200, 2, 30.43, 38.86)],
)
def test_bgnbd_conditional_expectation_eq10(t: float, x: int, tx: float, T: float) -> None:
    """Both paths (scipy on the Euler-transformed 2F1, z <= 0.8, and the quadrature, here
    z = 0.83 for t = 200) agree with eq. 10 as printed."""
    params = (0.243, 4.414, 0.793, 2.426)
    model = BGNBD(*params, log_likelihood=0.0, n=1)
    got = float(model.conditional_expected_purchases(t, x, tx, T))
    assert got == pytest.approx(bgnbd_eq10(t, x, tx, T, *params), rel=1e-9)
    new = float(model.expected_purchases_new(t))
    assert new == pytest.approx(bgnbd_eq10(t, 0, 0.0, 0.0, *params), rel=1e-9)


def test_pareto_nbd_conditional_expectation_eq41() -> None:
    r, alpha, s, beta, t, x, tx, T = 0.553, 10.578, 0.606, 11.669, 39.0, 2, 30.43, 38.86
    model = ParetoNBD(r, alpha, s, beta, log_likelihood=0.0, n=1)
    alive = float(model.probability_alive(x, tx, T))
    growth = (1 - ((beta + T) / (beta + T + t)) ** (s - 1)) / (s - 1)
    want = alive * (r + x) * (beta + T) / (alpha + T) * growth
    assert float(model.conditional_expected_purchases(t, x, tx, T)) == pytest.approx(want)
    new = r * beta / (alpha * (s - 1)) * (1 - (beta / (beta + t)) ** (s - 1))
    assert float(model.expected_purchases_new(t)) == pytest.approx(new)
    # s == 1: the limit log((beta+T+t)/(beta+T))
    one = ParetoNBD(r, alpha, 1.0, beta, log_likelihood=0.0, n=1)
    limit = (r + x) * (beta + T) / (alpha + T) * math.log((beta + T + t) / (beta + T))
    got = float(one.conditional_expected_purchases(t, x, tx, T))
    assert got == pytest.approx(float(one.probability_alive(x, tx, T)) * limit)


def test_probability_alive_and_monotonicity() -> None:
    bg = BGNBD(0.243, 4.414, 0.793, 2.426, log_likelihood=0.0, n=1)
    pn = ParetoNBD(0.553, 10.578, 0.606, 11.669, log_likelihood=0.0, n=1)
    assert np.all(bg.probability_alive(0, 0.0, [1.0, 38.0, 500.0]) == 1.0)
    x = np.arange(1, 30)
    for model in (bg, pn):
        alive = model.probability_alive(x, 20.0, 38.0)
        assert np.all((alive > 0) & (alive <= 1))
        # with a recent last purchase, more purchases mean more expected ones; with an old
        # one (t_x = 20 of 38 weeks) heavy buyers are likely gone, so it rises then falls
        for t_x in (37.0, 38.0):
            expected = model.conditional_expected_purchases(39.0, x, t_x, 38.0)
            assert np.all(np.diff(expected) > 0), (type(model).__name__, t_x)
        expected = model.conditional_expected_purchases(39.0, x, 20.0, 38.0)
        assert np.argmax(expected) not in (0, x.size - 1)
        # more recent last purchase: more likely alive
        assert np.all(np.diff(model.probability_alive(5, [5.0, 20.0, 37.0], 38.0)) > 0)
        assert np.all(np.diff(model.expected_purchases_new([1.0, 10.0, 100.0])) > 0)


def test_expected_purchases_new_matches_simulation() -> None:
    """E[X(t)] (FHL eq. 9, Fader-Hardie 009 eq. 27) equals the simulated mean of x at T = t."""
    rng = np.random.default_rng(5)
    T = np.full(400_000, 52.0)
    x, _ = simulate_bgnbd(0.5, 6.0, 0.8, 2.5, T, rng)
    want = float(BGNBD(0.5, 6.0, 0.8, 2.5, 0.0, 1).expected_purchases_new(52.0))
    assert x.mean() == pytest.approx(want, abs=4 * x.std() / math.sqrt(x.size))
    x, _ = simulate_pareto_nbd(0.6, 8.0, 0.8, 15.0, T, rng)
    want = float(ParetoNBD(0.6, 8.0, 0.8, 15.0, 0.0, 1).expected_purchases_new(52.0))
    assert x.mean() == pytest.approx(want, abs=4 * x.std() / math.sqrt(x.size))


# ---------------------------------------------------------------- simulation and weights


@pytest.fixture(scope="module")
def simulated() -> dict[str, np.ndarray]:
    """20,000 customers with 26-104 weeks of history, times rounded to whole days."""
    rng = np.random.default_rng(20240601)
    T = np.round(rng.uniform(26, 104, 20_000) * 7) / 7
    x, t_x = simulate_bgnbd(0.5, 6.0, 0.8, 2.5, T, rng)
    px, pt_x = simulate_pareto_nbd(0.6, 8.0, 0.8, 15.0, T, rng)
    m_x = simulate_gamma_gamma(6.0, 4.0, 15.0, x, rng)
    day = lambda t: np.floor(t * 7) / 7  # noqa: E731
    return {"T": T, "x": x, "t_x": day(t_x), "px": px, "pt_x": day(pt_x), "m_x": m_x}


def test_bgnbd_recovers_simulated_parameters(simulated: dict[str, np.ndarray]) -> None:
    """Standard errors at n = 20,000 are ~2-3% (r, alpha) and ~4-6% (a, b): 12% bounds."""
    s = simulated
    model = fit_bgnbd(s["x"], s["t_x"], s["T"])
    for name, true in {"r": 0.5, "alpha": 6.0, "a": 0.8, "b": 2.5}.items():
        assert rel(getattr(model, name), true) < 0.12, (name, getattr(model, name))
    truth = bgnbd_log_likelihood(0.5, 6.0, 0.8, 2.5, s["x"], s["t_x"], s["T"]).sum()
    assert model.log_likelihood >= truth


def test_pareto_nbd_recovers_simulated_parameters(simulated: dict[str, np.ndarray]) -> None:
    """r and alpha are tight (~3%); s and beta, the dropout process, much less (~15%)."""
    s = simulated
    model = fit_pareto_nbd(s["px"], s["pt_x"], s["T"])
    bounds = {"r": (0.6, 0.1), "alpha": (8.0, 0.1), "s": (0.8, 0.3), "beta": (15.0, 0.4)}
    for name, (true, tol) in bounds.items():
        assert rel(getattr(model, name), true) < tol, (name, getattr(model, name))
    truth = pareto_nbd_log_likelihood(0.6, 8.0, 0.8, 15.0, s["px"], s["pt_x"], s["T"]).sum()
    assert model.log_likelihood >= truth


def test_gamma_gamma_recovers_simulated_parameters(simulated: dict[str, np.ndarray]) -> None:
    s = simulated
    model = fit_gamma_gamma(s["x"], s["m_x"])
    assert model.n == int((s["x"] > 0).sum())
    for name, true in {"p": 6.0, "q": 4.0, "v": 15.0}.items():
        assert rel(getattr(model, name), true) < 0.15, (name, getattr(model, name))


def test_weights_equal_duplicated_rows(simulated: dict[str, np.ndarray]) -> None:
    """Rows collapsed with compress() and fitted with weights give the same fit."""
    s = simulated
    x, t_x, T, w = compress(s["x"], s["t_x"], s["T"])
    assert w.sum() == s["x"].size
    assert x.size < 0.8 * s["x"].size  # day-rounded times do repeat
    full, packed = fit_bgnbd(s["x"], s["t_x"], s["T"]), fit_bgnbd(x, t_x, T, weights=w)
    px, pt_x, pT, pw = compress(s["px"], s["pt_x"], s["T"])
    pfull, ppacked = fit_pareto_nbd(s["px"], s["pt_x"], s["T"]), fit_pareto_nbd(px, pt_x, pT, pw)
    for a, b in ((full, packed), (pfull, ppacked)):
        assert a.n == b.n
        assert b.log_likelihood == pytest.approx(a.log_likelihood, rel=1e-9)
        for name in ("r", "alpha"):
            assert getattr(b, name) == pytest.approx(getattr(a, name), rel=1e-4)
    for name in ("a", "b"):
        assert getattr(packed, name) == pytest.approx(getattr(full, name), rel=1e-4)
    for name in ("s", "beta"):
        assert getattr(ppacked, name) == pytest.approx(getattr(pfull, name), rel=1e-3)
    # Gamma-Gamma: each row twice == each row once with weight 2
    x2, m2 = np.tile(s["x"][:3000], 2), np.tile(s["m_x"][:3000], 2)
    twice = fit_gamma_gamma(x2, m2)
    weighted = fit_gamma_gamma(s["x"][:3000], s["m_x"][:3000], weights=np.full(3000, 2))
    assert twice.n == weighted.n
    for name in ("p", "q", "v"):
        assert getattr(weighted, name) == pytest.approx(getattr(twice, name), rel=1e-6)


# ------------------------------------------------------------ errors, round trip, determinism


def test_too_little_data_raises_model_error() -> None:
    with pytest.raises(ModelError, match="at least 2 customers"):
        fit_bgnbd([0, 0, 1], [0, 0, 2.0], [5.0, 5.0, 5.0])
    with pytest.raises(ModelError, match="at least 2 customers"):
        fit_pareto_nbd([0, 3], [0, 2.0], [5.0, 5.0])
    with pytest.raises(ModelError, match="at least 2 customers"):
        fit_gamma_gamma([0, 2, 1], [np.nan, 10.0, -1.0])
    # two repeat customers, but as one row of weight 2: enough
    fit_bgnbd([0, 1, 2], [0, 2.0, 4.0], [5.0, 5.0, 6.0], weights=[50, 40, 2])


@pytest.mark.parametrize(
    ("x", "t_x", "T", "match"),
    [
        ([1, 2], [3.0, 1.0], [2.0, 5.0], "t_x <= T"),
        ([0, 2], [1.0, 1.0], [2.0, 5.0], "t_x == 0 when x == 0"),
        ([1.5, 2], [1.0, 1.0], [2.0, 5.0], "whole numbers"),
        ([1, 2], [1.0, np.nan], [2.0, 5.0], "non-finite"),
        ([1, 2, 3], [1.0, 1.0], [2.0, 5.0], "differ in length"),
    ],
)
def test_invalid_input_raises_input_error(x: list, t_x: list, T: list, match: str) -> None:
    for fit in (fit_bgnbd, fit_pareto_nbd):
        with pytest.raises(InputError, match=match):
            fit(x, t_x, T)


def test_optimiser_failure_raises_model_error(
    simulated: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(fun: object, x0: np.ndarray, **kwargs: object) -> OptimizeResult:
        return OptimizeResult(
            x=np.asarray(x0), fun=1.0, jac=np.ones_like(x0), success=False, message="ABNORMAL"
        )

    monkeypatch.setattr(btyd, "minimize", failing)
    s = simulated
    with pytest.raises(ModelError, match="did not converge: ABNORMAL"):
        fit_bgnbd(s["x"], s["t_x"], s["T"])
    with pytest.raises(ModelError, match="did not converge"):
        fit_gamma_gamma(s["x"], s["m_x"])

    def to_bound(fun: object, x0: np.ndarray, **kwargs: object) -> OptimizeResult:
        x = np.asarray(x0, dtype=float).copy()
        x[-1] = btyd.LOG_BOUND
        return OptimizeResult(x=x, fun=1.0, jac=np.zeros_like(x), success=True, message="ok")

    monkeypatch.setattr(btyd, "minimize", to_bound)
    with pytest.raises(ModelError, match=r"\['beta'\] ran to a bound"):
        fit_pareto_nbd(s["px"], s["pt_x"], s["T"])


def test_to_dict_from_dict_round_trip() -> None:
    models = [
        BGNBD(0.243, 4.414, 0.793, 2.426, log_likelihood=-9582.4, n=2357),
        ParetoNBD(0.553, 10.578, 0.606, 11.669, log_likelihood=-9595.0, n=2357),
        GammaGamma(6.25, 3.74, 15.44, log_likelihood=-4055.9, n=946),
    ]
    for model in models:
        data = json.loads(json.dumps(model.to_dict()))
        assert all(type(v) is float for v in data.values())
        back = type(model).from_dict(data)
        assert back == model
        assert type(back.n) is int
        with pytest.raises(ModelError, match="expected keys"):
            type(model).from_dict({k: v for k, v in data.items() if k != "n"})
        with pytest.raises(ModelError, match="invalid values"):
            type(model).from_dict({**data, "n": 2.5})
        first = next(iter(data))
        with pytest.raises(ModelError, match="invalid values"):
            type(model).from_dict({**data, first: -1.0})
        with pytest.raises(ModelError, match="invalid values"):
            type(model).from_dict({**data, "log_likelihood": math.inf})
        with pytest.raises(ModelError, match="could not convert"):
            type(model).from_dict({**data, first: "abc"})


def test_fits_are_deterministic(simulated: dict[str, np.ndarray]) -> None:
    s = simulated
    sub = slice(0, 5000)
    first = fit_pareto_nbd(s["px"][sub], s["pt_x"][sub], s["T"][sub]).to_dict()
    assert fit_pareto_nbd(s["px"][sub], s["pt_x"][sub], s["T"][sub]).to_dict() == first
    first = fit_bgnbd(s["x"][sub], s["t_x"][sub], s["T"][sub]).to_dict()
    assert fit_bgnbd(s["x"][sub], s["t_x"][sub], s["T"][sub]).to_dict() == first


def test_bg_nbd_without_spread_in_the_dropout_chance_gives_finite_expectations() -> None:
    # a fit on a log without visible dropout: a and b run huge (seen on a 1,500-customer
    # sample log), where 2F1 overflows; the dropout chance is then its mean, a / (a + b + x)
    x, t_x, T = np.array([0.0, 2, 7]), np.array([0.0, 13, 6.3]), np.array([10.0, 13, 9.4])
    narrow = BGNBD(1.5, 6.0, 2e4, 3e6, log_likelihood=0.0, n=1)
    got = narrow.conditional_expected_purchases(52.0, x, t_x, T)
    assert np.all(np.isfinite(got)) and np.all(got > 0)
    p = 2e4 / (2e4 + 3e6 + x)
    limit = -np.expm1(-(1.5 + x) * np.log1p(p * 52.0 / (6.0 + T))) / p
    np.testing.assert_allclose(got / narrow.probability_alive(x, t_x, T), limit, rtol=1e-12)
    wider = BGNBD(1.5, 6.0, 2e3, 3e5, log_likelihood=0.0, n=1)  # the same mean, more spread
    np.testing.assert_allclose(
        wider.conditional_expected_purchases(52.0, x, t_x, T), got, rtol=0.02
    )


def test_pareto_nbd_gradient_matches_central_differences(
    simulated: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fit's analytic gradient (quadrature, differentiated under the integral) against
    central differences of its own objective at three points, with
    alpha > beta and alpha < beta (the two branches of the hypergeometric term)."""
    seen = []

    def capture(fun: object, x0: np.ndarray, **kwargs: object) -> OptimizeResult:
        seen.append(fun)
        return OptimizeResult(x=np.asarray(x0), fun=1.0, jac=np.zeros(4), success=True)

    monkeypatch.setattr(btyd, "minimize", capture)
    s = simulated
    fit_pareto_nbd(s["px"][:3000], s["pt_x"][:3000], s["T"][:3000])
    (objective,) = seen
    h = 1e-5
    for params in [(0.553, 10.578, 0.606, 11.669), (1.2, 7.0, 1.7, 2.5), (0.5, 2000.0, 3.0, 0.4)]:
        theta = np.log(params)
        _, grad = objective(theta)
        for j, step in enumerate(np.eye(4) * h):
            central = (objective(theta + step)[0] - objective(theta - step)[0]) / (2 * h)
            assert grad[j] == pytest.approx(central, rel=1e-6, abs=1e-9), (params, j)
