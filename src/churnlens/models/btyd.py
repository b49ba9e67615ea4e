"""Buy-till-you-die models fitted by maximum likelihood: BG/NBD and Pareto/NBD.

A customer is ``x`` (repeat purchases), ``t_x`` (time of the last repeat purchase since the
first one, 0 when ``x == 0``) and ``T`` (time since the first purchase), in one unit; equal
rows may be collapsed into ``weights`` (:func:`compress`). Vectorised over customers; fits
use L-BFGS-B on the log-parameters. References:
[1] Fader, Hardie and Lee (2005), "'Counting Your Customers' the Easy Way: An Alternative to
the Pareto/NBD Model", Marketing Science 24(2) (BG/NBD: eqs. 6, 9, 10); [2] Schmittlein,
Morrison and Colombo (1987), "Counting Your Customers: Who Are They and What Will They Do
Next?", Management Science 33(1) (Pareto/NBD); [3] Fader and Hardie (2005), "A Note on
Deriving the Pareto/NBD Model and Related Expressions", brucehardie.com/notes/009 (eqs. 18-20,
27, 37, 41); formulas as in lifetimes 0.11.3 (CamDavidsonPilon/lifetimes) and CLVTools.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import minimize
from scipy.special import betaln, digamma, expit, gammaln, hyp2f1, logsumexp

from churnlens.errors import InputError, ModelError

FloatArray = NDArray[np.float64]
LOG_BOUND = 18.0  # parameters stay within [e^-18, e^18] ~ [1.5e-8, 6.6e7]
# scipy's hyp2f1 matched mpmath to 1e-12 for z <= 0.8 (x <= 1e4, parameters in [0.02, 50]); above
# it can be nan, inf or wrong: those go to the quadratures below, in blocks of <= BLOCK floats.
Z_SCIPY, BLOCK, GL96 = 0.8, 1 << 22, np.polynomial.legendre.leggauss(96)
GL32 = np.polynomial.legendre.leggauss(32)
_CONCENTRATED = 1e3  # a and b both beyond this: the dropout chance has no spread left


class Serialisable:
    """``to_dict`` / ``from_dict`` as plain floats for the frozen model dataclasses."""

    def to_dict(self) -> dict[str, float]:
        """The parameters, ``log_likelihood`` and ``n`` as plain floats (JSON-ready)."""
        return {f.name: float(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Rebuild from :meth:`to_dict` output; ``ModelError`` on a wrong key or value."""
        names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
        if set(data) != set(names):
            raise ModelError(f"{cls.__name__}.from_dict: expected keys {names}, got {sorted(data)}")
        try:
            values = {name: float(data[name]) for name in names}
        except (TypeError, ValueError) as exc:
            raise ModelError(f"{cls.__name__}.from_dict: {exc}") from None
        bad = [k for k, v in values.items() if not math.isfinite(v) or (k in names[:-2] and v <= 0)]
        if bad or values["n"] < 0 or values["n"] != round(values["n"]):
            raise ModelError(f"{cls.__name__}.from_dict: invalid values {values}")
        return cls(**{**values, "n": int(values["n"])})


def as_floats(*values: ArrayLike) -> list[FloatArray]:
    return [np.asarray(v, dtype=float) for v in np.broadcast_arrays(*values)]


def weighted_sum(w: FloatArray, v: FloatArray) -> float:
    return float(np.einsum("i,i->", w, v))  # not w @ v: BLAS threads crawl on busy cores


def check_columns(source: str, **columns: ArrayLike | None) -> dict[str, FloatArray]:
    """Validate 1-d columns ``x`` (+ ``t_x``, ``T`` or ``m_x``) and ``weights``."""
    out = {k: np.ravel(np.asarray(v, dtype=float)) for k, v in columns.items() if v is not None}
    if len(set((sizes := {k: a.size for k, a in out.items()}).values())) != 1:
        raise InputError(source, f"columns differ in length: {sizes}")
    problems = [f"'{k}' has non-finite values" for k, a in out.items() if not np.isfinite(a).all()]
    x, w = out["x"], out.setdefault("weights", np.ones_like(out["x"]))
    for name, v in (("x", x), ("weights", w)):
        if (v < 0).any() or (v != np.round(v)).any():
            problems.append(f"'{name}' must be non-negative whole numbers (counts)")
    t_x, T = out.get("t_x", x * 0), out.get("T", x * 0 + 1)
    if (T <= 0).any() or (t_x < 0).any() or (t_x > T).any() or (t_x[x == 0] != 0).any():
        problems.append("need 0 <= t_x <= T, T > 0 and t_x == 0 when x == 0")
    if problems:
        raise InputError(source, "; ".join(problems))
    if w[x > 0].sum() < 2:
        raise ModelError(f"{source}: need at least 2 customers with a repeat purchase to fit")
    return out


