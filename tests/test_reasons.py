"""Reason codes: the right features, in plain words."""

from __future__ import annotations

import math

import pandas as pd

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
