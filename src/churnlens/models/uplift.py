"""Uplift: per contact action, how much contacting a customer changes their chance to buy.

``UpliftModel.fit(X, action, treated, outcome, propensity)`` learns, from the randomised
control groups (:mod:`churnlens.experiments`), the uplift ``tau_a(x) = P(buy | x, treated
with a) - P(buy | x, control of a)`` of every action ``a`` with enough customers in both
groups (``min_treated``, ``min_control``); the others land in ``skipped_`` with the reason.
Treatment is randomised with a known probability (``propensity``, 1 - the action's
control share), so no propensity model is fitted: the design's probability is exact.

Two learners, all parts LightGBM:

- ``"dr"``, the DR-learner (Kennedy, "Towards optimal doubly robust estimation of
  heterogeneous causal effects", 2020): outcome models ``mu1`` (fitted on the treated)
  and ``mu0`` (on the controls), cross-fitted over ``folds`` folds (each row's
  ``mu1(x)``, ``mu0(x)`` come from models fitted on the other folds), the pseudo-outcome
  ``phi = mu1(x) - mu0(x) + T (Y - mu1(x)) / e - (1 - T) (Y - mu0(x)) / (1 - e)``, whose
  mean given ``x`` is ``tau(x)`` whenever ``e`` is right (it is: the design sets it), and
  a regressor of ``phi`` on ``x``, the uplift model;
- ``"t"``, the T-learner: ``mu1(x) - mu0(x)``, the two outcome models fitted apart.

Evaluation is out of fold: ``oof_uplift_`` holds, for every training row, the uplift
predicted by models that did not see its fold (the T-learner's cross-fitted outcome
models; for the DR-learner, a regressor of ``phi`` fitted per fold on the other folds).
The DR-learner's ``phi`` on those other folds comes from outcome models that saw the
held-out fold, never its own rows' ``phi``: a small, second-order leak the evaluation
accepts rather than nesting the cross-fitting (on data without any effect, the
out-of-fold Qini coefficient showed no upward bias over 30 seeds, as for the T-learner).
``evaluation_`` holds per action the Qini coefficient and AUUC of ``oof_uplift_``
against random targeting (:mod:`churnlens.uplift_metrics`) and the counts; ``curves_``
its Qini curve, thinned to about 101 points. The models used to predict are then fitted
on every row.

Folds are stratified by group and outcome and drawn from ``seed``; LightGBM runs
deterministically, so a fixed seed gives the same model on the same data.
"""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from churnlens.errors import ModelError
from churnlens.models.base import ChurnlensModel
from churnlens.uplift_metrics import thin, uplift_curve, uplift_summary

LEARNERS = ("dr", "t")
PREFIX = "uplift_"

# a fitted outcome model: LightGBM, or the constant rate when one group's outcome never
# varies (LightGBM cannot fit one class)
Outcome = lgb.LGBMClassifier | float


