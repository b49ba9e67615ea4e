"""Reason codes: the right features, in plain words."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from churnlens.features.base import count
from churnlens.reasons import phrase, top_reasons


def test_phrases_state_the_customers_own_values() -> None:
    assert phrase("cycle_overdue_ratio", 2.4) == "no purchase for 2.4x the usual cycle"
    assert phrase("fatigue_touches_30d", 12) == "12 marketing touches in 30 days"
    assert phrase("rfm_recency_days", 45) == "no purchase for 45 days"
    assert phrase("rfm_recency_days", math.nan) == "no purchase yet"
    assert phrase("chan_share_phone", 0.5) == "50% of contacts via phone"
    assert phrase("freq_contacts_trend", -0.4) == "contacts falling off"
    assert phrase("unknown_feature", 1.5) == "unknown_feature = 1.5"


def test_top_reasons_take_the_largest_positive_contributions() -> None:
    index = pd.Index(["a", "b"], name="customer_id")
    contributions = pd.DataFrame(
        {
            "rfm_recency_days": [0.9, -0.5],
            "cycle_overdue_ratio": [0.2, -0.1],
            "fatigue_touches_30d": [1.5, 0.3],
            "rfm_frequency": [-2.0, -0.2],
        },
        index=index,
    )
    values = pd.DataFrame(
        {
            "rfm_recency_days": [120.0, 3.0],
            "cycle_overdue_ratio": [3.0, 0.1],
            "fatigue_touches_30d": [14.0, 2.0],
            "rfm_frequency": [1.0, 9.0],
        },
        index=index,
    )
    reasons = top_reasons(contributions, values, top=3)
    assert reasons["a"] == [
        "14 marketing touches in 30 days",
        "no purchase for 120 days",
        "no purchase for 3.0x the usual cycle",
    ]
    assert reasons["b"] == ["2 marketing touches in 30 days"]  # only one raises the risk


def test_repeated_phrases_are_given_once() -> None:
    index = pd.Index(["a"], name="customer_id")
    contributions = pd.DataFrame(
        {"rfm_recency_days": [1.0], "cycle_overdue_ratio": [0.8], "freq_tenure_days": [0.1]},
        index=index,
    )
    values = pd.DataFrame(
        {
            "rfm_recency_days": [math.nan],
            "cycle_overdue_ratio": [math.nan],
            "freq_tenure_days": [300.0],
        },
        index=index,
    )
    assert top_reasons(contributions, values)["a"] == ["no purchase yet", "known for 300 days"]


# every phrase with a counted noun: (feature, phrase at 1, phrase at 2)
COUNTED = [
    ("rfm_recency_days", "no purchase for 1 day", "no purchase for 2 days"),
    ("rfm_frequency", "1 purchase in total", "2 purchases in total"),
    ("rfm_tenure_days", "first purchase 1 day ago", "first purchase 2 days ago"),
    ("cycle_days", "usual repurchase cycle of 1 day", "usual repurchase cycle of 2 days"),
    ("cycle_own_days", "buys every 1 day on average", "buys every 2 days on average"),
    ("cycle_n_intervals", "1 repeat purchase", "2 repeat purchases"),
    ("freq_contacts_30d", "1 contact in 30 days", "2 contacts in 30 days"),
    ("freq_purchases_90d", "1 purchase in 90 days", "2 purchases in 90 days"),
    ("freq_tenure_days", "known for 1 day", "known for 2 days"),
    ("fatigue_touches_30d", "1 marketing touch in 30 days", "2 marketing touches in 30 days"),
    (
        "fatigue_touches_since_contact",
        "1 touch since the last contact",
        "2 touches since the last contact",
    ),
    (
        "fatigue_days_since_touch",
        "last marketing touch 1 day ago",
        "last marketing touch 2 days ago",
    ),
    ("gap_days_since_contact", "no contact for 1 day", "no contact for 2 days"),
    ("gap_mean", "1 day between contacts (mean)", "2 days between contacts (mean)"),
    ("gap_median", "1 day between contacts (median)", "2 days between contacts (median)"),
    ("gap_max", "longest silence of 1 day", "longest silence of 2 days"),
    ("gap_last", "last gap between contacts 1 day", "last gap between contacts 2 days"),
    ("chan_n_channels", "uses 1 channel", "uses 2 channels"),
]


@pytest.mark.parametrize(("feature", "one", "two"), COUNTED)
def test_counted_phrases_agree_in_number(feature: str, one: str, two: str) -> None:
    assert phrase(feature, 1.0) == one
    assert phrase(feature, 0.6) == one  # rounded as shown: "1", so singular
    assert phrase(feature, 2.0) == two
    assert phrase(feature, 0.0) == two.replace("2", "0", 1)
    assert phrase(feature, 1234.0) == two.replace("2", "1,234", 1)


def test_counted_windows_agree_in_number() -> None:
    assert phrase("freq_contacts_1d", 3.0) == "3 contacts in 1 day"
    assert phrase("freq_purchases_1d", 1.0) == "1 purchase in 1 day"
    assert phrase("fatigue_touches_1d", 2.0) == "2 marketing touches in 1 day"
    assert phrase("fatigue_response_rate_1d", 0.5) == "0.50 contacts per marketing touch in 1 day"
    assert phrase("fatigue_response_rate_30d", 1.0) == (
        "1.00 contacts per marketing touch in 30 days"
    )
    assert phrase("freq_active_days_90d", 1.0) == "active on 1 of the last 90 days"
    assert phrase("freq_active_days_1d", 1.0) == "active on 1 of the last 1 day"


def test_count() -> None:
    assert count(1, "day") == "1 day"
    assert count(2, "day") == "2 days"
    assert count(1234.4, "day") == "1,234 days"
    assert count(1.4, "touch", "touches") == "1 touch"
    assert count(0, "touch", "touches") == "0 touches"
    assert count("30", "day") == "30 days" and count("1", "day") == "1 day"
