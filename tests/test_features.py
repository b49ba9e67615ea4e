"""Point-in-time features: hand-computed values, the pandas oracle, and invariants."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from churnlens import Settings, build_features, compute_population, feature_names
from churnlens.config import FeatureSettings
from tests.conftest import make_log
from tests.reference.features_pandas import reference_features

AS_OF = date(2024, 3, 1)

# a: buys every 10 days on web/app, visits; b: only marketing; c: one visit; d: two
# contacts on the same timestamp; e: zero and negative amounts; f: only events after AS_OF.
EDGE_LOG = make_log(
    [
        ("a", "2024-01-01 09:00", "web", "purchase", 20),
        ("a", "2024-01-11 09:00", "app", "purchase", 30),
        ("a", "2024-01-21 12:00", "web", "purchase", 40),
        ("a", "2024-01-21 15:00", "web", "visit"),
        ("a", "2024-02-20 08:00", "email", "marketing"),
        ("a", "2024-02-25 08:00", "email", "marketing"),
        ("b", "2024-02-01 08:00", "email", "marketing"),
        ("b", "2024-02-28 08:00", "app", "marketing"),
        ("c", "2024-03-01 23:59", "store", "visit"),
        ("d", "2024-02-10 10:00", "chat", "support"),
        ("d", "2024-02-10 10:00", "phone", "support"),
        ("d", "2024-02-15 10:00", "kiosk", "purchase", 15),
        ("e", "2023-12-01 10:00", "store", "purchase", 0),
        ("e", "2024-01-15 10:00", "store", "purchase", -5),
        ("e", "2024-01-15 11:00", "store", "purchase", 50, "outbound"),
        ("f", "2024-03-02 00:00", "web", "purchase", 99),
    ]
)


def assert_frames_close(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(want.columns)
    assert list(got.index) == list(want.index)
    pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, atol=1e-9)


@pytest.fixture(scope="module")
def edge() -> pd.DataFrame:
    return build_features(EDGE_LOG, AS_OF)


def test_names_are_declared_before_data(edge: pd.DataFrame) -> None:
    assert list(edge.columns) == feature_names()
    assert all(str(t) == "float64" for t in edge.dtypes)
    prefixes = ("freq_", "chan_", "gap_", "rfm_", "cycle_", "fatigue_")
    assert all(name.startswith(prefixes) for name in edge.columns)
    custom = Settings(features=FeatureSettings(windows_days=(14,), channels=("web",)))
    assert "freq_contacts_14d" in feature_names(custom)
    assert "chan_share_web" in feature_names(custom)
    assert "chan_share_app" not in feature_names(custom)


def test_customers_are_those_seen_by_as_of(edge: pd.DataFrame) -> None:
    assert list(edge.index) == ["a", "b", "c", "d", "e"]  # f's only event is after AS_OF


def test_hand_computed_repeat_buyer(edge: pd.DataFrame) -> None:
    a = edge.loc["a"]
    # contacts: purchases 01-01, 01-11, 01-21 and a visit 01-21 (ages 60, 50, 40, 40)
    assert a["freq_contacts_30d"] == 0
    assert a["freq_contacts_90d"] == 4
    assert a["freq_purchases_90d"] == 3
    # trend: last 30 days 0 contacts, the 30 before (ages 30..59) 3 -> (0 - 3) / 3
    assert a["freq_contacts_trend"] == -1
    assert a["freq_active_days_90d"] == 3
    assert a["freq_tenure_days"] == 60
    # channels among 4 contacts: web 3, app 1
    assert a["chan_n_channels"] == 2
    assert a["chan_top_share"] == 0.75
    assert a["chan_hhi"] == pytest.approx(0.75**2 + 0.25**2)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert a["chan_entropy"] == pytest.approx(h / math.log(2))
    assert a["chan_switch_rate"] == pytest.approx(2 / 3)  # web->app->web->web
    assert a["chan_share_web"] == 0.75
    assert a["chan_share_app"] == 0.25
    assert a["chan_share_other"] == 0
    # contact days 01-01, 01-11, 01-21: gaps 10, 10
    assert (a["gap_mean"], a["gap_median"], a["gap_std"], a["gap_cv"]) == (10, 10, 0, 0)
    assert (a["gap_max"], a["gap_last"], a["gap_days_since_contact"]) == (10, 10, 40)
    assert a["rfm_recency_days"] == 40
    assert a["rfm_frequency"] == 3
    assert a["rfm_monetary_total"] == 90
    assert a["rfm_monetary_mean"] == 30
    assert a["rfm_tenure_days"] == 60
    assert a["cycle_n_intervals"] == 2
    assert a["cycle_own_days"] == pytest.approx(10)
    # fatigue: touches at ages 10 and 5; 4 contacts in the same 90 days, none since
    assert (a["fatigue_touches_30d"], a["fatigue_touches_90d"]) == (2, 2)
    assert a["fatigue_response_rate_90d"] == 2
    assert a["fatigue_touches_since_contact"] == 2
    assert a["fatigue_days_since_touch"] == 5


def test_shrunk_cycle_follows_the_documented_formula(edge: pd.DataFrame) -> None:
    # Own mean intervals: a 10 (10, 10); e 45 (12-01 -> 01-15, same-day purchases
    # collapse); d has one purchase day. P = median(10, 45) = 27.5.
    pop = compute_population(EDGE_LOG, AS_OF)
    assert pop.median_interval_days == 27.5
    k = Settings().features.cycle_prior_intervals
    a = edge.loc["a"]
    assert a["cycle_days"] == pytest.approx((k * 27.5 + 20) / (k + 2))
    e = edge.loc["e"]
    assert e["cycle_days"] == pytest.approx((k * 27.5 + 45) / (k + 1))
    assert e["cycle_overdue_ratio"] == pytest.approx(46 / e["cycle_days"])
    # one purchase day only: the population median, and no own cycle
    assert edge.loc["d", "cycle_days"] == pytest.approx(27.5)
    assert math.isnan(edge.loc["d", "cycle_own_days"])


def test_customers_without_purchase_get_nan_not_zero(edge: pd.DataFrame) -> None:
    for customer in ("b", "c"):
        row = edge.loc[customer]
        assert row["rfm_has_purchase"] == 0
        assert row["rfm_frequency"] == 0
        for name in (
            "rfm_recency_days",
            "rfm_monetary_mean",
            "rfm_tenure_days",
            "rfm_r_score",
            "rfm_cell",
            "cycle_overdue_ratio",
            "cycle_own_days",
        ):
            assert math.isnan(row[name]), (customer, name)
    b = edge.loc["b"]  # marketing only: no contact at all
    assert b["chan_n_channels"] == 0
    assert math.isnan(b["chan_entropy"])
    assert math.isnan(b["gap_days_since_contact"])
    assert b["fatigue_touches_since_contact"] == 2
    assert b["fatigue_touches_30d"] == 2  # ages 29 and 2
    c = edge.loc["c"]  # a single visit, late on the as-of day
    assert c["gap_days_since_contact"] == 0
    assert math.isnan(c["gap_mean"])
    assert math.isnan(c["chan_switch_rate"])
    assert c["chan_entropy"] == 0


def test_ties_and_unlisted_channels(edge: pd.DataFrame) -> None:
    d = edge.loc["d"]
    # chat and phone at the same instant, then a purchase on 'kiosk' (not configured)
    assert d["chan_n_channels"] == 3
    assert d["chan_share_other"] == pytest.approx(1 / 3)
    assert d["chan_switch_rate"] == 1.0
    assert d["gap_mean"] == 5  # contact days 02-10 and 02-15


def test_zero_negative_amounts_and_direction(edge: pd.DataFrame) -> None:
    e = edge.loc["e"]
    # a purchase type stays a purchase even when marked outbound
    assert e["rfm_frequency"] == 3
    assert e["rfm_monetary_total"] == 45
    assert e["rfm_monetary_mean"] == 15
    assert e["fatigue_touches_90d"] == 0


def test_rfm_scores_are_tie_safe(edge: pd.DataFrame) -> None:
    buyers = edge[edge["rfm_has_purchase"] == 1]
    for score in ("rfm_r_score", "rfm_f_score", "rfm_m_score"):
        assert buyers[score].between(1, 5).all()
    # equal frequency gets equal score
    assert buyers.groupby("rfm_frequency")["rfm_f_score"].nunique().max() == 1
    assert (
        buyers["rfm_cell"]
        == 100 * buyers["rfm_r_score"] + 10 * buyers["rfm_f_score"] + buyers["rfm_m_score"]
    ).all()


def test_engine_matches_reference_on_the_edge_log(edge: pd.DataFrame) -> None:
    assert_frames_close(edge, reference_features(EDGE_LOG, AS_OF))


def test_engine_matches_reference_on_sample_data(sample_events: pd.DataFrame) -> None:
    for as_of in (date(2024, 6, 30), date(2025, 1, 31)):
        assert_frames_close(
            build_features(sample_events, as_of), reference_features(sample_events, as_of)
        )


def test_given_population_is_used_for_a_slice(sample_events: pd.DataFrame) -> None:
    as_of = date(2024, 12, 31)
    full = build_features(sample_events, as_of)
    pop = compute_population(sample_events, as_of)
    some = sorted(sample_events["customer_id"].unique())[:50]
    part = build_features(
        sample_events[sample_events["customer_id"].isin(some)], as_of, population=pop
    )
    assert_frames_close(part, full.loc[part.index])


# ----------------------------------------------------------------- properties (hypothesis)

START = date(2024, 1, 1)
CHANNELS = ["web", "app", "email", "kiosk"]
TYPES = ["purchase", "visit", "marketing", "support"]

event = st.tuples(
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(0, 60 * 24 * 4 - 1),  # quarter-hours over 60 days: many ties
    st.sampled_from(CHANNELS),
    st.sampled_from(TYPES),
    st.sampled_from([0.0, 5.0, 12.5, -3.0, 100.0]),
    st.sampled_from([None, "inbound", "outbound"]),
)


def to_log(rows: list[tuple]) -> pd.DataFrame:
    base = pd.Timestamp(START)
    return make_log(
        [(c, base + pd.Timedelta(minutes=15 * q), ch, et, amt, d) for c, q, ch, et, amt, d in rows]
    )


PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(
    before=st.lists(event, min_size=1, max_size=40),
    after=st.lists(event, min_size=1, max_size=20),
    as_of_day=st.integers(0, 59),
)
def test_events_after_as_of_never_change_a_feature(before, after, as_of_day) -> None:
    as_of = START + timedelta(days=as_of_day)
    cutoff = (as_of_day + 1) * 24 * 4  # first quarter-hour of the next day
    past = [r for r in before if r[1] < cutoff]
    future = [(c, cutoff + q % (24 * 4 * 30), *rest) for c, q, *rest in after]
    assume(past)  # hypothesis draws another example instead of passing silently
    alone = build_features(to_log(past), as_of)
    with_future = build_features(to_log(past + future), as_of)
    assert_frames_close(with_future, alone)


@PROPERTY
@given(
    rows=st.lists(event, min_size=1, max_size=50),
    seed=st.integers(0, 2**32 - 1),
    as_of_day=st.integers(0, 59),
)
def test_row_order_never_changes_a_feature(rows, seed, as_of_day) -> None:
    log = to_log(rows)
    as_of = START + timedelta(days=as_of_day)
    shuffled = log.sample(frac=1.0, random_state=np.random.default_rng(seed))
    assert_frames_close(build_features(shuffled, as_of), build_features(log, as_of))


@PROPERTY
@given(rows=st.lists(event, min_size=1, max_size=50), as_of_day=st.integers(0, 59))
def test_engine_matches_reference_on_random_logs(rows, as_of_day) -> None:
    log = to_log(rows)
    as_of = START + timedelta(days=as_of_day)
    # the contract drops exact duplicate rows before any feature is built
    want = reference_features(log.drop_duplicates(), as_of)
    assert_frames_close(build_features(log, as_of), want)
