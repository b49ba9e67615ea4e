"""The churn classifier: LightGBM, calibrated out of time, with honest baselines beside it.

``ChurnModel.fit(X, y)`` takes stacked snapshots indexed by (as_of, customer_id). The
latest snapshot is the time-based validation set:

1. LightGBM is fitted on the earlier snapshots and scored on the latest one;
2. the trees' weight over the logistic part and a calibrator (none, sigmoid, isotonic)
   are chosen on those out-of-time scores (:mod:`~churnlens.models.blending`), and the
   validation metrics of the raw and calibrated scores are kept;
3. LightGBM is refitted on all snapshots and step 2's calibration (a sigmoid's slope, the
   level of the pooled snapshots: :func:`~churnlens.models.blending.keep_level`) is
   applied to its scores: the final model has seen the newest labels.

The fits of steps 1 and 3 (and the guard's, see :meth:`ChurnModel.fit`) are independent
and run side by side, one per core; each sees at most ``max_rows`` snapshot rows, a
seeded sample of whole customers beyond (:mod:`churnlens.models.fitting`): on 1.9M snapshot
rows, 300,000 gave every row's validation AUC, Brier and log loss to 4 decimals. Classes
are not re-weighted (it distorts probabilities); plain log loss; all seeded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.impute import SimpleImputer
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from churnlens.config import ModelSettings
from churnlens.errors import ModelError
from churnlens.evaluation import churn_metrics
from churnlens.models.attribution import PathExplainer
from churnlens.models.base import ChurnlensModel
from churnlens.models.blending import (
    METHODS,
    Snapshot,
    calibrated,
    choose,
    cross_fitted,
    fit_calibrator,
    keep_level,
)
from churnlens.models.fitting import (
    cap_rows,
    cores,
    customer_buckets,
    customer_ids,
    side_by_side,
    time_split,
)
from churnlens.reasons import top_reasons

RFM_COLUMNS = ("rfm_recency_days", "freq_tenure_days", "rfm_frequency", "rfm_monetary_total")


def rfm_matrix(X: pd.DataFrame) -> np.ndarray:
    recency = X["rfm_recency_days"].to_numpy(dtype=float)
    # no purchase yet: as if the last purchase were at the start of the customer's history
    recency = np.where(np.isnan(recency), X["freq_tenure_days"].to_numpy(dtype=float), recency)
    return np.column_stack(
        [
            recency,
            X["freq_tenure_days"].to_numpy(dtype=float),
            np.log1p(X["rfm_frequency"].to_numpy(dtype=float)),
            np.log1p(np.clip(X["rfm_monetary_total"].to_numpy(dtype=float), 0, None)),
        ]
    )


def logistic_rfm_baseline() -> Pipeline:
    """Logistic regression on recency, tenure, log frequency and log monetary value."""
    return make_pipeline(
        FunctionTransformer(rfm_matrix),
        SimpleImputer(strategy="median"),
        StandardScaler(),
        LogisticRegression(max_iter=1000),
    )


class RecencyBaseline(ClassifierMixin, BaseEstimator):
    """Days since the last purchase alone, mapped to a probability by isotonic regression."""

    def fit(self, X: pd.DataFrame, y: pd.Series) -> RecencyBaseline:
        self.isotonic_ = IsotonicRegression(out_of_bounds="clip", increasing=True)
        self.isotonic_.fit(self._recency(X), np.asarray(y, dtype=float))
        self.classes_ = np.array([0, 1])
        return self

    @staticmethod
    def _recency(X: pd.DataFrame) -> np.ndarray:
        r = X["rfm_recency_days"].to_numpy(dtype=float)
        return np.where(np.isnan(r), X["freq_tenure_days"].to_numpy(dtype=float) + 1e6, r)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = np.clip(self.isotonic_.predict(self._recency(X)), 0.0, 1.0)
        return np.column_stack([1 - p, p])


MIN_TRAINING_ROWS = 20  # customer snapshots before the validation snapshot


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


class BoostedFromBaseline(ClassifierMixin, BaseEstimator):
    """LightGBM boosted from the logistic RFM baseline's log-odds (its ``init_score``).

    The logistic part extrapolates smoothly in recency, tenure, frequency and spend,
    where trees can only repeat their last leaf (training snapshots see younger
    customers than the day being scored); the trees add what it misses. With
    ``baseline=False`` this is plain LightGBM.
    """

    def __init__(self, booster: lgb.LGBMClassifier, baseline: bool = True) -> None:
        self.booster = booster
        self.baseline = baseline

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> BoostedFromBaseline:
        self.logistic_ = logistic_rfm_baseline().fit(X, y) if self.baseline else None
        init = self._offset(X)
        self.booster_ = clone(self.booster).fit(X, y, init_score=init)
        self.classes_ = np.array([0, 1])
        return self

    def _offset(self, X: pd.DataFrame) -> np.ndarray | None:
        if self.logistic_ is None:
            return None
        return _logit(self.logistic_.predict_proba(X)[:, 1])

    def parts(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """The logistic part's log-odds (zeros without a baseline) and the trees'."""
        offset = self._offset(X)
        trees = self.booster_.predict(X, raw_score=True)
        return (np.zeros(len(X)) if offset is None else offset), trees

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        offset, trees = self.parts(X)
        return offset + self.weight() * trees

    def weight(self) -> float:
        """The trees' weight in the blend (chosen out of time by the churn model)."""
        return float(getattr(self, "tree_weight_", 1.0))

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.column_stack([1 - p, p])

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)

    def explain(
        self, X: pd.DataFrame, method: str = "path", num_threads: int = 1
    ) -> tuple[np.ndarray, pd.DataFrame]:
        """The log-odds and the per-feature contributions to them, in one pass.

        Trees: path attribution (``method="path"``, one leaf lookup per tree, see
        :mod:`churnlens.models.attribution`) or exact SHAP (``"shap"``, LightGBM
        ``pred_contrib``); the logistic part adds its coefficient times each
        standardised input.
        """
        booster = self.booster_.booster_
        if method == "shap":
            values = booster.predict(X, pred_contrib=True, num_threads=num_threads)[:, :-1]
            raw = self.booster_.predict(X, raw_score=True, num_threads=num_threads)
        elif method == "path":
            if getattr(self, "explainer_", None) is None:
                self.explainer_ = PathExplainer.from_booster(booster)
            values, raw = self.explainer_.explain(booster, X, num_threads)
        else:
            raise ModelError(f"unknown attribution method {method!r}; use 'path' or 'shap'")
        frame = pd.DataFrame(values * self.weight(), index=X.index, columns=X.columns)
        raw = raw * self.weight()
        offset = self._offset(X)
        if offset is not None:
            *prep, model = self.logistic_.steps
            z = Pipeline(prep).transform(X)
            for j, column in enumerate(RFM_COLUMNS):
                frame[column] += model[1].coef_[0, j] * z[:, j]
            raw = raw + offset
        return raw, frame

    def contributions(
        self, X: pd.DataFrame, method: str = "shap", num_threads: int = 1
    ) -> pd.DataFrame:
        """Per-feature log-odds contributions (see :meth:`explain`)."""
        return self.explain(X, method, num_threads)[1]

    def feature_importances(self) -> np.ndarray:
        return self.booster_.booster_.feature_importance(importance_type="gain")


