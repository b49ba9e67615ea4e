"""K-means customer segments with readable names and ids that survive retraining.

``SegmentModel.fit(X)`` clusters the feature frame of :func:`churnlens.build_features` on a
fixed set of interpretable columns (:data:`DEFAULT_FEATURES`, those present in ``X``):

1. **fill** (documented, stateless): a missing ``rfm_recency_days`` (no purchase) becomes
   ``freq_tenure_days`` when that column is used, as if the last purchase were at the
   start of the customer's history; a missing ``cycle_overdue_ratio`` becomes that filled
   recency over ``cycle_days``; a missing ``rfm_monetary_mean`` is 0 and a missing
   ``chan_entropy`` (no contact) is 0. Counts, money, days and ratios
   (:data:`HEAVY_TAILED_PREFIXES`) go through a signed ``log1p``;
2. ``SimpleImputer(strategy="median")`` for whatever is still missing, ``StandardScaler``
   and ``KMeans(n_init=10, random_state=seed)``.

The number of segments ``k`` is fixed by ``k`` or chosen by the silhouette score over
``k_min..k_max``: each candidate is fitted and scored on one seeded sample of at most
``silhouette_sample`` rows; the final k-means is then fitted on all rows.

**Ids.** Without ``previous``, ids are 0..k-1 by decreasing size. With
``fit(X, previous=old)``, the new segments' centroids are computed in the *old* model's
scaled space (the new training rows transformed by the old pipeline) and matched to the
old centroids by the Hungarian algorithm on Euclidean distance: matched segments keep the
old ids, extra segments get fresh ids after the old maximum (larger segments first).

K-means runs single-threaded (OpenMP and BLAS pools limited to one thread): on shared
cores the threaded Lloyd loop was several times slower, and the results are the same.

**Names** compare segment medians, in original units, to population quantiles of the
training rows (see :func:`name_segment`); they never use a lifecycle stage word.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.cluster import KMeans
from sklearn.impute import SimpleImputer
from sklearn.metrics import silhouette_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from churnlens.config import SegmentSettings
from churnlens.errors import ModelError
from churnlens.models.base import ChurnlensModel

DEFAULT_FEATURES: tuple[str, ...] = (
    "rfm_recency_days", "rfm_frequency", "rfm_monetary_total", "rfm_monetary_mean",
    "cycle_days", "cycle_overdue_ratio", "freq_contacts_90d", "freq_tenure_days",
    "chan_n_channels", "chan_entropy", "fatigue_touches_90d", "rfm_has_purchase",
)  # fmt: skip
HEAVY_TAILED_PREFIXES: tuple[str, ...] = (
    "rfm_recency", "rfm_frequency", "rfm_monetary", "rfm_tenure", "cycle_days", "cycle_own",
    "cycle_overdue", "freq_contacts_", "freq_purchases_", "fatigue_touches", "gap_",
)  # fmt: skip
MIN_FEATURES = 3
LAPSING_OVERDUE = 2.0  # "lapsing": the median customer waited twice their usual cycle


def segment_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The documented fill and the signed log1p of heavy-tailed columns."""
    X = frame.astype(float)
    if "rfm_recency_days" in X and "freq_tenure_days" in X:
        X["rfm_recency_days"] = X["rfm_recency_days"].fillna(X["freq_tenure_days"])
    if {"cycle_overdue_ratio", "rfm_recency_days", "cycle_days"} <= set(X.columns):
        implied = X["rfm_recency_days"] / X["cycle_days"].where(X["cycle_days"] > 0)
        X["cycle_overdue_ratio"] = X["cycle_overdue_ratio"].fillna(implied)
    for column in ("rfm_monetary_mean", "chan_entropy"):
        if column in X:
            X[column] = X[column].fillna(0.0)
    values = X.to_numpy(dtype=float, copy=True)
    for j, column in enumerate(X.columns):
        if column.startswith(HEAVY_TAILED_PREFIXES):
            values[:, j] = np.sign(values[:, j]) * np.log1p(np.abs(values[:, j]))
    return values


