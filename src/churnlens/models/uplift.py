"""Uplift: per contact action, how much contacting a customer changes their chance to buy.

``UpliftModel.fit(X, action, treated, outcome, propensity)`` learns, from the randomised
control groups (:mod:`churnlens.experiments`), the uplift ``tau_a(x) = P(buy | x, treated
with a) - P(buy | x, control of a)`` of every action ``a`` with enough customers in both
groups (``min_treated``, ``min_control``); the others land in ``skipped_`` with the reason.
The design's propensity (1 - the action's control share) is exact: none is fitted. One
campaign gives a few hundred customers per action, and uplift is a small difference of
two noisy rates, so the model borrows strength and trusts only what it can show:

1. **Pooled outcome models.** ``mu1`` (fitted on the treated of every learned action)
   and ``mu0`` (on the controls), LightGBM on the features plus one indicator per
   action, so an action with few customers learns the baseline from the others'
   customers. They are cross-fitted over ``folds`` folds (stratified by action, group
   and outcome; by customer when stacked campaigns hold a customer more than once):
   each row's ``mu1(x)``, ``mu0(x)`` come from models fitted on the other folds.
2. **Doubly robust pseudo-outcomes** (Kennedy, "Towards optimal doubly robust estimation
   of heterogeneous causal effects", 2020): ``phi = mu1 - mu0 + T (Y - mu1) / e - (1 - T)
   (Y - mu0) / (1 - e)``, whose mean given ``x`` is ``tau(x)`` because ``e`` is the
   design's. An action's average effect is the mean of its ``phi`` (the regression-
   adjusted difference of rates), with its standard error.
3. **A ranking score** ``s_a(x)`` per action, out of fold for every training row: the
   T-learner's ``mu1 - mu0`` (``learner="t"``), or a LightGBM regressor of ``phi`` on the
   features fitted per action (``"dr"``, the DR-learner).
4. **Calibration by the best linear predictor** (Chernozhukov, Demirer, Duflo &
   Fernandez-Val), out of fold, in :mod:`~churnlens.models.uplift_calibration`: the
   average effect and the slope of ``phi`` on ``s - mean(s)`` (how much of the score's
   spread is real), each shrunk toward 0 by its own standard error, the slope kept
   within [0, 1] and only when the test of "no heterogeneity" rejects at 5% over the
   actions (Bonferroni; its error ignores the fold-to-fold variation of the score, so
   it rejects about twice its nominal level on data without any effect). The average
   effect is spread by the room each customer has for it (``risk_shape``: a positive
   effect in proportion to the churn probability, a score input; a negative one to the
   chance to buy), a prior the pseudo-outcomes may overrule (``shape_weight``). The
   uplift is ``ate x shape(x) + slope x (s(x) - mean(s))`` (at prediction, ``s`` from
   the models refitted on every row, centred on its mean over the action's rows): an
   action whose effect or heterogeneity is within noise predicts 0, or its average
   effect spread by risk, rather than noise that a large ``value_if_retained`` would
   turn into a priority. ``prior_`` is the uplift of a contact action without a model
   of its own (too few customers): what the actions do on average, spread by risk.

Evaluation is out of fold: ``oof_score_`` holds every training row's ranking score from
models that did not see its fold, ``oof_uplift_`` its calibrated uplift. For the
DR-learner, ``phi`` on the other folds comes from outcome models that saw the held-out
fold: a small, second-order leak accepted rather than nesting the cross-fitting (on data
without any effect the out-of-fold Qini coefficient showed no upward bias over 30 seeds).
``oof_uplift_`` is calibrated on the other folds too. ``evaluation_`` holds per action
the counts, rates, calibration, and the out-of-fold score's Qini and AUUC; ``curves_``
its Qini curve; ``ranking_check_`` whether ranking by out-of-fold incremental value
beats value at risk (``--rank-by auto``'s choice). Predictions use models fit on all.
Folds are drawn from ``seed``; LightGBM is deterministic: same seed and data, same model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from churnlens.actions import PRIOR, UPLIFT
from churnlens.errors import ModelError
from churnlens.models.base import ChurnlensModel
from churnlens.models.uplift_calibration import (
    calibrated_uplift,
    calibration,
    cross_calibrated,
    prior,
)
from churnlens.uplift_metrics import ranking_check, thin, uplift_curve, uplift_summary

LEARNERS = ("dr", "t")
PREFIX = f"{UPLIFT}_"  # a column per action, as the policy reads them
RISK = "churn_probability"  # spreads the average effect (see the calibration)

# a fitted outcome model: LightGBM, or the constant rate when one group's outcome never
# varies (LightGBM cannot fit one class)
Outcome = lgb.LGBMClassifier | float


class UpliftModel(ChurnlensModel, BaseEstimator):
    """Per-action uplift of the chance to buy (see the module docstring)."""

    kind = "uplift"
    # the churn and value models' outputs summarise the history: the outcome models take
    # them beside the features (train-uplift reads them from each campaign's scores)
    score_inputs = (RISK, "value_if_retained")

    def __init__(
        self,
        learner: str = "dr",
        n_estimators: int = 100,
        learning_rate: float = 0.05,
        num_leaves: int = 4,
        min_child_samples: int = 100,
        folds: int = 3,
        min_treated: int = 10,
        min_control: int = 10,
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

    def _fold_ids(self, strata: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
        """A fold per row, stratified by ``strata``, drawn from the seed; with ``groups``
        (a customer in several stacked campaigns, as codes 0..k-1), the rows of a group
        share a fold."""
        rng = np.random.default_rng(self.seed)
        if groups is not None:
            count = int(groups.max()) + 1
            of_group = np.empty(count, dtype=np.int64)
            of_group[rng.permutation(count)] = np.arange(count) % self.folds
            return of_group[groups]
        fold = np.empty(len(strata), dtype=np.int64)
        start = 0
        for stratum in np.unique(strata):
            rows = rng.permutation(np.flatnonzero(strata == stratum))
            fold[rows] = (start + np.arange(len(rows))) % self.folds
            start += len(rows)
        return fold

    def _design(self, A: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The pooled outcome models' input: the features and one indicator per action."""
        indicators = codes[:, None] == np.arange(len(self.models_))[None, :]
        return np.hstack([A, indicators.astype(np.float64)])

    def _pooled(
        self, D: np.ndarray, t: np.ndarray, y: np.ndarray, fold: np.ndarray, num_threads: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Out-of-fold ``mu1``, ``mu0`` of every row; the models fitted on all rows are
        kept in ``outcomes_``."""
        mu1, mu0 = np.empty(len(y)), np.empty(len(y))
        for k in range(self.folds):
            held, train = fold == k, fold != k
            m1 = self._outcome(D[train & t], y[train & t], num_threads)
            m0 = self._outcome(D[train & ~t], y[train & ~t], num_threads)
            mu1[held] = _probability(m1, D[held], num_threads)
            mu0[held] = _probability(m0, D[held], num_threads)
        self.outcomes_ = {
            "mu1": self._outcome(D[t], y[t], num_threads),
            "mu0": self._outcome(D[~t], y[~t], num_threads),
        }
        return mu1, mu0

    def _ranking_score(
        self, A: np.ndarray, phi: np.ndarray, tau: np.ndarray, fold: np.ndarray, num_threads: int
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """One action's out-of-fold ranking score and, for the DR-learner, its regressor."""
        if self.learner == "t":
            return tau, {}
        score = np.empty(len(phi))
        for k in range(self.folds):
            held, train = fold == k, fold != k
            stage = self._regressor(A[train], phi[train], num_threads)
            score[held] = stage.booster_.predict(A[held], num_threads=num_threads)
        return score, {"tau": self._regressor(A, phi, num_threads)}

    def fit(
        self,
        X: pd.DataFrame,
        action: Any,
        treated: Any,
        outcome: Any,
        propensity: Any,
        num_threads: int = 1,
        groups: Any = None,
    ) -> UpliftModel:
        """Fit per action on customers of a randomised experiment; returns self.

        ``action``: each row's action (rows without one are ignored); ``treated``: True
        for the treatment group, False for the controls; ``outcome``: 1 when the customer
        bought within the horizon, else 0; ``propensity``: the design's P(treated) for the
        row (1 - its action's control share), a scalar or one per row; ``groups``: the
        customer of each row when campaigns are stacked (a customer's rows share a fold,
        and standard errors are clustered by customer).
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
        self.outcomes_: dict[str, Outcome] = {}  # the pooled outcome models (none: no action)
        self.skipped_: dict[str, str] = {}
        self.prior_: dict[str, Any] | None = None  # for actions without a model
        self.evaluation_: dict[str, dict[str, float | int]] = {}
        self.curves_: dict[str, pd.DataFrame] = {}
        keys = actions.astype(str).where(present, None)  # names as text, like the columns
        codes = np.full(n, -1, dtype=np.int64)
        for name in sorted(keys[present].unique()):
            rows = (keys == name).to_numpy()
            reason = self._too_few(int(t[rows].sum()), int((~t[rows]).sum()))
            if reason:
                self.skipped_[name] = reason
            else:
                codes[rows] = len(self.models_)
                self.models_[name] = {}
        oof, score = np.full(n, np.nan), np.full(n, np.nan)
        cluster = None
        if groups is not None:
            cluster = np.asarray(groups, dtype=object).ravel().astype(str)
            if len(cluster) != n:
                raise ModelError(f"groups has {len(cluster)} rows, X has {n}")
        if self.models_:
            used = codes >= 0
            given = None
            if cluster is not None:  # customers as codes 0..k-1, once
                grouped = pd.factorize(cluster[used], sort=True)[0]  # as np.unique numbers them
                if np.bincount(grouped).max() > 1:
                    given = grouped  # only when a customer has several rows
            oof[used], score[used] = self._fit_pooled(
                A[used], codes[used], t[used], y[used], e[used], num_threads, given
            )
        self.oof_uplift_ = pd.Series(oof, index=X.index, name="oof_uplift")
        self.oof_score_ = pd.Series(score, index=X.index, name="oof_score")
        return self

    def _fit_pooled(
        self,
        A: np.ndarray,
        codes: np.ndarray,
        t: np.ndarray,
        y: np.ndarray,
        e: np.ndarray,
        num_threads: int,
        groups: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Steps 1-4 of the module docstring on the rows of the fitted actions; returns
        their out-of-fold calibrated uplift and ranking score."""
        fold = self._fold_ids(codes * 4 + t.astype(np.int64) * 2 + y, groups)
        mu1, mu0 = self._pooled(self._design(A, codes), t, y, fold, num_threads)
        phi = mu1 - mu0 + t * (y - mu1) / e - (~t) * (y - mu0) / (1 - e)
        oof, score = np.empty(len(y)), np.empty(len(y))
        risk, tests = self._risk(A), len(self.models_)
        found: list[tuple[dict[str, Any], dict[str, float]]] = []
        for code in range(tests):
            rows = codes == code
            score[rows], models = self._ranking_score(
                A[rows], phi[rows], (mu1 - mu0)[rows], fold[rows], num_threads
            )
            cut, own = _rows(groups, rows), _rows(risk, rows)
            found.append((models, calibration(phi[rows], score[rows], tests, cut, own)))
        self.prior_ = prior([fitted for _, fitted in found], risk)
        for code, (name, (models, fitted)) in enumerate(zip(self.models_, found, strict=True)):
            rows = codes == code
            cut, own = _rows(groups, rows), _rows(risk, rows)
            keys = ("ate", "slope", "center", "risk_mean", "shape_weight")
            model = {**models, **{k: fitted[k] for k in keys}}
            # predictions centre the refitted model's score on its own mean over the rows
            model["center"] = float(self._score(A[rows], code, model, num_threads).mean())
            self.models_[name] = model
            oof[rows] = cross_calibrated(phi[rows], score[rows], own, fold[rows], cut, tests)
            tr, yr = t[rows], y[rows]
            self.evaluation_[name] = {
                **_evaluation(score[rows], tr, yr, e[rows]),
                **fitted,
                "oof_uplift_mean": float(oof[rows].mean()),
            }
            self.curves_[name] = thin(uplift_curve(score[rows], tr, yr))
        value = np.flatnonzero(self.feature_names_in_ == "value_if_retained")  # a score input
        self.ranking_check_ = ranking_check(phi, oof, risk, A[:, value[0]] if len(value) else None)
        return oof, score

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
        """``uplift_<action>`` per fitted action, clipped to [-1, 1], indexed like ``X``;
        and :data:`PRIOR`, the uplift of a contact action without a model of its own."""
        A = self._matrix(X)
        risk, columns = self._risk(A), {}
        for code, (name, fitted) in enumerate(self.models_.items()):
            score = self._score(A, code, fitted, num_threads)
            columns[PREFIX + name] = calibrated_uplift(fitted, score, risk)
        if getattr(self, "prior_", None) is not None:  # none in a model saved before it
            columns[PRIOR] = calibrated_uplift(self.prior_, np.zeros(len(A)), risk)
        return pd.DataFrame(columns, index=X.index)

    def _risk(self, A: np.ndarray) -> np.ndarray | None:
        """The churn probability column of ``A`` (a score input), if the model has it."""
        where = np.flatnonzero(self.feature_names_in_ == RISK)
        return A[:, where[0]] if len(where) else None

    def _score(
        self, A: np.ndarray, code: int, fitted: dict[str, Any], num_threads: int
    ) -> np.ndarray:
        """The ranking score of the action ``code`` from the models fitted on every row."""
        if self.learner_ == "t":
            D = self._design(A, np.full(len(A), code))
            mu1 = _probability(self.outcomes_["mu1"], D, num_threads)
            return mu1 - _probability(self.outcomes_["mu0"], D, num_threads)
        return fitted["tau"].booster_.predict(A, num_threads=num_threads)

    def predict_columns(self, X: pd.DataFrame, num_threads: int = 1) -> pd.DataFrame:
        """:meth:`predict_uplift`: ``uplift_<action>`` per fitted action."""
        return self.predict_uplift(X, num_threads)

    @classmethod
    def empty_columns(cls, index: pd.Index) -> pd.DataFrame:
        """No columns: without a model there is no action to name one after."""
        return pd.DataFrame(index=index)

    # ------------------------------------------------------------------------- records

    @classmethod
    def load(cls, files: Mapping[str, bytes], metadata: dict[str, Any]) -> UpliftModel:
        """The saved model; one fitted by churnlens before the calibrated learner (separate
        learners per action, no ``outcomes_``) is refused with what to do."""
        model = super().load(files, metadata)
        calibrated = all("ate" in fitted for fitted in getattr(model, "models_", {}).values())
        if not calibrated or (model.learner_ == "t" and not hasattr(model, "outcomes_")):
            raise ModelError(
                "the uplift model was fitted by an earlier churnlens (one uncalibrated "
                "learner per action); fit it again with `churnlens train-uplift` on the "
                "same campaigns, or score with --uplift-model none"
            )
        return model  # type: ignore[return-value]

    def metadata(self) -> dict[str, Any]:
        return {
            **super().metadata(),
            "learner": self.learner_,
            "params": {k: v for k, v in self.get_params().items() if k != "learner"},
            "actions": list(self.models_),
            "skipped": dict(self.skipped_),
            "ranking_check": getattr(self, "ranking_check_", None),
            "evaluation": {a: dict(m) for a, m in self.evaluation_.items()},
        }

    def ranks_by_increment(self) -> bool:
        """Whether ``--rank-by auto`` ranks by incremental value (see ``ranking_check_``)."""
        check = getattr(self, "ranking_check_", None)
        return True if check is None else bool(check["ranks_by_increment"])

    def validation_score(self, X: pd.DataFrame, y: pd.Series | None = None) -> float | None:
        """The mean out-of-fold Qini coefficient over the fitted actions (the arguments
        are ignored: uplift needs the groups, which the evaluation at fit time had)."""
        if not self.evaluation_:
            return None
        return float(np.mean([m["qini"] for m in self.evaluation_.values()]))


def _rows(values: np.ndarray | None, rows: np.ndarray) -> np.ndarray | None:
    return None if values is None else values[rows]


def _probability(model: Outcome, A: np.ndarray, num_threads: int) -> np.ndarray:
    if isinstance(model, float):
        return np.full(len(A), model)
    return model.booster_.predict(A, num_threads=num_threads)


def _evaluation(
    score: np.ndarray, t: np.ndarray, y: np.ndarray, e: np.ndarray
) -> dict[str, float | int]:
    """Counts, rates and the out-of-fold Qini and AUUC of one action's ranking score."""
    n_t, n_c = int(t.sum()), int((~t).sum())
    rate_t, rate_c = float(y[t].mean()), float(y[~t].mean())
    return {
        "rows": n_t + n_c,
        "treated": n_t,
        "control": n_c,
        "propensity": float(e.mean()),
        "buy_rate_treated": rate_t,
        "buy_rate_control": rate_c,
        "difference_of_rates": rate_t - rate_c,
        **{k: float(v) for k, v in uplift_summary(score, t, y).items()},
    }