class UpliftModel(ChurnlensModel, BaseEstimator):
    """Per-action uplift of the chance to buy (see the module docstring)."""

    kind = "uplift"

    def __init__(
        self,
        learner: str = "dr",
        n_estimators: int = 200,
        learning_rate: float = 0.05,
        num_leaves: int = 15,
        min_child_samples: int = 40,
        folds: int = 3,
        min_treated: int = 200,
        min_control: int = 50,
        seed: int = 7,
    ) -> None:
        self.learner = learner
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.folds = folds
        self.min_treated = min_treated
        self.min_control = min_control
        self.seed = seed

    # ------------------------------------------------------------------------------ fit

    def _params(self, num_threads: int) -> dict[str, Any]:
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_child_samples": self.min_child_samples,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.8,
            "reg_lambda": 5.0,
            "random_state": self.seed,
            "n_jobs": num_threads,
            "deterministic": True,
            "force_row_wise": True,
            "verbose": -1,
        }

    def _outcome(self, A: np.ndarray, y: np.ndarray, num_threads: int) -> Outcome:
        if len(y) == 0:
            raise ModelError("an outcome model has no rows to learn from")
        if y.min() == y.max():
            return float(y[0])
        return lgb.LGBMClassifier(**self._params(num_threads)).fit(A, y)

    def _regressor(self, A: np.ndarray, phi: np.ndarray, num_threads: int) -> lgb.LGBMRegressor:
        return lgb.LGBMRegressor(**self._params(num_threads)).fit(A, phi)

    def _fold_ids(self, t: np.ndarray, y: np.ndarray) -> np.ndarray:
        """A fold per row, stratified by (group, outcome), drawn from the seed."""
        rng = np.random.default_rng(self.seed)
        strata = t.astype(np.int64) * 2 + y
        fold = np.empty(len(t), dtype=np.int64)
        start = 0
        for stratum in np.unique(strata):
            rows = rng.permutation(np.flatnonzero(strata == stratum))
            fold[rows] = (start + np.arange(len(rows))) % self.folds
            start += len(rows)
        return fold

    def _fit_action(
        self, A: np.ndarray, t: np.ndarray, y: np.ndarray, e: np.ndarray, num_threads: int
    ) -> tuple[dict[str, Any], np.ndarray]:
        """The models one action predicts with, and its out-of-fold uplift."""
        fold = self._fold_ids(t, y)
        mu1, mu0 = np.empty(len(y)), np.empty(len(y))
        for k in range(self.folds):
            held, train = fold == k, fold != k
            m1 = self._outcome(A[train & t], y[train & t], num_threads)
            m0 = self._outcome(A[train & ~t], y[train & ~t], num_threads)
            mu1[held] = _probability(m1, A[held], num_threads)
            mu0[held] = _probability(m0, A[held], num_threads)
        if self.learner == "t":
            oof = mu1 - mu0
            models = {
                "mu1": self._outcome(A[t], y[t], num_threads),
                "mu0": self._outcome(A[~t], y[~t], num_threads),
            }
        else:
            phi = mu1 - mu0 + t * (y - mu1) / e - (~t) * (y - mu0) / (1 - e)
            oof = np.empty(len(y))
            for k in range(self.folds):
                held, train = fold == k, fold != k
                stage = self._regressor(A[train], phi[train], num_threads)
                oof[held] = stage.booster_.predict(A[held], num_threads=num_threads)
            models = {"tau": self._regressor(A, phi, num_threads)}
        return models, np.clip(oof, -1.0, 1.0)

    def fit(
        self,
        X: pd.DataFrame,
        action: Any,
        treated: Any,
        outcome: Any,
        propensity: Any,
        num_threads: int = 1,
    ) -> UpliftModel:
        """Fit per action on customers of a randomised experiment; returns self.

        ``action``: each row's action (rows without one are ignored); ``treated``: True
        for the treatment group, False for the controls; ``outcome``: 1 when the customer
        bought within the horizon, else 0; ``propensity``: the design's P(treated) for the
        row (1 - its action's control share), a scalar or one per row.
        """
        if self.learner not in LEARNERS:
            raise ModelError(f"unknown uplift learner {self.learner!r}; use one of {LEARNERS}")
        if self.folds < 2:
            raise ModelError(f"cross-fitting needs at least 2 folds, got {self.folds}")
        n = len(X)
        actions = pd.Series(np.asarray(action, dtype=object).ravel())
        t = np.asarray(treated).ravel()
        y = np.asarray(outcome, dtype=np.float64).ravel()
        e = np.broadcast_to(np.asarray(propensity, dtype=np.float64), (n,)).copy()
        if not (len(actions) == len(t) == len(y) == n):
            raise ModelError(
                f"X, action, treated and outcome differ in length "
                f"({n}, {len(actions)}, {len(t)}, {len(y)})"
            )
        if not np.isin(y, [0.0, 1.0]).all():
            raise ModelError("the outcome must be 0 or 1 (bought within the horizon or not)")
        if not np.isin(np.unique(t), [0, 1]).all():
            raise ModelError("treated must be boolean (True: treatment group, False: control)")
        t = t.astype(bool)
        y = y.astype(np.int64)
        present = actions.notna().to_numpy()
        if not ((e[present] > 0) & (e[present] < 1)).all():
            raise ModelError("the propensity P(treated) must lie strictly between 0 and 1")

        self.feature_names_in_ = np.array(X.columns, dtype=object)
        self.learner_ = self.learner
        A = self._matrix(X)
        self.models_: dict[str, dict[str, Any]] = {}
        self.skipped_: dict[str, str] = {}
        self.evaluation_: dict[str, dict[str, float | int]] = {}
        self.curves_: dict[str, pd.DataFrame] = {}
        oof = np.full(n, np.nan)
        keys = actions[present].astype(str)
        for name in sorted(keys.unique()):
            rows = keys.index[keys == name].to_numpy()
            n_t, n_c = int(t[rows].sum()), int((~t[rows]).sum())
            reason = self._too_few(n_t, n_c)
            if reason:
                self.skipped_[name] = reason
                continue
            self.models_[name], oof[rows] = self._fit_action(
                A[rows], t[rows], y[rows], e[rows], num_threads
            )
            self.evaluation_[name] = _evaluation(oof[rows], t[rows], y[rows], e[rows])
            self.curves_[name] = thin(uplift_curve(oof[rows], t[rows], y[rows]))
        self.oof_uplift_ = pd.Series(oof, index=X.index, name="oof_uplift")
        return self

    def _too_few(self, n_t: int, n_c: int) -> str:
        need_t, need_c = max(self.min_treated, self.folds), max(self.min_control, self.folds)
        short = []
        if n_t < need_t:
            short.append(f"{n_t} treated, needs {need_t}")
        if n_c < need_c:
            short.append(f"{n_c} controls, needs {need_c}")
        return "; ".join(short)

    # -------------------------------------------------------------------------- predict

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        """The feature columns in ``feature_names_in_`` order, as float64."""
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ModelError(
                f"the data lacks {len(missing)} feature(s) the uplift model was trained on, "
                f"e.g. {missing[:3]}; build features with the model's configuration"
            )
        try:
            return X[list(self.feature_names_in_)].to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as error:
            raise ModelError(f"the uplift model's features must be numeric: {error}") from None

    def predict_uplift(self, X: pd.DataFrame, num_threads: int = 1) -> pd.DataFrame:
        """``uplift_<action>`` per fitted action, clipped to [-1, 1], indexed like ``X``."""
        A = self._matrix(X)
        columns = {}
        for name, models in self.models_.items():
            if self.learner_ == "t":
                u = _probability(models["mu1"], A, num_threads) - _probability(
                    models["mu0"], A, num_threads
                )
            else:
                u = models["tau"].booster_.predict(A, num_threads=num_threads)
            columns[PREFIX + name] = np.clip(u, -1.0, 1.0)
        return pd.DataFrame(columns, index=X.index)

    def predict_columns(self, X: pd.DataFrame, num_threads: int = 1) -> pd.DataFrame:
        """:meth:`predict_uplift`: ``uplift_<action>`` per fitted action."""
        return self.predict_uplift(X, num_threads)

    @classmethod
    def empty_columns(cls, index: pd.Index) -> pd.DataFrame:
        """No columns: without a model there is no action to name one after."""
        return pd.DataFrame(index=index)

    # ------------------------------------------------------------------------- records

    def metadata(self) -> dict[str, Any]:
        return {
            **super().metadata(),
            "learner": self.learner_,
            "params": {k: v for k, v in self.get_params().items() if k != "learner"},
            "actions": list(self.models_),
            "skipped": dict(self.skipped_),
            "evaluation": {a: dict(m) for a, m in self.evaluation_.items()},
        }

    def validation_score(self, X: pd.DataFrame, y: pd.Series | None = None) -> float | None:
        """The mean out-of-fold Qini coefficient over the fitted actions (the arguments
        are ignored: uplift needs the groups, which the evaluation at fit time had)."""
        if not self.evaluation_:
            return None
        return float(np.mean([m["qini"] for m in self.evaluation_.values()]))


def _probability(model: Outcome, A: np.ndarray, num_threads: int) -> np.ndarray:
    if isinstance(model, float):
        return np.full(len(A), model)
    return model.booster_.predict(A, num_threads=num_threads)


def _evaluation(
    oof: np.ndarray, t: np.ndarray, y: np.ndarray, e: np.ndarray
) -> dict[str, float | int]:
    """Counts, rates and the out-of-fold Qini and AUUC of one action."""
    n_t, n_c = int(t.sum()), int((~t).sum())
    rate_t, rate_c = float(y[t].mean()), float(y[~t].mean())
    return {
        "rows": n_t + n_c,
        "treated": n_t,
        "control": n_c,
        "propensity": float(e.mean()),
        "buy_rate_treated": rate_t,
        "buy_rate_control": rate_c,
        "ate": rate_t - rate_c,
        "oof_uplift_mean": float(oof.mean()),
        **{k: float(v) for k, v in uplift_summary(oof, t, y).items()},
    }