def name_segment(seg: pd.DataFrame, pop: pd.DataFrame) -> str:
    """A short name for one segment from its rows ``seg`` and the population ``pop``.

    Rules (medians of the segment against quantiles q of the population; each rule only
    applies when its column is used). Adjectives, in this order:

    - ``recently joined``: tenure (``freq_tenure_days``) <= q25;
    - ``lapsing``: buyers whose ``cycle_overdue_ratio`` >= 2 (or, without that column,
      ``rfm_recency_days`` >= q75); ``engaged``: buyers whose ``cycle_overdue_ratio`` <= 1;
    - ``high value``: ``rfm_monetary_total`` > q75 and > 0; ``low value``: buyers <= q25;
    - ``frequent``: ``rfm_frequency`` > max(q75, 1);
    - ``multichannel``: ``chan_n_channels`` >= max(q75, 3); ``single-channel``: <= 1;
    - ``over-contacted``: ``fatigue_touches_90d`` >= max(q75, 2 x population median, 1).

    Then a noun: segments where fewer than half the customers bought are ``browsers``
    (``freq_contacts_90d`` > 0) or ``dormant non-buyers``; buyers with a median
    ``rfm_frequency`` <= 1 are ``one-timers``. Adjectives are joined by ", " and the noun
    follows, e.g. "engaged, high value, frequent, multichannel", "lapsing one-timers",
    "recently joined browsers"; a segment matching no rule is "mainstream". Names never
    use a lifecycle stage word (:data:`churnlens.lifecycle.STAGES`: new, active, silent,
    sleeping, lost), so that a customer's segment is not read as their stage.
    """

    def med(c: str) -> float:
        return float(seg[c].median())

    def q(c: str, p: float) -> float:
        return float(pop[c].quantile(p))

    has = set(seg.columns)
    if "rfm_has_purchase" in has:
        buyers = float(seg["rfm_has_purchase"].mean()) >= 0.5
    elif "rfm_recency_days" in has:
        buyers = float(seg["rfm_recency_days"].notna().mean()) >= 0.5
    else:
        buyers = "rfm_frequency" not in has or med("rfm_frequency") > 0
    words: list[str] = []
    if "freq_tenure_days" in has and med("freq_tenure_days") <= q("freq_tenure_days", 0.25):
        words.append("recently joined")
    if buyers and "cycle_overdue_ratio" in has:
        if med("cycle_overdue_ratio") >= LAPSING_OVERDUE:
            words.append("lapsing")
        elif med("cycle_overdue_ratio") <= 1:
            words.append("engaged")
    elif (
        buyers
        and "rfm_recency_days" in has
        and (med("rfm_recency_days") >= q("rfm_recency_days", 0.75))
    ):
        words.append("lapsing")
    if "rfm_monetary_total" in has:
        value = med("rfm_monetary_total")
        if value > max(q("rfm_monetary_total", 0.75), 0.0):
            words.append("high value")
        elif buyers and value <= q("rfm_monetary_total", 0.25):
            words.append("low value")
    if "rfm_frequency" in has and med("rfm_frequency") > max(q("rfm_frequency", 0.75), 1.0):
        words.append("frequent")
    if "chan_n_channels" in has:
        if med("chan_n_channels") >= max(q("chan_n_channels", 0.75), 3.0):
            words.append("multichannel")
        elif med("chan_n_channels") <= 1:
            words.append("single-channel")
    if "fatigue_touches_90d" in has:
        floor = max(q("fatigue_touches_90d", 0.75), 2 * q("fatigue_touches_90d", 0.5), 1.0)
        if med("fatigue_touches_90d") >= floor:
            words.append("over-contacted")
    noun = ""
    if not buyers:
        contacts = "freq_contacts_90d" not in has or med("freq_contacts_90d") > 0
        noun = "browsers" if contacts else "dormant non-buyers"
    elif "rfm_frequency" in has and med("rfm_frequency") <= 1:
        noun = "one-timers"
    name = " ".join(part for part in (", ".join(words), noun) if part)
    return name or "mainstream"


