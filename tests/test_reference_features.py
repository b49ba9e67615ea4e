"""Hand-computed checks of the pandas reference features (tests/reference/features_pandas.py).

The log below is small enough to compute every feature by hand; the arithmetic is in the
comments. As-of date D = 2024-03-31; ``age`` is D - day of the event. Default settings:
windows 7/30/90/180/365, trend 30, active days 90, fatigue windows 30/90, channels
web/app/store/phone/chat/email, k = 4 prior intervals, default cycle 60 days.

Customers (sorted):
  a_regular   purchases every 10 days (ages 45 35 25 15 5) on web; marketing emails at 25, 2
  b_outbound  only outbound touches (ages 5, 50, 400)
  c_single    a single inbound support call (age 3)
  d_tie       purchase (age 20); a purchase and a visit at the same timestamp (age 15)
  e_refund    purchases of 50, 0 and -25 (ages 100, 60, 60)
  f_future    five inbound contacts, three touches, and events after D (ignored)
  g_later     only events after D: not a customer as of D
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest

from churnlens.config import Settings
from churnlens.features.population import PopulationStats
from tests.reference.features_pandas import (
    reference_feature_names,
    reference_features,
    reference_population,
)

D = dt.date(2024, 3, 31)
CUSTOMERS = ["a_regular", "b_outbound", "c_single", "d_tie", "e_refund", "f_future"]
NAN = float("nan")


def _at(age: int, clock: str = "12:00:00") -> pd.Timestamp:
    """The timestamp ``age`` days before D (negative: after D) at ``clock``."""
    return pd.Timestamp(D) - pd.Timedelta(days=age) + pd.Timedelta(clock)


# customer, age, clock, channel, event_type, amount, direction
_ROWS = [
    ("a_regular", 45, "12:00:00", "web", "purchase", 10.0, None),
    ("a_regular", 35, "12:00:00", "web", "purchase", 20.0, None),
    ("a_regular", 25, "12:00:00", "web", "purchase", 30.0, None),
    ("a_regular", 25, "08:00:00", "email", "marketing", 0.0, None),  # outbound by type
    ("a_regular", 15, "12:00:00", "web", "purchase", 40.0, None),
    ("a_regular", 5, "12:00:00", "web", "purchase", 50.0, "inbound"),
    ("a_regular", 2, "08:00:00", "email", "marketing", 0.0, None),
    ("b_outbound", 5, "10:00:00", "email", "marketing", 0.0, None),  # outbound by type
    ("b_outbound", 50, "10:00:00", "email", "newsletter", 0.0, "outbound"),
    ("b_outbound", 400, "10:00:00", "sms", "marketing", 0.0, "outbound"),
    ("c_single", 3, "16:00:00", "phone", "support", 0.0, "inbound"),
    ("d_tie", 20, "09:00:00", "store", "purchase", 30.0, None),
    ("d_tie", 15, "14:30:00", "store", "purchase", 12.0, None),  # same timestamp ...
    ("d_tie", 15, "14:30:00", "app", "visit", 0.0, "inbound"),  # ... as this one
    ("e_refund", 100, "12:00:00", "web", "purchase", 50.0, None),
    ("e_refund", 60, "10:00:00", "web", "purchase", 0.0, None),
    ("e_refund", 60, "11:00:00", "web", "purchase", -25.0, None),
    ("f_future", 14, "12:00:00", "chat", "support", 0.0, "inbound"),
    ("f_future", 13, "12:00:00", "kiosk", "marketing", 0.0, "inbound"),  # inbound: direction
    ("f_future", 10, "12:00:00", "phone", "support", 0.0, "inbound"),
    ("f_future", 4, "12:00:00", "phone", "support", 0.0, "inbound"),
    ("f_future", 2, "09:00:00", "chat", "support", 0.0, np.nan),  # last contact
    ("f_future", 3, "12:00:00", "email", "marketing", 0.0, None),
    ("f_future", 2, "09:00:00", "email", "marketing", 0.0, None),  # same time: not after
    ("f_future", 2, "18:00:00", "sms", "reminder", 0.0, "outbound"),  # after last contact
    ("f_future", -1, "08:00:00", "web", "purchase", 99.0, None),  # after D: ignored
    ("f_future", -5, "08:00:00", "email", "marketing", 0.0, None),  # after D: ignored
    ("g_later", -1, "08:00:00", "web", "purchase", 10.0, None),  # after D: not a customer
]


def _events() -> pd.DataFrame:
    frame = pd.DataFrame(
        _ROWS,
        columns=["customer_id", "age", "clock", "channel", "event_type", "amount", "direction"],
    )
    frame["timestamp"] = [_at(a, c) for a, c in zip(frame["age"], frame["clock"], strict=True)]
    frame["duration_s"] = np.nan
    frame["note"] = "extra column, ignored"
    return frame.drop(columns=["age", "clock"])


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    return reference_features(_events(), D)


def _check(features: pd.DataFrame, expected: dict[str, list[float]]) -> None:
    want = pd.DataFrame(expected, index=pd.Index(CUSTOMERS, name="customer_id"), dtype=float)
    got = features[list(expected)]
    for column in expected:
        np.testing.assert_allclose(
            got[column].to_numpy(), want[column].to_numpy(), rtol=1e-12, err_msg=column
        )


# ----------------------------------------------------------------------------- shape


def test_shape_index_and_dtypes(features: pd.DataFrame) -> None:
    assert list(features.index) == CUSTOMERS  # g_later only has events after D
    assert features.index.name == "customer_id"
    assert list(features.columns) == reference_feature_names(Settings())
    assert (features.dtypes == "float64").all()
    assert len(features.columns) == 51


def test_feature_names_follow_settings() -> None:
    settings = Settings.model_validate(
        {
            "features": {
                "windows_days": [14],
                "active_days_window": 60,
                "fatigue_windows_days": [7, 21],
                "channels": ["web"],
            }
        }
    )
    assert reference_feature_names(settings) == [
        "freq_contacts_14d",
        "freq_purchases_14d",
        "freq_contacts_trend",
        "freq_active_days_60d",
        "freq_tenure_days",
        "chan_n_channels",
        "chan_entropy",
        "chan_top_share",
        "chan_hhi",
        "chan_switch_rate",
        "chan_share_web",
        "chan_share_other",
        "gap_mean",
        "gap_median",
        "gap_std",
        "gap_cv",
        "gap_max",
        "gap_last",
        "gap_days_since_contact",
        "rfm_has_purchase",
        "rfm_recency_days",
        "rfm_frequency",
        "rfm_monetary_total",
        "rfm_monetary_mean",
        "rfm_tenure_days",
        "rfm_r_score",
        "rfm_f_score",
        "rfm_m_score",
        "rfm_cell",
        "cycle_n_intervals",
        "cycle_own_days",
        "cycle_days",
        "cycle_overdue_ratio",
        "fatigue_touches_7d",
        "fatigue_touches_21d",
        "fatigue_response_rate_21d",
        "fatigue_touches_since_contact",
        "fatigue_days_since_touch",
    ]
    assert list(reference_features(_events(), D, settings).columns) == (
        reference_feature_names(settings)
    )


# ----------------------------------------------------------------------------- freq_*


def test_freq(features: pd.DataFrame) -> None:
    # Contact ages: a 45 35 25 15 5 (purchases) | b none | c 3 | d 20 15 15
    #               e 100 60 60 | f 14 13 10 4 2.  A window of w days holds age < w.
    _check(
        features,
        {
            #                    a  b  c  d  e  f
            "freq_contacts_7d": [1, 0, 1, 0, 0, 2],  # a: 5; f: 4, 2
            "freq_contacts_30d": [3, 0, 1, 3, 0, 5],  # a: 25 15 5
            "freq_contacts_90d": [5, 0, 1, 3, 2, 5],  # e: 60 60 (100 is out)
            "freq_contacts_180d": [5, 0, 1, 3, 3, 5],
            "freq_contacts_365d": [5, 0, 1, 3, 3, 5],
            "freq_purchases_7d": [1, 0, 0, 0, 0, 0],  # f's purchase is after D
            "freq_purchases_30d": [3, 0, 0, 2, 0, 0],  # d: 20 15
            "freq_purchases_90d": [5, 0, 0, 2, 2, 0],
            "freq_purchases_180d": [5, 0, 0, 2, 3, 0],
            "freq_purchases_365d": [5, 0, 0, 2, 3, 0],
            # a = contacts age < 30, b = 30 <= age < 60:
            # a: (3 - 2) / 5 = 0.2 (b = ages 45, 35); b: 0 + 0 -> 0; c: (1 - 0) / 1 = 1;
            # d: (3 - 0) / 3 = 1; e: a = 0, b = 0 (60 is not < 60) -> 0; f: 5 / 5 = 1
            "freq_contacts_trend": [0.2, 0, 1, 1, 0, 1],
            # distinct contact days with age < 90: d 20, 15 -> 2; e: only day 60 -> 1
            "freq_active_days_90d": [5, 0, 1, 2, 1, 5],
            # D - first event of any role: b's first touch is 400 days old
            "freq_tenure_days": [45, 400, 3, 20, 100, 14],
        },
    )


# ----------------------------------------------------------------------------- chan_*


def test_chan(features: pd.DataFrame) -> None:
    # d: store 2, app 1 -> p = 2/3, 1/3, S = 2
    entropy_d = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(2)  # 0.918296
    # f: chat 2, kiosk 1, phone 2 -> p = .4, .2, .4, S = 3
    entropy_f = -(2 * 0.4 * math.log(0.4) + 0.2 * math.log(0.2)) / math.log(3)  # 0.960230
    _check(
        features,
        {
            #                  a  b    c  d  e  f
            "chan_n_channels": [1, 0, 1, 2, 1, 3],
            "chan_entropy": [0, NAN, 0, entropy_d, 0, entropy_f],
            "chan_top_share": [1, NAN, 1, 2 / 3, 1, 0.4],
            # d: 4/9 + 1/9 = 5/9; f: .16 + .04 + .16 = .36
            "chan_hhi": [1, NAN, 1, 5 / 9, 1, 0.36],
            # a: web x5 -> 0/4; c: one contact -> NaN; e: web x3 -> 0/2
            # d by (timestamp, channel, event_type): store | app, store (tie at age 15,
            #   app < store) -> 2 switches / 2 pairs = 1 (store, store, app would give 0.5)
            # f: chat, kiosk, phone, phone, chat -> 3 switches / 4 pairs
            "chan_switch_rate": [0, NAN, NAN, 1, 0, 0.75],
            "chan_share_web": [1, NAN, 0, 0, 1, 0],
            "chan_share_app": [0, NAN, 0, 1 / 3, 0, 0],
            "chan_share_store": [0, NAN, 0, 2 / 3, 0, 0],
            "chan_share_phone": [0, NAN, 1, 0, 0, 0.4],
            "chan_share_chat": [0, NAN, 0, 0, 0, 0.4],
            # email only carries a's and f's outbound touches, which are not contacts
            "chan_share_email": [0, NAN, 0, 0, 0, 0],
            "chan_share_other": [0, NAN, 0, 0, 0, 0.2],  # f: kiosk 1 / 5
        },
    )


# ----------------------------------------------------------------------------- gap_*


def test_gap(features: pd.DataFrame) -> None:
    # Contact days (as ages): a 45 35 25 15 5 -> gaps 10 10 10 10
    #   d 20 15 -> 5; e 100 60 (two contacts on day 60) -> 40; f 14 13 10 4 2 -> 1 3 6 2
    # f: mean 12/4 = 3; median (2 + 3)/2 = 2.5; variance (4 + 0 + 9 + 1)/4 = 3.5
    std_f = math.sqrt(3.5)
    _check(
        features,
        {
            #           a   b    c    d  e   f
            "gap_mean": [10, NAN, NAN, 5, 40, 3],
            "gap_median": [10, NAN, NAN, 5, 40, 2.5],
            "gap_std": [0, NAN, NAN, 0, 0, std_f],
            "gap_cv": [0, NAN, NAN, 0, 0, std_f / 3],
            "gap_max": [10, NAN, NAN, 5, 40, 6],
            "gap_last": [10, NAN, NAN, 5, 40, 2],
            "gap_days_since_contact": [5, NAN, 3, 15, 60, 2],
        },
    )


# ----------------------------------------------------------------------------- rfm_*


def test_population_from_events() -> None:
    # Buyers a, d, e: recency 5, 15, 60; frequency 5, 2, 3; monetary 150, 42, 25
    # (e: 50 + 0 - 25). numpy linear quantiles of 3 sorted values v0 v1 v2 sit at
    # positions 0.4, 0.8, 1.2, 1.6:
    #   recency 5 15 60: 5 + .4*10 = 9, 5 + .8*10 = 13, 15 + .2*45 = 24, 15 + .6*45 = 42
    #   frequency 2 3 5: 2.4, 2.8, 3 + .2*2 = 3.4, 3 + .6*2 = 4.2
    #   monetary 25 42 150: 25 + .4*17 = 31.8, 38.6, 42 + .2*108 = 63.6, 42 + .6*108 = 106.8
    # Intervals: a 10 10 10 10, d 5, e 40 (the two purchases on day 60 collapse):
    #   customers' own mean intervals 10, 5, 40 -> median 10
    population = reference_population(_events(), D)
    np.testing.assert_allclose(population.recency_cuts, (9, 13, 24, 42), rtol=1e-12)
    np.testing.assert_allclose(population.frequency_cuts, (2.4, 2.8, 3.4, 4.2), rtol=1e-12)
    np.testing.assert_allclose(population.monetary_cuts, (31.8, 38.6, 63.6, 106.8), rtol=1e-12)
    assert population.median_interval_days == 10.0


def test_rfm(features: pd.DataFrame) -> None:
    _check(
        features,
        {
            #                  a    b    c    d   e     f
            "rfm_has_purchase": [1, 0, 0, 1, 1, 0],
            "rfm_recency_days": [5, NAN, NAN, 15, 60, NAN],
            "rfm_frequency": [5, 0, 0, 2, 3, 0],
            # a 10+20+30+40+50; d 30 + 12; e 50 + 0 - 25 (zero and refund count)
            "rfm_monetary_total": [150, 0, 0, 42, 25, 0],
            "rfm_monetary_mean": [30, NAN, NAN, 21, 25 / 3, NAN],
            "rfm_tenure_days": [45, NAN, NAN, 20, 100, NAN],
            # r = 5 - #(cuts 9 13 24 42 < recency): a 5 -> 5; d 15 -> 3; e 60 -> 1
            "rfm_r_score": [5, NAN, NAN, 3, 1, NAN],
            # f = 1 + #(cuts 2.4 2.8 3.4 4.2 < freq): a 5 -> 5; d 2 -> 1; e 3 -> 3
            "rfm_f_score": [5, NAN, NAN, 1, 3, NAN],
            # m = 1 + #(cuts 31.8 38.6 63.6 106.8 < total): a 150 -> 5; d 42 -> 3; e 25 -> 1
            "rfm_m_score": [5, NAN, NAN, 3, 1, NAN],
            "rfm_cell": [555, NAN, NAN, 313, 131, NAN],
        },
    )


# ----------------------------------------------------------------------------- cycle_*


def test_cycle(features: pd.DataFrame) -> None:
    # P = 10 (see test_population_from_events), k = 4; cycle = (k P + S) / (k + n).
    # a: four intervals of 10, S = 40 -> (40 + 40) / 8 = 10; overdue 5 / 10
    # d: one interval of 5 -> (40 + 5) / 5 = 9
    # e: one interval of 40 -> (40 + 40) / 5 = 16
    # b, c, f: no interval -> cycle_days = P = 10, overdue NaN (no purchase)
    _check(
        features,
        {
            #                    a    b    c    d        e        f
            "cycle_n_intervals": [4, 0, 0, 1, 1, 0],
            "cycle_own_days": [10, NAN, NAN, 5, 40, NAN],
            "cycle_days": [10, 10, 10, 9, 16, 10],
            "cycle_overdue_ratio": [0.5, NAN, NAN, 15 / 9, 60 / 16, NAN],
        },
    )


def test_cycle_spec_example_with_given_population() -> None:
    # docs: one interval of 10 days against P = 60, k = 4 -> (4 * 60 + 10) / 5 = 50 days
    events = pd.DataFrame(
        {
            "customer_id": ["x", "x"],
            "timestamp": [_at(20), _at(10)],
            "channel": ["web", "web"],
            "event_type": ["purchase", "purchase"],
            "amount": [5.0, 5.0],
            "direction": [None, None],
            "duration_s": [NAN, NAN],
        }
    )
    population = PopulationStats(
        recency_cuts=(1.0, 2.0, 20.0, 30.0),
        frequency_cuts=(1.0, 1.0, 3.0, 4.0),
        monetary_cuts=(1.0, 2.0, 3.0, 4.0),
        median_interval_days=60.0,
    )
    row = reference_features(events, D, population=population).loc["x"]
    assert row["cycle_days"] == pytest.approx(50.0)
    assert row["cycle_own_days"] == pytest.approx(10.0)
    # recency 10: cuts 1 and 2 below -> r = 3; frequency 2: cuts 1, 1 below -> f = 3;
    # monetary 10: all four below -> m = 5
    assert (row["rfm_r_score"], row["rfm_f_score"], row["rfm_m_score"]) == (3, 3, 5)
    assert row["rfm_cell"] == 335


# ----------------------------------------------------------------------------- fatigue_*


def test_fatigue(features: pd.DataFrame) -> None:
    # Outbound ages: a 25 2 | b 5 50 400 | f 3 2 2 (f's events after D are ignored)
    _check(
        features,
        {
            #                     a  b  c  d  e  f
            "fatigue_touches_30d": [2, 1, 0, 0, 0, 3],
            "fatigue_touches_90d": [2, 2, 0, 0, 0, 3],
            # contacts age < 90 / touches age < 90: a 5/2; b 0/2; f 5/3; others no touch
            "fatigue_response_rate_90d": [2.5, 0, NAN, NAN, NAN, 5 / 3],
            # a: last contact age 5 12:00 -> only the age-2 touch is after it
            # b: no contact -> all three touches
            # f: last contact age 2 09:00; the email at the same instant is not strictly
            #    after it, the 18:00 reminder is; the touch after D is ignored
            "fatigue_touches_since_contact": [1, 3, 0, 0, 0, 1],
            "fatigue_days_since_touch": [2, 5, NAN, NAN, NAN, 2],
        },
    )


# ----------------------------------------------------------------------------- invariances


def test_row_order_does_not_matter(features: pd.DataFrame) -> None:
    events = _events()
    for seed in range(5):
        shuffled = events.sample(frac=1.0, random_state=seed).reset_index(drop=True)
        pd.testing.assert_frame_equal(reference_features(shuffled, D), features)


def test_events_after_as_of_are_ignored(features: pd.DataFrame) -> None:
    events = _events()
    before = events[events["timestamp"] < pd.Timestamp(D) + pd.Timedelta(days=1)]
    assert len(before) == len(events) - 3
    pd.testing.assert_frame_equal(reference_features(before, D), features)


def test_as_of_day_boundary() -> None:
    # The last microsecond of D belongs to D (age 0); midnight after D does not.
    events = pd.DataFrame(
        {
            "customer_id": ["x", "x"],
            "timestamp": [_at(0, "23:59:59.999999"), _at(-1, "00:00:00")],
            "channel": ["web", "web"],
            "event_type": ["visit", "visit"],
            "amount": [0.0, 0.0],
            "direction": ["inbound", "inbound"],
            "duration_s": [NAN, NAN],
        }
    )
    row = reference_features(events, D).loc["x"]
    assert row["freq_contacts_7d"] == 1
    assert row["gap_days_since_contact"] == 0
    assert row["freq_tenure_days"] == 0


def test_slice_scored_against_population(features: pd.DataFrame) -> None:
    # Scoring d alone against the full population gives d's row of the full run; scoring
    # it against its own one-customer population would not.
    events = _events()
    population = reference_population(events, D)
    alone = events[events["customer_id"] == "d_tie"]
    row = reference_features(alone, D, population=population)
    pd.testing.assert_frame_equal(row, features.loc[["d_tie"]])
    own = reference_features(alone, D)
    # own population: a single buyer, every cut equals its values -> r 5, f 1, m 1; P = 5
    assert own.loc["d_tie", "rfm_cell"] == 511
    assert own.loc["d_tie", "cycle_days"] == pytest.approx(5.0)


def test_empty_population_stats(features: pd.DataFrame) -> None:
    # No buyers and no intervals in the population: NaN cuts, NaN median. The cycle falls
    # back to cycle_default_days; no cut point is below any value, so r = 5, f = m = 1.
    empty = PopulationStats(
        recency_cuts=(NAN,) * 4,
        frequency_cuts=(NAN,) * 4,
        monetary_cuts=(NAN,) * 4,
        median_interval_days=NAN,
    )
    got = reference_features(_events(), D, population=empty)
    np.testing.assert_allclose(got["cycle_days"].loc[["b_outbound", "c_single"]], 60.0)
    # a: (4 * 60 + 40) / 8 = 35
    assert got.loc["a_regular", "cycle_days"] == pytest.approx(35.0)
    assert got.loc["a_regular", "rfm_cell"] == 511
    assert np.isnan(got.loc["b_outbound", "rfm_cell"])
    non_population = [c for c in got.columns if not c.startswith(("rfm_", "cycle_"))]
    pd.testing.assert_frame_equal(got[non_population], features[non_population])


def test_population_without_buyers() -> None:
    events = _events()
    no_buyers = events[~events["customer_id"].isin(["a_regular", "d_tie", "e_refund"])]
    population = reference_population(no_buyers, D)
    assert all(np.isnan(population.recency_cuts + population.monetary_cuts))
    assert np.isnan(population.median_interval_days)
    got = reference_features(no_buyers, D)
    assert list(got.index) == ["b_outbound", "c_single", "f_future"]
    assert (got["rfm_has_purchase"] == 0).all()
    assert (got["cycle_days"] == 60.0).all()  # cycle_default_days


def test_no_events_on_or_before_as_of() -> None:
    got = reference_features(_events(), dt.date(2020, 1, 1))
    assert got.empty
    assert list(got.columns) == reference_feature_names()
    assert (got.dtypes == "float64").all()


def test_object_dtype_columns_give_the_same_result(features: pd.DataFrame) -> None:
    events = _events()
    for column in ["customer_id", "channel", "event_type", "direction"]:
        events[column] = events[column].astype(object)
    pd.testing.assert_frame_equal(reference_features(events, D), features, check_index_type=False)


def test_custom_roles() -> None:
    # With "visit" as a purchase type, d's visit becomes its third purchase; with
    # "support" as an outbound type, it stays inbound because its direction is given.
    settings = Settings.model_validate(
        {"events": {"purchase_types": ["purchase", "visit"], "outbound_types": ["support"]}}
    )
    got = reference_features(_events(), D, settings)
    assert got.loc["d_tie", "rfm_frequency"] == 3
    assert got.loc["c_single", "freq_contacts_7d"] == 1
