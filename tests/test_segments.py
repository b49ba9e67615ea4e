"""SegmentModel: k by silhouette, names, profiles, stable ids across retrains."""

from __future__ import annotations

import re
from datetime import date

import numpy as np
import pandas as pd
import pytest

import churnlens
from churnlens.config import SegmentSettings
from churnlens.errors import ModelError
from churnlens.lifecycle import STAGES
from churnlens.models.segments import DEFAULT_FEATURES, SegmentModel, name_segment
from churnlens.sample import generate_events

# four archetypes in the default feature columns (NaN where build_features leaves NaN)
ARCHETYPES = {
    "champions": dict(
        rfm_recency_days=5, rfm_frequency=40, rfm_monetary_total=4000, rfm_monetary_mean=100,
        cycle_days=10, cycle_overdue_ratio=0.5, freq_contacts_90d=30, freq_tenure_days=400,
        chan_n_channels=5, chan_entropy=0.9, fatigue_touches_90d=3, rfm_has_purchase=1,
    ),
    "lapsed": dict(
        rfm_recency_days=300, rfm_frequency=1, rfm_monetary_total=40, rfm_monetary_mean=40,
        cycle_days=60, cycle_overdue_ratio=5, freq_contacts_90d=0, freq_tenure_days=350,
        chan_n_channels=1, chan_entropy=0, fatigue_touches_90d=2, rfm_has_purchase=1,
    ),
    "browsers": dict(
        rfm_recency_days=np.nan, rfm_frequency=0, rfm_monetary_total=0,
        rfm_monetary_mean=np.nan, cycle_days=30, cycle_overdue_ratio=np.nan,
        freq_contacts_90d=5, freq_tenure_days=10, chan_n_channels=2, chan_entropy=0.5,
        fatigue_touches_90d=1, rfm_has_purchase=0,
    ),
    "spammed": dict(
        rfm_recency_days=40, rfm_frequency=6, rfm_monetary_total=300, rfm_monetary_mean=50,
        cycle_days=30, cycle_overdue_ratio=1.3, freq_contacts_90d=6, freq_tenure_days=250,
        chan_n_channels=3, chan_entropy=0.7, fatigue_touches_90d=25, rfm_has_purchase=1,
    ),
}  # fmt: skip
SIZES = {"champions": 150, "lapsed": 300, "browsers": 250, "spammed": 200}