class ChurnModel(ChurnlensModel, ClassifierMixin, BaseEstimator):
    """Calibrated LightGBM churn classifier (see the module docstring for the protocol).

    Parameters mirror :class:`~churnlens.config.ModelSettings`.
    """

    kind = "churn"

    def __init__(
        self,
        n_estimators: int = 300,
        learning_rate: float = 0.03,
        num_leaves: int = 15,
        min_child_samples: int = 100,
        subsample: float = 0.8,
        colsample_bytree: float = 0.8,
        reg_lambda: float = 5.0,
        extra_trees: bool = False,
        boost_from_baseline: bool = True,
        calibration: str = "auto",
        isotonic_min_samples: int = 5000,
        tree_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
        max_rows: int | None = 300_000,
        seed: int = 7,
        horizon_days: int = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.reg_lambda = reg_lambda
        self.extra_trees = extra_trees
        self.boost_from_baseline = boost_from_baseline
        self.calibration = calibration
        self.isotonic_min_samples = isotonic_min_samples
        self.tree_weights = tree_weights
        self.max_rows = max_rows
        self.seed = seed
        self.horizon_days = horizon_days

    @classmethod
    def from_settings(cls, settings: ModelSettings, horizon_days: int = 0) -> ChurnModel:
        return cls(**settings.model_dump(), horizon_days=horizon_days)

    def _booster(self) -> BoostedFromBaseline:
        return BoostedFromBaseline(self._trees(), baseline=self.boost_from_baseline)

    def _trees(self) -> lgb.LGBMClassifier:
        return lgb.LGBMClassifier(
            n_estimators=self.n_estimators,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_child_samples=self.min_child_samples,
            subsample=self.subsample,
            subsample_freq=1,
            colsample_bytree=self.colsample_bytree,
            reg_lambda=self.reg_lambda,
            extra_trees=self.extra_trees,
            random_state=self.seed,
            n_jobs=1,  # OpenMP threads thrash when the 2 cores are shared
            deterministic=True,
            force_row_wise=True,
            verbose=-1,
        )

    def _methods(self, n_valid: int) -> tuple[str, ...]:
        if self.calibration != "auto":
            return (self.calibration,)
        return METHODS if n_valid >= self.isotonic_min_samples else ("none", "sigmoid")

    def _weights(self) -> tuple[float, ...]:
        return tuple(self.tree_weights) if self.boost_from_baseline else (1.0,)

    def split(self, X: pd.DataFrame, y: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The (training, validation) rows of snapshots ``X`` with labels ``y``; raises
        :class:`ModelError` when they are too few to train on (a cheap check, run before
        any fit)."""
        y = np.asarray(y, dtype=int)
        if len(np.unique(y)) < 2:
            raise ModelError(
                f"the training labels hold one class only ({int(y[0])} for all {len(y):,} "
                "rows): every customer churned or none did; use a longer log or horizon"
            )
        train, valid = time_split(X, self.horizon_days)
        fit_rows, fit_churned = int(train.sum()), int(y[train].sum())
        if fit_rows < MIN_TRAINING_ROWS or fit_churned in (0, fit_rows) or not valid.any():
            raise ModelError(
                f"too little data to train: the snapshots before the validation one hold "
                f"{fit_rows:,} customer rows ({fit_churned:,} churned) and the validation "
                f"snapshot {int(valid.sum()):,}; training needs at least "
                f"{MIN_TRAINING_ROWS} rows with churners and stayers before a validation "
                "snapshot: use a log with more customers or more history, or a shorter "
                "--horizon-days"
            )
        return train, valid

    def fit(self, X: pd.DataFrame, y: pd.Series) -> ChurnModel:
        """Fit on snapshots indexed by (as_of, customer_id); returns self. The trees'
        weight and the calibration are chosen out of time (:mod:`~churnlens.models.blending`)
        on the validation snapshot and, when there is one, an earlier guard snapshot."""
        y = np.asarray(y, dtype=int)
        train, valid = self.split(X, y)
        self.feature_names_in_ = np.array(X.columns, dtype=object)
        # the staged model (scored on the validation snapshot), the guard's (on the one
        # before it) and the final one are independent: side by side, one per core
        buckets = customer_buckets(customer_ids(X), self.seed)
        fits = {"staged": (train, valid), "final": (np.ones(len(X), dtype=bool), None)}
        guard = self._guard(X, y, valid)
        if guard is not None:
            fits["guard"] = guard
        rows = {name: cap_rows(fit, buckets, self.max_rows) for name, (fit, _) in fits.items()}
        scored = {name: rows[name] if part is None else part for name, (_, part) in fits.items()}
        done = side_by_side({name: self._fit_task(X, y, rows[name], scored[name]) for name in fits})
        first = done["staged"][1]
        snapshots = [first] if guard is None else [first, done["guard"][1]]
        n_valid = int(valid.sum())
        choice = choose(snapshots, self._weights(), self._methods(n_valid), self.seed)
        self.tree_weight_, self.calibration_method_ = choice.weight, choice.method
        self.selection_ = choice.table
        log_odds = first.offset + choice.weight * first.trees
        self.calibrator_ = fit_calibrator(choice.method, log_odds, first.y)
        pool = done["final"][1]  # the final model on its own training rows: the pooled level
        pool_odds = pool.offset + choice.weight * pool.trees
        self.calibrator_ = keep_level(self.calibrator_, pool_odds, pool.y)
        # out of sample: the staged model, its calibration cross-fitted on the snapshot
        self.validation_scores_ = cross_fitted(choice.method, log_odds, first.y, self.seed)
        self.validation_ = {
            "rows": n_valid,
            "guard_rows": len(snapshots[1].y) if len(snapshots) > 1 else 0,
            "raw": churn_metrics(first.y, calibrated(None, first.offset + first.trees)),
            "calibrated": churn_metrics(first.y, self.validation_scores_),
        }
        self.booster_ = done["final"][0]
        self.booster_.tree_weight_ = self.tree_weight_
        self.classes_ = np.array([0, 1])
        return self

    def _fit_task(
        self, X: pd.DataFrame, y: np.ndarray, rows: np.ndarray, scored: np.ndarray
    ) -> Callable[[], tuple[BoostedFromBaseline, Snapshot]]:
        """A fit of the booster on ``rows`` of ``X`` and its parts on the ``scored`` rows
        (to run later)."""

        def run() -> tuple[BoostedFromBaseline, Snapshot]:
            fitted = self._booster().fit(*((X, y) if rows.all() else (X[rows], y[rows])))
            part = X if scored.all() else X[scored]
            return fitted, Snapshot(*fitted.parts(part), y[scored])

        return run

    def _guard(
        self, X: pd.DataFrame, y: np.ndarray, valid: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The rows (training, guard) of the snapshot before the validation one, scored
        by a model fitted on the snapshots whose label windows end by it; none when the
        log is too short or there is nothing to choose."""
        if len(self._weights()) * len(self._methods(int(valid.sum()))) == 1:
            return None  # nothing to choose
        earlier = ~valid
        if X.index.get_level_values("as_of")[earlier].nunique() < 2:
            return None
        # the split reads the index alone: no copy of the columns
        train_early, guard_early = time_split(
            pd.DataFrame(index=X.index[earlier]), self.horizon_days
        )
        if train_early.sum() < MIN_TRAINING_ROWS or len(np.unique(y[earlier][train_early])) < 2:
            return None
        if len(np.unique(y[earlier][guard_early])) < 2:
            return None
        train, guard = np.zeros(len(X), dtype=bool), np.zeros(len(X), dtype=bool)
        train[earlier], guard[earlier] = train_early, guard_early
        return train, guard

    def _check(self, X: pd.DataFrame) -> pd.DataFrame:
        expected = list(self.feature_names_in_)
        missing = [c for c in expected if c not in X.columns]
        if missing:
            raise ModelError(
                f"the data lacks {len(missing)} feature(s) the model was trained on, e.g. "
                f"{missing[:3]}; build features with the model's configuration"
            )
        return X[expected]

    def predict_raw(self, X: pd.DataFrame) -> np.ndarray:
        """The uncalibrated churn probability."""
        return self.booster_.predict_proba(self._check(X))[:, 1]

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        p = self._calibrate(self.booster_.decision_function(self._check(X)))
        return np.column_stack([1 - p, p])

    def _calibrate(self, raw_log_odds: np.ndarray) -> np.ndarray:
        # the calibrator maps the same response it was fitted on: the blend's log-odds
        return calibrated(self.calibrator_, raw_log_odds)

    def contributions(self, X: pd.DataFrame, method: str = "shap") -> pd.DataFrame:
        """Per-feature contributions to the uncalibrated log-odds."""
        return self.booster_.contributions(self._check(X), method)

    def reasons(self, X: pd.DataFrame, top: int = 3, method: str = "shap") -> pd.Series:
        """Up to ``top`` plain-words reasons per customer, strongest first."""
        return top_reasons(self.contributions(X, method), X, top)

    def score(
        self, X: pd.DataFrame, top: int = 3, method: str = "path", num_threads: int = 1
    ) -> tuple[np.ndarray, pd.Series]:
        """Calibrated churn probabilities and their reasons, from one pass over the trees."""
        X = self._check(X)
        raw, contributions = self.booster_.explain(X, method, num_threads)
        return self._calibrate(raw), top_reasons(contributions, X, top)

    def predict_columns(self, X: pd.DataFrame, num_threads: int = 1) -> pd.DataFrame:
        """``churn_probability`` and ``reasons`` (see :meth:`score`)."""
        probability, reasons = self.score(X, num_threads=num_threads)
        return pd.DataFrame(
            {"churn_probability": probability, "reasons": reasons.to_numpy()}, index=X.index
        )

    def explain(self, X: pd.DataFrame) -> pd.Series:
        """Up to three plain-words reasons per customer (path attribution)."""
        return self.score(X)[1]

    def metadata(self) -> dict[str, Any]:
        return {
            **super().metadata(),
            "calibration": self.calibration_method_,
            "validation_rows": self.validation_["rows"],
        }

    def validation_score(self, X: pd.DataFrame, y: pd.Series | None = None) -> float | None:
        """ROC AUC on ``(X, y)``; None without labels of both classes or without the
        model's features."""
        if y is None or len(np.unique(y)) < 2:
            return None
        if any(c not in X.columns for c in self.feature_names_in_):
            return None
        return float(roc_auc_score(y, self.predict_proba(X)[:, 1]))

    def feature_importance(self, X: pd.DataFrame | None = None) -> pd.Series:
        """Mean absolute contribution of each feature to the log-odds over ``X`` (the
        logistic part and the weighted trees together, exact SHAP for the trees), largest
        first; without ``X``, the trees' total gain."""
        if X is None:
            gain = self.booster_.feature_importances()
            return pd.Series(gain, index=self.feature_names_in_).sort_values(ascending=False)
        contributions = self.booster_.contributions(self._check(X), "shap", cores())
        return contributions.abs().mean().sort_values(ascending=False)