def distinct(*cols: FloatArray) -> tuple[list[FloatArray], NDArray[np.intp]]:
    """The distinct rows of 1-d ``cols`` and each row's index among them (np.unique's
    ``axis`` path is ~6 times slower)."""
    order = np.lexsort(cols[::-1])
    step = np.r_[True, np.any([c[order][1:] != c[order][:-1] for c in cols], axis=0)]
    index = np.empty(order.size, dtype=np.intp)
    index[order] = np.cumsum(step) - 1
    return [c[order[step]] for c in cols], index


def compress(*columns: ArrayLike, weights: ArrayLike | None = None) -> list[FloatArray]:
    """Distinct rows of ``columns`` and their summed ``weights``: ``x, t_x, T, w =
    compress(x, t_x, T)``; the fits do this themselves, the result is the same."""
    unique, index = distinct(*(cols := [np.ravel(c) for c in as_floats(*columns)]))
    w = np.ones(cols[0].size) if weights is None else np.ravel(np.asarray(weights, dtype=float))
    return [*unique, np.bincount(index, weights=w, minlength=unique[0].size)]


def by_blocks(
    easy: NDArray[np.bool_], fast: Callable[..., FloatArray], slow: Callable[..., FloatArray],
    nodes: int, *arrays: FloatArray,
) -> FloatArray:  # fmt: skip
    """``fast`` on the ``easy`` elements, ``slow`` (a quadrature) once per distinct other one."""
    arrays = tuple(np.broadcast_arrays(*arrays))
    out = np.empty(arrays[0].shape)
    out[easy] = fast(*(a[easy] for a in arrays))
    if (hard := np.flatnonzero(~easy)).size:  # e.g. all x = 0 customers share t_x = 0
        keys, back = distinct(*(a.flat[hard] for a in arrays))
        parts = np.array_split(np.stack(keys), -(-keys[0].size * nodes // BLOCK), axis=1)
        out.flat[hard] = np.concatenate([slow(*part) for part in parts])[back]
    return out


def maximise(
    objective: Callable[[FloatArray], Any], start: list[float], names: tuple[str, ...], grad: bool
) -> tuple[list[float], float]:
    """Minimise a mean negative log-likelihood over log-parameters; raise if it fails."""
    kw = {"method": "L-BFGS-B", "bounds": [(-LOG_BOUND, LOG_BOUND)] * len(start)}
    opts = {"maxiter": 2000, "ftol": 1e-13, "gtol": 1e-8 if grad else 1e-6}
    res = minimize(objective, np.log(start), jac=grad, options=opts, **kw)
    at_bound = [n for n, v in zip(names, res.x, strict=True) if abs(v) > LOG_BOUND - 1e-3]
    if at_bound:
        raise ModelError(f"fit failed: {at_bound} ran to a bound; the data do not identify them")
    if not np.isfinite(res.fun):
        raise ModelError("maximum-likelihood fit failed: the log-likelihood is not finite")
    if not res.success and not (grad and np.abs(res.jac).max() < 1e-5):
        raise ModelError(f"maximum-likelihood fit did not converge: {res.message}")
    return [float(v) for v in np.exp(res.x)], float(res.fun)


def _bgnbd_parts(
    r: float, alpha: float, a: float, b: float, x: FloatArray, t_x: FloatArray, T: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """log of the constant, "alive at T" and "dropped out after t_x" terms of eq. 6 in [1]_;
    the last exists only when x > 0 (the a/(b+x-1) factor), else it is -inf."""
    head = gammaln(r + x) - gammaln(r) + r * math.log(alpha) + betaln(a, b + x) - betaln(a, b)
    alive = -(r + x) * np.log(alpha + T)
    dead = math.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x)
    return head, alive, np.where(x > 0, dead, -np.inf)


def bgnbd_log_likelihood(
    r: float, alpha: float, a: float, b: float, x: ArrayLike, t_x: ArrayLike, T: ArrayLike
) -> FloatArray:
    """Per-customer BG/NBD log-likelihood, the log of eq. 6 in [1]_."""
    head, alive, dead = _bgnbd_parts(r, alpha, a, b, *as_floats(x, t_x, T))
    return head + np.logaddexp(alive, dead)


def _bgnbd_objective(
    x: FloatArray, t_x: FloatArray, T: FloatArray, w: FloatArray
) -> Callable[[FloatArray], tuple[float, FloatArray]]:
    """Mean negative log-likelihood and its analytic gradient in log-parameters."""
    total = w.sum()

    def objective(theta: FloatArray) -> tuple[float, FloatArray]:
        r, alpha, a, b = np.exp(theta)
        head, alive, dead = _bgnbd_parts(r, alpha, a, b, x, t_x, T)
        mix = np.logaddexp(alive, dead)
        q = np.exp(dead - mix)  # share of the dropped-out term, 0 when x == 0
        d_ab, d_abx = digamma(a + b), digamma(a + b + x)
        grads = (
            r * (digamma(r + x) - digamma(r) + math.log(alpha))
            - r * ((1 - q) * np.log(alpha + T) + q * np.log(alpha + t_x)),
            r - alpha * (r + x) * ((1 - q) / (alpha + T) + q / (alpha + t_x)),
            a * (d_ab - d_abx) + q,
            b * (digamma(b + x) - digamma(b) + d_ab - d_abx - q / (b + np.maximum(x, 1) - 1)),
        )
        return -weighted_sum(w, head + mix) / total, np.array(
            [-weighted_sum(w, g) / total for g in grads]
        )

    return objective


def _bracket(
    t: FloatArray, x: FloatArray, T: FloatArray, r: float, alpha: float, a: float, b: float
) -> FloatArray:
    """(a+b+x-1)/(a-1) [1 - ((α+T)/(α+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z)] of eq. 10, by
    Euler's transformation (2F1 arguments that do not grow with ``x``) or, where scipy is not
    reliable (z > 0.8, a+b+x <= 1, a ~ 1), as the posterior mean of (1 - (1+pθ)^-(r+x))/p over
    p ~ Beta(a, b+x), θ = t/(α+T), by the trapezoid rule in logit(p): the integrand is analytic
    in |Im| < π and decays exponentially, so it converges geometrically (mpmath: 1e-9)."""

    def fast(t: FloatArray, x: FloatArray, T: FloatArray) -> FloatArray:
        z, c = t / (alpha + T + t), a + b + x - 1
        log_h = (a - 1) * np.log1p(-z) + np.log(hyp2f1(a + b - 1 - r, a - 1, c, z))
        return c / (a - 1) * -np.expm1(log_h)

    def slow(t: FloatArray, x: FloatArray, T: FloatArray) -> FloatArray:
        theta, m = t / (alpha + T), r + x
        h = min(0.5, 0.4 * math.sqrt(1 / a + 1 / (b + x.max())))
        lo = -np.log1p(m * theta).max() - 40 / a - 5
        y = np.arange(lo, 40 / (b + x.min()) + 5, h)[:, None]
        log_p, log_q = -np.logaddexp(0, -y), -np.logaddexp(0, y)
        with np.errstate(divide="ignore"):
            f = np.log(-np.expm1(-m * np.log1p(theta * np.exp(log_p))))
        f = f + (a - 1) * log_p + (b + x) * log_q
        return np.exp(logsumexp(f, axis=0) + math.log(h) - betaln(a, b + x))

    if a > _CONCENTRATED and b > _CONCENTRATED:
        # p ~ Beta(a, b + x) concentrates at its mean (the fit found no spread in the dropout
        # chance): the posterior mean is the integrand at that mean; 2F1 overflows there
        p = a / (a + b + x)
        return -np.expm1(-(r + x) * np.log1p(p * t / (alpha + T))) / p
    span = 40 / a + 40 / b + 10 + np.log1p((r + x) * t / (alpha + T)).max(initial=0)
    easy = (t / (alpha + T + t) <= Z_SCIPY) & (a + b + x > 1) & (abs(a - 1) > 1e-6)
    return by_blocks(easy, fast, slow, min(int(span / 0.05), BLOCK), t, x, T)


@dataclass(frozen=True)
class BGNBD(Serialisable):
    """A fitted BG/NBD model [1]_: purchase rate ~ Gamma(r, alpha), dropout p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float
    n: int

    def probability_alive(self, x: ArrayLike, t_x: ArrayLike, T: ArrayLike) -> FloatArray:
        """P(alive at T | x, t_x, T); exactly 1 when ``x == 0`` (Fader-Hardie note 021)."""
        _, alive, dead = _bgnbd_parts(self.r, self.alpha, self.a, self.b, *as_floats(x, t_x, T))
        return expit(alive - dead)

    def conditional_expected_purchases(
        self, t: ArrayLike, x: ArrayLike, t_x: ArrayLike, T: ArrayLike, alive: Any = None
    ) -> FloatArray:
        """E[repeat purchases in (T, T+t] | x, t_x, T], eq. 10 of [1]_ (``alive``: the
        customers' :meth:`probability_alive` when already computed)."""
        t, x, t_x, T = as_floats(t, x, t_x, T)
        bracket = _bracket(t, x, T, self.r, self.alpha, self.a, self.b)
        return bracket * (self.probability_alive(x, t_x, T) if alive is None else alive)

    def expected_purchases_new(self, t: ArrayLike) -> FloatArray:
        """E[X(t)]: repeat purchases in (0, t] of a new customer, eq. 9 of [1]_."""
        (t,) = as_floats(t)
        return _bracket(t, np.zeros_like(t), np.zeros_like(t), self.r, self.alpha, self.a, self.b)


def fit_bgnbd(
    x: ArrayLike, t_x: ArrayLike, T: ArrayLike, weights: ArrayLike | None = None
) -> BGNBD:
    """Fit the BG/NBD model by maximum likelihood (analytic gradient).

    Parameters
    ----------
    x, t_x, T
        Repeat purchases, time of the last repeat purchase and time since the first
        purchase, per customer (or per unique row, then with ``weights``), in one unit.
    weights
        Number of customers on each row (default 1), e.g. from :func:`compress`.

    Returns
    -------
    BGNBD
        The parameters, the total log-likelihood and ``n``, the number of customers.

    Raises
    ------
    InputError, ModelError
        On invalid columns (negative or fractional counts, ``t_x > T``, ...); when fewer
        than 2 customers made a repeat purchase or the optimiser fails.
    """
    d = check_columns("BG/NBD fit", x=x, t_x=t_x, T=T, weights=weights)
    x, t_x, T, w = compress(d["x"], d["t_x"], d["T"], weights=d["weights"])
    start = [1.0, weighted_sum(w, T) / max(weighted_sum(w, x), 1e-3), 1.0, 1.0]
    params, nll = maximise(_bgnbd_objective(x, t_x, T, w), start, ("r", "alpha", "a", "b"), True)
    return BGNBD(*params, log_likelihood=-nll * float(w.sum()), n=int(w.sum()))


def simulate_bgnbd(
    r: float, alpha: float, a: float, b: float, T: ArrayLike, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """Draw ``(x, t_x)`` for customers observed for ``T`` under the BG/NBD model: dropout
    right after repeat purchase J ~ Geometric(p), t_x = the x-th of n arrivals in (0, T]."""
    (T,) = as_floats(T)
    n = rng.poisson(rng.gamma(r, 1.0 / alpha, T.shape) * T)
    x = np.minimum(n, rng.geometric(rng.beta(a, b, T.shape)))
    t_x = np.where(x > 0, T * rng.beta(np.maximum(x, 1), n - x + 1), 0.0)
    return x.astype(np.float64), t_x
