"""Customer value: the spend to expect over the next ``horizon_days``, and if retained.

``ValueModel.fit(X_now, snapshots)`` fits, from the feature frame alone:

1. **a buy-till-you-die model** on every buyer as of the as-of day (:class:`Lifetimes`):
   Pareto/NBD for the purchase process (x repeat purchase days, the time of the last one
   and the time since the first, in weeks), Gamma-Gamma for the spend per purchase day,
   and BG/NBD beside them as a baseline. It needs no labels, so it works on logs too short
   for any labelled snapshot (CDNOW's 18 months with a 365-day horizon); it sets the
   level, as it extrapolates each customer's own rate through time;
2. **a supervised part**, wherever snapshots with a complete ``horizon_days`` window exist
   before the as-of day. At each snapshot the buy-till-you-die model is refitted as of
   that day and its outputs (P(alive), expected purchases and spend per purchase) join the
   features; four LightGBM learners fit the spend that followed: Poisson, Poisson boosted
   from the buy-till-you-die prediction, the chance of any purchase, and a Gamma model of
   the spend of those who bought (:meth:`ValueModel._spend` combines them). Candidates
   ``BTYD^(1 - w) * spend^w * P(buy)^c`` over a grid of (w, c) are compared on the latest
   snapshot of a held-out third of the customers (the learners train on the others'
   snapshots) by the mean of the Spearman correlation and the normalised Gini with the
   spend that followed. The best is kept only when it beats the buy-till-you-die model
   alone surely (the 5th percentile of its gain over customer resamples is positive);
   the learners are then refitted on every customer and the level is scaled so that the
   buyers' total as of the as-of day is the buy-till-you-die model's. ``method_``,
   ``weights_`` and ``reason_`` say which was used and why. Each learner fit sees at most
   about :data:`MAX_ROWS` snapshot rows (a seeded sample of whole customers beyond), so
   that its cost stops growing with the log, and the four fit side by side, one per
   core (:mod:`churnlens.models.fitting`); 100 trees each (the learning rate 0.09 held
   CDNOW's accuracy of 300 at 0.03 at a third of the training and scoring time).

``predict_columns`` gives ``expected_value`` (the chance of not buying again included: a
customer gone for two years is worth close to 0) and ``value_if_retained`` (the spend at
the customer's own pace if they stay: the Pareto/NBD posterior mean purchase rate of an
alive customer, (r + x) / (alpha + T), times the horizon, times the expected spend per
purchase; never below ``expected_value``). Customers who never bought get the supervised
prediction, or 0 without one, and the population's mean rate and spend if retained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from churnlens.errors import ModelError
from churnlens.evaluation import value_metrics
from churnlens.models.base import ChurnlensModel
from churnlens.models.btyd import BGNBD, fit_bgnbd
from churnlens.models.fitting import cap_rows, customer_buckets, side_by_side
from churnlens.models.pareto_nbd import ParetoNBD, fit_pareto_nbd
from churnlens.models.spend import GammaGamma, fit_gamma_gamma

WEEK = 7.0
HALF_DAY = 0.5 / WEEK  # the age, in weeks, of a first purchase made on the as-of day
LIFETIME_COLUMNS = ("value_p_alive", "value_expected_purchases", "value_spend", "value_btyd_log")
GRID = tuple((w, c) for w in (0.0, 0.25, 0.5, 0.75, 1.0) for c in (0.0, 0.25, 0.5, 0.75, 1.0))
MIN_BUYERS = 20  # repeat buyers a buy-till-you-die fit needs
BOOTSTRAP_ROWS = 20_000  # customers per bootstrap resample (a bound, not a fraction)
MAX_ROWS = 250_000  # snapshot rows a learner trains on at most (a seeded sample of customers)


@dataclass(frozen=True)
class Purchases:
    """The buy-till-you-die view of a feature frame: per customer, whether they bought,
    x (repeat purchase days), t_x and T (weeks) and the mean spend per purchase day."""

    buyer: np.ndarray
    x: np.ndarray
    t_x: np.ndarray
    T: np.ndarray
    spend: np.ndarray

    @classmethod
    def of(cls, X: pd.DataFrame) -> Purchases:
        buyer = X["rfm_has_purchase"].to_numpy(dtype=float) > 0
        x = np.where(buyer, X["cycle_n_intervals"].to_numpy(dtype=float), 0.0)
        tenure = np.nan_to_num(X["rfm_tenure_days"].to_numpy(dtype=float))
        recency = np.nan_to_num(X["rfm_recency_days"].to_numpy(dtype=float))
        total = np.nan_to_num(X["rfm_monetary_total"].to_numpy(dtype=float))
        spend = np.clip(total / (x + 1.0), 0.0, None)
        t_x = np.where(buyer, tenure - recency, 0.0) / WEEK
        return cls(buyer, x, t_x, tenure / WEEK, spend)


@dataclass(frozen=True)
class Lifetimes:
    """A fitted buy-till-you-die model: Pareto/NBD, Gamma-Gamma and the BG/NBD baseline."""

    pnbd: ParetoNBD | BGNBD
    bgnbd: BGNBD | ParetoNBD
    spend: GammaGamma

    @classmethod
    def fit(cls, X: pd.DataFrame) -> Lifetimes:
        p = Purchases.of(X)
        b = p.buyer & (p.T > 0)  # a first purchase on the as-of day tells no timing yet
        repeat = b & (p.x > 0) & (p.spend > 0)
        if repeat.sum() < MIN_BUYERS:
            raise ModelError(
                f"the value model needs at least {MIN_BUYERS} customers who bought on two "
                f"different days, the log has {int(repeat.sum())}; use a longer log"
            )
        # Pareto/NBD leads; where the data do not identify one of the two (a parameter runs
        # to its bound), the other stands in for it
        bgnbd = _try(fit_bgnbd, p.x[b], p.t_x[b], p.T[b])
        pnbd = _try(fit_pareto_nbd, p.x[b], p.t_x[b], p.T[b])
        if pnbd is None and bgnbd is None:
            raise ModelError(
                "neither buy-till-you-die fit (Pareto/NBD, BG/NBD) converged on this log "
                "(their parameters ran to a bound); use a longer log or another as-of day"
            )
        spend = fit_gamma_gamma(p.x[repeat], p.spend[repeat])
        return cls(pnbd or bgnbd, bgnbd or pnbd, spend)

    def _per_purchase(self, p: Purchases) -> np.ndarray:
        return self.spend.conditional_expected_average_profit(p.x, np.where(p.x > 0, p.spend, 0))

    def expected(self, X: pd.DataFrame, days: float, baseline: bool = False) -> np.ndarray:
        """Expected spend over ``days`` (0 for customers who never bought)."""
        p = Purchases.of(X)
        model = self.bgnbd if baseline else self.pnbd
        n = model.conditional_expected_purchases(days / WEEK, p.x, p.t_x, np.maximum(p.T, HALF_DAY))
        return np.where(p.buyer, n * self._per_purchase(p), 0.0)

    def retained(self, X: pd.DataFrame, days: float) -> np.ndarray:
        """Spend over ``days`` at the customer's own rate if alive (population's mean rate
        and spend for customers who never bought)."""
        p, m = Purchases.of(X), self.pnbd
        rate = np.where(p.buyer, (m.r + p.x) / (m.alpha + np.maximum(p.T, HALF_DAY)), m.r / m.alpha)
        spend = np.where(p.buyer, self._per_purchase(p), self.spend.population_mean())
        return rate * days / WEEK * spend

    def columns(self, X: pd.DataFrame, days: float) -> pd.DataFrame:
        """The features the supervised part learns from (:data:`LIFETIME_COLUMNS`) and,
        as ``value_expected``, :meth:`expected` (P(alive) computed once for both)."""
        p = Purchases.of(X)
        T = np.maximum(p.T, HALF_DAY)
        alive = self.pnbd.probability_alive(p.x, p.t_x, T)
        purchases = self.pnbd.conditional_expected_purchases(days / WEEK, p.x, p.t_x, T, alive)
        spend = self._per_purchase(p)
        value = np.where(p.buyer, purchases * spend, 0.0)
        return pd.DataFrame(
            {
                "value_p_alive": np.where(p.buyer, alive, 0.0),
                "value_expected_purchases": np.where(p.buyer, purchases, 0.0),
                "value_spend": np.where(p.buyer, spend, 0.0),
                "value_btyd_log": np.log(np.clip(value, 1e-3, None)),
                "value_expected": value,
            },
            index=X.index,
        )

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {k: getattr(self, k).to_dict() for k in ("pnbd", "bgnbd", "spend")}


MAX_LOG_SPEND = 30.0  # e^30: far above any customer's spend, below float overflow


def _try(fit: Any, *columns: np.ndarray) -> Any:
    try:
        return fit(*columns)
    except ModelError:
        return None


def naive_rate(X: pd.DataFrame, days: float) -> np.ndarray:
    """The past spend rate carried forward: total spend / days since the first purchase."""
    total = np.nan_to_num(X["rfm_monetary_total"].to_numpy(dtype=float))
    tenure = np.nan_to_num(X["rfm_tenure_days"].to_numpy(dtype=float)) + 1.0
    return np.clip(total, 0.0, None) / tenure * days


def _blend(btyd: np.ndarray, spend: np.ndarray, buy: np.ndarray, w: float, c: float) -> np.ndarray:
    log = (1 - w) * np.log(np.clip(btyd, 1e-3, None)) + w * np.log(np.clip(spend, 1e-3, None))
    return np.exp(np.clip(log + c * np.log(np.clip(buy, 1e-6, None)), None, MAX_LOG_SPEND))


def _score(y: np.ndarray, p: np.ndarray) -> float:
    m = value_metrics(y, p)
    return float(np.nanmean([m["spearman"], m["gini"]]))


def _bootstrap_low(y: np.ndarray, model: np.ndarray, base: np.ndarray, seed: int) -> float:
    """The 5th percentile, over 200 customer resamples, of the model's gain in
    (Spearman + Gini) / 2 over ``base``: the blend must beat the buy-till-you-die model
    surely, not by the luck of one sample."""
    rng = np.random.default_rng(seed)
    n = min(len(y), BOOTSTRAP_ROWS)
    gains = []
    for _ in range(200):
        pick = rng.integers(0, len(y), n)
        gains.append(_score(y[pick], model[pick]) - _score(y[pick], base[pick]))
    return float(np.percentile(gains, 5))


class ValueModel(ChurnlensModel):
    """Expected spend and spend if retained (see the module docstring)."""

    kind = "value"

    def __init__(
        self,
        horizon_days: int = 365,
        n_estimators: int = 100,
        learning_rate: float = 0.09,
        num_leaves: int = 15,
        min_child_samples: int = 100,
        seed: int = 7,
    ) -> None:
        self.horizon_days = horizon_days
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.seed = seed

    def _booster(self, objective: str) -> Any:
        cls = lgb.LGBMClassifier if objective == "binary" else lgb.LGBMRegressor
        return cls(
            objective=objective,
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            subsample=0.8,
            subsample_freq=1,
            colsample_bytree=0.8,
            reg_lambda=5.0,
            random_state=self.seed,
            n_jobs=1,
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )

    def _design(self, X: pd.DataFrame, lifetimes: Lifetimes) -> tuple[pd.DataFrame, np.ndarray]:
        """The learners' input (the features and :data:`LIFETIME_COLUMNS`) and the
        buy-till-you-die expected spend (:meth:`Lifetimes.expected`)."""
        columns = lifetimes.columns(X, self.horizon_days)
        base = columns.pop("value_expected").to_numpy()
        return pd.concat([X[list(self.feature_names_in_)], columns], axis=1), base

    def fit(
        self, X: pd.DataFrame, snapshots: tuple[pd.DataFrame, pd.Series] | None = None
    ) -> ValueModel:
        """Fit on the features as of the as-of day ``X`` and, when given, snapshots indexed
        by (as_of, customer_id) with the spend that followed each over the horizon."""
        self.feature_names_in_ = np.array(X.columns, dtype=object)
        self.lifetimes_ = Lifetimes.fit(X)
        self.learners_: dict[str, Any] = {}
        self.weights_, self.level_ = (0.0, 0.0), 1.0
        self.validation_: pd.DataFrame | None = None
        self.validation_frame_: pd.DataFrame | None = None
        self.method_ = "btyd"
        self.reason_ = (
            f"no snapshot with a complete {self.horizon_days}-day window before the "
            "as-of day: the buy-till-you-die model alone"
        )
        if snapshots is not None and len(snapshots[0]):
            self._fit_supervised(*snapshots)
        if self.method_ == "blend":
            buyers = Purchases.of(X).buyer
            raw = self._supervised(X, self.lifetimes_)[buyers]
            btyd = self.lifetimes_.expected(X, self.horizon_days)[buyers]
            self.level_ = float(btyd.sum() / raw.sum())
        return self

    def _fit_supervised(self, Xs: pd.DataFrame, ys: pd.Series) -> None:
        days, parts, btyd, naive, fits = [], [], [], [], []
        for day in sorted(Xs.index.get_level_values("as_of").unique()):
            X_d = Xs.xs(day, level="as_of")
            try:
                fitted = Lifetimes.fit(X_d)
            except ModelError:  # too few repeat buyers that early: the snapshot is left out
                continue
            days.append(day)
            design, expected = self._design(X_d, fitted)
            parts.append(design)
            btyd.append(expected)
            fits.append(fitted)
            naive.append(naive_rate(X_d, self.horizon_days))
        if not days:
            self.reason_ += " (no snapshot had enough repeat buyers for its own fit)"
            return
        design = pd.concat(parts, keys=days, names=["as_of"])
        # net refunds are no negative spend to the losses
        y = np.clip(np.nan_to_num(ys.reindex(design.index).to_numpy(dtype=float)), 0.0, None)
        base = np.concatenate(btyd)
        # validation: the latest snapshot of a seeded third of the customers; the learners
        # train on every snapshot of the others (a customer's overlapping windows would
        # otherwise leak their purchases into the comparison)
        ids = np.asarray(design.index.get_level_values("customer_id"), dtype=object)
        held = pd.util.hash_array(ids, hash_key=f"{self.seed:016d}") % 3 == 0
        latest = np.asarray(design.index.get_level_values("as_of") == days[-1])
        valid = held & latest
        buckets = customer_buckets(ids, self.seed)
        train = cap_rows(~held, buckets, MAX_ROWS)
        self.learners_ = self._learners(design[train], y[train], base[train])
        spend, buy = self._spend(design[valid], base[valid])
        scores = {(w, c): _score(y[valid], _blend(base[valid], spend, buy, w, c)) for w, c in GRID}
        best = max(scores, key=lambda k: (scores[k], -k[0], -k[1]))
        model = _blend(base[valid], spend, buy, *best)
        table = {
            "model": model,
            "pareto_nbd": base[valid],
            # the baseline only where it is compared: its expectation can be slow to compute
            "bg_nbd": fits[-1].expected(Xs.xs(days[-1], level="as_of"), self.horizon_days, True)[
                valid[latest]
            ],
            "naive_rate": np.concatenate(naive)[valid],
        }
        self.validation_ = pd.DataFrame({k: value_metrics(y[valid], v) for k, v in table.items()}).T
        self.validation_frame_ = pd.DataFrame({"spend": y[valid], **table})
        self.validation_rows_ = int(valid.sum())
        low = _bootstrap_low(y[valid], model, base[valid], self.seed)
        if best == (0.0, 0.0) or low <= 0:
            self.method_, self.learners_ = "btyd", {}
            self.reason_ = (
                "the buy-till-you-die model alone: the best blend on the validation snapshot "
                f"(spend weight {best[0]}, buy-probability exponent {best[1]}) did not beat it "
                f"surely (Spearman + Gini gain {scores[best] - scores[(0.0, 0.0)]:+.4f} / 2, "
                f"bootstrap 5% bound {low:+.4f})"
            )
            return
        self.method_, self.weights_ = "blend", best
        rows = cap_rows(np.ones(len(y), dtype=bool), buckets, MAX_ROWS)  # all customers
        self.learners_ = self._learners(design[rows], y[rows], base[rows])
        self.reason_ = (
            f"blend (spend weight {best[0]}, buy-probability exponent {best[1]}) ranked best "
            f"on the validation snapshot: Spearman + Gini {scores[best]:.4f} / 2 against "
            f"{scores[(0.0, 0.0)]:.4f} / 2 for the buy-till-you-die model alone "
            f"(bootstrap 5% bound of the gain {low:+.4f})"
        )

    def _learners(self, design: pd.DataFrame, y: np.ndarray, base: np.ndarray) -> dict[str, Any]:
        """The supervised part's four LightGBM learners (see :meth:`_spend`)."""
        offset = np.log(np.clip(base, 1e-3, None))
        bought = y > 0
        spenders, spent = design[bought], y[bought]
        return side_by_side(  # independent fits, one per core
            {
                "spend": lambda: self._booster("poisson").fit(design, y),
                "anchored": lambda: self._booster("poisson").fit(design, y, init_score=offset),
                "buy": lambda: self._booster("binary").fit(design, bought),
                "basket": lambda: self._booster("gamma").fit(spenders, spent),
            }
        )

    def _spend(self, design: pd.DataFrame, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The supervised spend estimate and the chance of buying. The spend estimate is
        the geometric mean of (a) the Poisson learners, one free and one boosted from the
        buy-till-you-die prediction (which extrapolates through time where trees repeat
        their last leaf), and (b) the hurdle estimate: the chance of buying times the
        Gamma learner's spend of those who buy."""
        L = self.learners_
        free = L["spend"].predict(design)
        log_rate = L["anchored"].predict(design, raw_score=True) + np.log(np.clip(base, 1e-3, None))
        anchored = np.exp(np.clip(log_rate, None, MAX_LOG_SPEND))  # no overflow on outliers
        buy = L["buy"].predict_proba(design)[:, 1]
        hurdle = buy * L["basket"].predict(design)
        spend = np.sqrt(np.sqrt(np.clip(free * anchored, 0, None)) * np.clip(hurdle, 0, None))
        return spend, buy

    def _supervised(self, X: pd.DataFrame, lifetimes: Lifetimes) -> np.ndarray:
        design, base = self._design(X, lifetimes)
        spend, buy = self._spend(design, base)
        return _blend(base, spend, buy, *self.weights_)

    def _check(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ModelError(f"the data lacks the value model's features {missing[:3]}")
        return X

    def predict_columns(self, X: pd.DataFrame, num_threads: int = 1) -> pd.DataFrame:
        """``expected_value`` and ``value_if_retained`` over ``horizon_days``."""
        X = self._check(X)
        lifetimes, days = self.lifetimes_, self.horizon_days
        if self.method_ == "blend":
            expected = self.level_ * self._supervised(X, lifetimes)
        else:
            expected = lifetimes.expected(X, days)
        retained = np.maximum(lifetimes.retained(X, days), expected)
        return pd.DataFrame(
            {"expected_value": expected, "value_if_retained": retained}, index=X.index
        )

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """``expected_value`` alone."""
        return self.predict_columns(X)["expected_value"].to_numpy()

    def retained_value(self, X: pd.DataFrame) -> np.ndarray:
        """The buy-till-you-die spend if retained, from the ``rfm_*`` and ``cycle_*``
        columns alone (what the scoring plan's value tiers are cut on)."""
        return self.lifetimes_.retained(X, self.horizon_days)

    @classmethod
    def empty_columns(cls, index: pd.Index) -> pd.DataFrame:
        nan = np.full(len(index), np.nan)
        return pd.DataFrame({"expected_value": nan, "value_if_retained": nan}, index=index)

    def metadata(self) -> dict[str, Any]:
        return {
            **super().metadata(),
            "horizon_days": self.horizon_days,
            "method": self.method_,
            "reason": self.reason_,
            "weights": list(self.weights_),
            "level": self.level_,
            "lifetimes": self.lifetimes_.to_dict(),
        }

    def validation_score(self, X: pd.DataFrame, y: pd.Series | None = None) -> float | None:
        """The mean of Spearman and normalised Gini of ``expected_value`` against the spend
        ``y`` that followed."""
        if y is None or any(c not in X.columns for c in self.feature_names_in_):
            return None
        return _score(
            np.asarray(y, dtype=float), self.predict_columns(X)["expected_value"].to_numpy()
        )