def blobs(seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Well separated clusters with a little multiplicative noise; returns (X, truth)."""
    rng = np.random.default_rng(seed)
    parts, truth = [], []
    for name, centre in ARCHETYPES.items():
        n = SIZES[name]
        frame = pd.DataFrame({c: np.full(n, float(v)) for c, v in centre.items()})
        noisy = [c for c in frame if c != "rfm_has_purchase"]
        frame[noisy] *= rng.lognormal(0.0, 0.08, size=(n, len(noisy)))
        parts.append(frame)
        truth += [name] * n
    X = pd.concat(parts, ignore_index=True)[list(DEFAULT_FEATURES)]
    X.index = pd.Index([f"c{i:05d}" for i in range(len(X))], name="customer_id")
    return X, pd.Series(truth, index=X.index)


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    events = generate_events(customers=1500, days=500, seed=5)
    return churnlens.build_features(events, date(2025, 3, 1))


@pytest.fixture(scope="module")
def fitted(features: pd.DataFrame) -> SegmentModel:
    return SegmentModel().fit(features)


def test_silhouette_finds_the_true_k() -> None:
    X, truth = blobs()
    model = SegmentModel().fit(X)
    assert model.k_ == 4
    assert set(model.silhouette_) == set(range(3, 9))
    assert max(model.silhouette_, key=model.silhouette_.get) == 4
    # every true cluster maps to exactly one segment
    crosstab = pd.crosstab(truth, model.predict(X))
    assert ((crosstab > 0).sum(axis=1) == 1).all()
    assert ((crosstab > 0).sum(axis=0) == 1).all()


def test_fixed_k() -> None:
    X, _ = blobs()
    model = SegmentModel(k=6).fit(X)
    assert model.k_ == 6
    assert model.predict(X).nunique() == 6
    assert set(model.silhouette_) == {6}


def test_from_settings() -> None:
    model = SegmentModel.from_settings(SegmentSettings(k_min=2, k_max=5, seed=3), k=4)
    assert (model.k, model.k_min, model.k_max, model.seed) == (4, 2, 5, 3)
    assert model.silhouette_sample == 5000


def test_names_follow_the_rules() -> None:
    X, truth = blobs()
    model = SegmentModel().fit(X)
    names = model.predict_names(X)
    by_truth = names.groupby(truth).agg(lambda s: s.mode().iloc[0])
    assert by_truth["champions"] == "engaged, high value, frequent, multichannel"
    assert "lapsing" in by_truth["lapsed"]
    assert by_truth["lapsed"].endswith("one-timers")
    assert by_truth["browsers"] == "recently joined browsers"
    assert "over-contacted" in by_truth["spammed"]
    assert "high value" not in by_truth["spammed"]


def test_names_are_unique_non_empty(fitted: SegmentModel) -> None:
    names = list(fitted.segment_names_.values())
    assert sorted(fitted.segment_names_) == fitted.segment_ids_
    assert all(isinstance(n, str) and n for n in names)
    assert len(set(names)) == len(names)


def test_colliding_names_get_numbers() -> None:
    X, _ = blobs()
    model = SegmentModel(k=8).fit(X)  # more segments than archetypes: names repeat
    names = list(model.segment_names_.values())
    assert len(set(names)) == len(names) == 8
    assert any(n.endswith(" 2") for n in names)


def random_profile(rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A random population over a random subset of the default features, and a segment."""
    n = int(rng.integers(5, 60))
    columns = [c for c in DEFAULT_FEATURES if rng.random() < 0.7] or ["rfm_frequency"]
    pop = pd.DataFrame(
        {c: rng.lognormal(rng.normal(2, 2), rng.uniform(0.1, 2), n) for c in columns}
    )
    pop[pop < rng.uniform(0, 3)] = 0.0  # zeros: non-buyers, no channels, no touches
    pop[rng.random(pop.shape) < 0.1] = np.nan
    if "rfm_has_purchase" in pop:
        pop["rfm_has_purchase"] = (rng.random(n) < rng.uniform(0, 1)).astype(float)
    if "chan_n_channels" in pop:
        pop["chan_n_channels"] = rng.integers(0, 6, n).astype(float)
    if "cycle_overdue_ratio" in pop:
        pop["cycle_overdue_ratio"] = rng.uniform(0, 4, n)
    by = str(rng.choice(columns))
    size = int(rng.integers(1, n + 1))
    order = pop[by].sort_values(ascending=bool(rng.random() < 0.5)).index
    seg = pop.loc[order[:size]] if rng.random() < 0.7 else pop.sample(size, random_state=0)
    return seg, pop


def test_names_never_use_a_lifecycle_stage_word() -> None:
    stage_word = re.compile(rf"\b({'|'.join(STAGES)})\b")
    rng = np.random.default_rng(20241115)
    names = {name_segment(*random_profile(rng)) for _ in range(500)}
    assert not [n for n in names if stage_word.search(n)]
    words = " ".join(names)  # the rules that used "new" and "active" were exercised
    assert "recently joined" in words and "engaged" in words and "lapsing" in words
    X, _ = blobs()
    assert not [n for n in SegmentModel().fit(X).segment_names_.values() if stage_word.search(n)]


def test_name_segment_without_rules_is_mainstream() -> None:
    pop = pd.DataFrame({"rfm_frequency": [1.0, 2, 3, 4, 5], "chan_n_channels": [2.0] * 5})
    assert name_segment(pop.iloc[[2]], pop) == "mainstream"


def test_profile(fitted: SegmentModel, features: pd.DataFrame) -> None:
    rng = np.random.default_rng(0)
    y = pd.Series(rng.integers(0, 2, len(features)), index=features.index)
    prof = fitted.profile(features, y.iloc[::-1])  # aligned on the index, not position
    assert list(prof.index) == fitted.segment_ids_
    assert prof["size"].sum() == len(features)
    assert prof["share"].sum() == pytest.approx(1.0)
    assert list(prof["name"]) == [fitted.segment_names_[i] for i in prof.index]
    segment = fitted.predict(features)
    expected = y.groupby(segment).mean()
    np.testing.assert_allclose(prof["churn_rate"], expected.reindex(prof.index))
    assert set(fitted.features_) <= set(prof.columns)
    assert "churn_rate" not in fitted.profile(features).columns


def test_predict_is_indexed_like_x(fitted: SegmentModel, features: pd.DataFrame) -> None:
    part = features.iloc[::7]
    segment = fitted.predict(part)
    assert segment.index.equals(part.index)
    assert segment.dtype.kind == "i"
    assert set(segment) <= set(fitted.segment_ids_)
    assert fitted.predict_names(part).isin(list(fitted.segment_names_.values())).all()


def test_ids_are_stable_across_retrains(fitted: SegmentModel, features: pd.DataFrame) -> None:
    rng = np.random.default_rng(1)
    shuffled = features.sample(frac=1.0, random_state=2)
    perturbed = shuffled * rng.normal(1.0, 0.01, size=shuffled.shape)
    perturbed["rfm_has_purchase"] = shuffled["rfm_has_purchase"]
    refit = SegmentModel(k=fitted.k_, seed=11).fit(perturbed, previous=fitted)
    assert refit.segment_ids_ == fitted.segment_ids_
    agree = (refit.predict(features) == fitted.predict(features)).mean()
    assert agree > 0.95


def test_extra_segments_get_fresh_ids(fitted: SegmentModel, features: pd.DataFrame) -> None:
    bigger = SegmentModel(k=fitted.k_ + 1).fit(features, previous=fitted)
    assert bigger.segment_ids_ == [*fitted.segment_ids_, max(fitted.segment_ids_) + 1]
    smaller = SegmentModel(k=fitted.k_ - 1).fit(features, previous=fitted)
    assert set(smaller.segment_ids_) < set(fitted.segment_ids_)


def test_deterministic(features: pd.DataFrame) -> None:
    a = SegmentModel(seed=3).fit(features)
    b = SegmentModel(seed=3).fit(features)
    assert a.silhouette_ == b.silhouette_
    assert a.segment_names_ == b.segment_names_
    pd.testing.assert_series_equal(a.predict(features), b.predict(features))


def test_missing_features_raise(features: pd.DataFrame) -> None:
    with pytest.raises(ModelError, match=r"at least 3 of the features.*rfm_frequency"):
        SegmentModel().fit(features[["rfm_recency_days", "chan_entropy", "gap_mean"]])
    with pytest.raises(ModelError, match="lacks"):
        SegmentModel(features=("rfm_frequency", "nope", "gap_mean")).fit(features)


def test_predict_checks_columns(fitted: SegmentModel, features: pd.DataFrame) -> None:
    with pytest.raises(ModelError, match="rfm_frequency"):
        fitted.predict(features.drop(columns=["rfm_frequency"]))
    with pytest.raises(ModelError, match="DataFrame"):
        fitted.predict(features.to_numpy())


def test_custom_features_subset(features: pd.DataFrame) -> None:
    cols = ("rfm_recency_days", "rfm_frequency", "rfm_monetary_total", "gap_mean")
    model = SegmentModel(k=3, features=cols).fit(features)
    assert model.features_ == cols
    assert model.predict(features).nunique() == 3