class SegmentModel(ChurnlensModel, ClusterMixin, BaseEstimator):
    """K-means customer segments (see the module docstring).

    Parameters
    ----------
    k : int or None
        Number of segments; ``None`` chooses it by silhouette over ``k_min..k_max``.
    k_min, k_max : int
        Range of ``k`` tried by the silhouette search.
    silhouette_sample : int
        Rows (seeded sample) on which candidate values of ``k`` are fitted and scored.
    seed : int
        Seed of the sample and of k-means.
    features : tuple of str or None
        Columns to cluster on; ``None`` uses :data:`DEFAULT_FEATURES` present in ``X``.
    """

    kind = "segments"

    def __init__(
        self,
        k: int | None = None,
        k_min: int = 3,
        k_max: int = 8,
        silhouette_sample: int = 5000,
        seed: int = 7,
        features: tuple[str, ...] | None = None,
    ) -> None:
        self.k = k
        self.k_min = k_min
        self.k_max = k_max
        self.silhouette_sample = silhouette_sample
        self.seed = seed
        self.features = features

    @classmethod
    def from_settings(cls, settings: SegmentSettings, k: int | None = None) -> SegmentModel:
        return cls(k=k, **settings.model_dump())

    def _pipeline(self, k: int) -> Pipeline:
        return Pipeline(
            [
                ("prepare", FunctionTransformer(segment_matrix)),
                ("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                ("scale", StandardScaler()),
                ("kmeans", KMeans(n_clusters=k, n_init=10, random_state=self.seed)),
            ]
        )

    def _select_features(self, X: pd.DataFrame) -> tuple[str, ...]:
        if not isinstance(X, pd.DataFrame):
            raise ModelError(f"segments need a feature DataFrame, got {type(X).__name__}")
        wanted = tuple(self.features) if self.features is not None else DEFAULT_FEATURES
        present = tuple(c for c in wanted if c in X.columns)
        missing = [c for c in wanted if c not in X.columns]
        if (self.features is not None and missing) or len(present) < MIN_FEATURES:
            raise ModelError(
                f"segments need at least {MIN_FEATURES} of the features {list(wanted)}; the "
                f"data lacks {missing} (has {len(present)}); pass the frame of "
                "churnlens.build_features or set features= to columns it has"
            )
        return present

    def _choose_k(self, Z: np.ndarray) -> tuple[int, dict[int, float]]:
        rng = np.random.default_rng(self.seed)
        n = min(self.silhouette_sample, len(Z))
        sample = Z[np.sort(rng.choice(len(Z), size=n, replace=False))]
        if self.k is not None:
            candidates = [int(self.k)]
        else:
            if self.k_min < 2 or self.k_max < self.k_min:
                raise ModelError(f"need 2 <= k_min <= k_max, got {self.k_min}..{self.k_max}")
            candidates = list(range(self.k_min, min(self.k_max, n - 1) + 1))
        scores: dict[int, float] = {}
        for k in candidates:
            if 2 <= k < n:
                km = KMeans(n_clusters=k, n_init=10, random_state=self.seed)
                labels = km.fit_predict(sample)
                ok = len(np.unique(labels)) > 1
                scores[k] = float(silhouette_score(sample, labels)) if ok else float("nan")
        if self.k is not None:
            return int(self.k), scores
        valid = {k: s for k, s in scores.items() if np.isfinite(s)}
        if not valid:
            raise ModelError(f"no k in {self.k_min}..{self.k_max} fits {len(Z)} rows")
        return max(valid, key=lambda k: (valid[k], -k)), scores

    def fit(
        self, X: pd.DataFrame, y: Any = None, previous: SegmentModel | None = None
    ) -> SegmentModel:
        """Fit the segments on a feature frame; ``previous`` keeps its ids. Returns self."""
        with threadpool_limits(limits=1):
            return self._fit(X, previous)

    def _fit(self, X: pd.DataFrame, previous: SegmentModel | None) -> SegmentModel:
        self.features_ = self._select_features(X)
        frame = X.loc[:, list(self.features_)]
        if self.k is not None and not 1 <= self.k <= len(frame):
            raise ModelError(f"k={self.k} segments need at least {self.k} rows, got {len(frame)}")
        pipe = self._pipeline(2)
        Z = pipe[:-1].fit_transform(frame)
        self.k_, self.silhouette_ = self._choose_k(Z)
        pipe.set_params(kmeans__n_clusters=self.k_)
        labels = pipe[-1].fit_predict(Z)
        self.pipeline_ = pipe
        self.feature_names_in_ = np.array(self.features_, dtype=object)
        sizes = np.bincount(labels, minlength=self.k_)
        by_size = np.argsort(-sizes, kind="stable")
        ids = np.empty(self.k_, dtype=int)
        if previous is None:
            ids[by_size] = np.arange(self.k_)
        else:
            ids = self._match(previous, X, labels, by_size)
        self.ids_ = ids
        self.segment_ids_ = sorted(int(i) for i in ids)
        names = {int(ids[j]): name_segment(frame[labels == j], frame) for j in by_size}
        self.segment_names_ = _unique(names, [int(ids[j]) for j in by_size])
        return self

    def _match(
        self, previous: SegmentModel, X: pd.DataFrame, labels: np.ndarray, by_size: np.ndarray
    ) -> np.ndarray:
        if not hasattr(previous, "pipeline_"):
            raise ModelError("previous= must be a fitted SegmentModel")
        missing = [c for c in previous.features_ if c not in X.columns]
        if missing:
            raise ModelError(f"previous segments used features the data lacks: {missing}")
        old_space = previous.pipeline_[:-1].transform(X.loc[:, list(previous.features_)])
        new_centers = np.vstack([old_space[labels == j].mean(axis=0) for j in range(self.k_)])
        old_centers = previous.pipeline_[-1].cluster_centers_
        rows, cols = linear_sum_assignment(cdist(new_centers, old_centers))
        ids = np.full(self.k_, -1, dtype=int)
        ids[rows] = previous.ids_[cols]
        fresh = int(previous.ids_.max()) + 1
        for j in by_size:
            if ids[j] < 0:
                ids[j], fresh = fresh, fresh + 1
        return ids

    def _check(self, X: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(X, pd.DataFrame):
            raise ModelError(f"segments need a feature DataFrame, got {type(X).__name__}")
        missing = [c for c in self.features_ if c not in X.columns]
        if missing:
            raise ModelError(f"the data lacks the segment features {missing}")
        return X.loc[:, list(self.features_)]

    def predict(self, X: pd.DataFrame) -> pd.Series:
        """Segment id (int) of every row, indexed like ``X``."""
        with threadpool_limits(limits=1):
            labels = self.pipeline_.predict(self._check(X))
        return pd.Series(self.ids_[labels], index=X.index, name="segment", dtype=int)

    def predict_columns(self, X: pd.DataFrame, num_threads: int = 1) -> pd.DataFrame:
        """``segment_id`` (nullable integer) and ``segment_name``."""
        ids = self.predict(X)
        return pd.DataFrame(
            {
                "segment_id": ids.astype("Int64"),
                "segment_name": ids.map(self.segment_names_).astype(object),
            },
            index=X.index,
        )

    @classmethod
    def empty_columns(cls, index: pd.Index) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "segment_id": pd.array([pd.NA] * len(index), dtype="Int64"),
                "segment_name": pd.Series([None] * len(index), index=index, dtype=object),
            },
            index=index,
        )

    def metadata(self) -> dict[str, Any]:
        return {
            **super().metadata(),
            "k": self.k_,
            "segment_names": {str(i): n for i, n in self.segment_names_.items()},
        }

    def validation_score(self, X: pd.DataFrame, y: Any = None) -> float | None:
        """The silhouette of its segments on ``X`` (a seeded sample of at most
        ``silhouette_sample`` rows); None when ``X`` lacks its features or one segment
        takes every row."""
        if any(c not in X.columns for c in self.features_):
            return None
        sample = X.sample(min(len(X), self.silhouette_sample), random_state=0)
        with threadpool_limits(limits=1):
            labels = self.predict(sample)
            Z = self.pipeline_[:-1].transform(sample[list(self.features_)])
        return float(silhouette_score(Z, labels)) if labels.nunique() > 1 else None

    def predict_names(self, X: pd.DataFrame) -> pd.Series:
        """Segment name of every row, indexed like ``X``."""
        return self.predict(X).map(self.segment_names_).rename("segment_name")

    def profile(self, X: pd.DataFrame, y: Any = None) -> pd.DataFrame:
        """One row per segment id: name, size, share, feature means and churn_rate with y."""
        segment = self.predict(X)
        groups = self._check(X).groupby(segment.to_numpy())
        ids = pd.Index(self.segment_ids_, name="segment")
        sizes = groups.size().reindex(ids, fill_value=0)
        out = pd.DataFrame(
            {
                "name": [self.segment_names_[i] for i in ids],
                "size": sizes.to_numpy(),
                "share": sizes.to_numpy() / max(len(X), 1),
            },
            index=ids,
        )
        if y is not None:
            churned = y.reindex(X.index) if isinstance(y, pd.Series) else pd.Series(y)
            churned = pd.Series(np.asarray(churned, dtype=float), index=segment.index)
            out["churn_rate"] = churned.groupby(segment).mean().reindex(ids)
        return out.join(groups.mean().reindex(ids))


def _unique(names: dict[int, str], order: list[int]) -> dict[int, str]:
    """Make names unique: the largest segment keeps the name, the others get " 2", " 3"."""
    seen: dict[str, int] = {}
    out: dict[int, str] = {}
    for i in order:
        base = names[i]
        seen[base] = seen.get(base, 0) + 1
        out[i] = base if seen[base] == 1 else f"{base} {seen[base]}"
    return dict(sorted(out.items()))
