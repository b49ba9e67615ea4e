"""Lifecycle stages: hand-made customers on each side of every boundary."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from churnlens import ConfigError, Settings
from churnlens.config import LifecycleSettings, settings_from_dict
from churnlens.lifecycle import StageThresholds, assign_stages, stage_thresholds

AS_OF = date(2025, 3, 31)
ONE_TIME = StageThresholds(days=(30.0, 60.0, 90.0), percentiles=(50, 80, 95), buyers=10)


def customers(rows: dict[str, tuple[float, float, float, float, float]]) -> pd.DataFrame:
    """id -> (has_purchase, recency, n_intervals, cycle_days, tenure)."""
    cols = [
        "rfm_has_purchase",
        "rfm_recency_days",
        "cycle_n_intervals",
        "cycle_days",
        "freq_tenure_days",
    ]
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols)


def stages(rows: dict, settings: LifecycleSettings | None = None) -> pd.DataFrame:
    return assign_stages(customers(rows), AS_OF, ONE_TIME, settings)


def test_repeat_buyers_are_measured_in_their_own_cycle() -> None:
    # cycle 10 days: active up to 10 days, silent up to 20, sleeping up to 30, lost after
    out = stages(
        {
            "a10": (1, 10, 3, 10.0, 200),
            "s11": (1, 11, 3, 10.0, 200),
            "s20": (1, 20, 3, 10.0, 200),
            "z21": (1, 21, 3, 10.0, 200),
            "z30": (1, 30, 3, 10.0, 200),
            "l31": (1, 31, 3, 10.0, 200),
            "slow": (1, 31, 3, 80.0, 400),  # buys every 80 days: not lapsed at day 31
        }
    )
    assert out["lifecycle_stage"].astype(str).to_dict() == {
        "a10": "active",
        "s11": "silent",
        "s20": "silent",
        "z21": "sleeping",
        "z30": "sleeping",
        "l31": "lost",
        "slow": "active",
    }


def test_one_time_and_non_buyers_follow_population_percentiles() -> None:
    out = stages(
        {
            "n30": (1, 30, 0, 45.0, 30),
            "s31": (1, 31, 0, 45.0, 31),
            "s60": (1, 60, 0, 45.0, 60),
            "z61": (1, 61, 0, 45.0, 61),
            "z90": (1, 90, 0, 45.0, 90),
            "l91": (1, 91, 0, 45.0, 91),
            "never_new": (0, np.nan, 0, 45.0, 5),
            "never_lost": (0, np.nan, 0, 45.0, 400),
        }
    )
    assert out["lifecycle_stage"].astype(str).to_dict() == {
        "n30": "new",
        "s31": "silent",
        "s60": "silent",
        "z61": "sleeping",
        "z90": "sleeping",
        "l91": "lost",
        "never_new": "new",
        "never_lost": "lost",
    }
    assert np.isnan(out.loc["never_new", "days_since_purchase"])
    assert out.loc["s31", "days_since_purchase"] == 31


def test_silent_and_lost_dates_are_the_first_day_past_each_threshold() -> None:
    out = stages({"r": (1, 4, 2, 10.5, 100), "o": (1, 95, 0, 45.0, 95), "x": (0, np.nan, 0, 45, 7)})
    # last purchase 2025-03-27; silent once 11 days (> 10.5) have passed, lost after 31.5
    assert out.loc["r", "silent_on"] == date(2025, 4, 7)
    assert out.loc["r", "lost_on"] == date(2025, 4, 28)
    # one-time buyer from 2024-12-26: silent after 30 days, lost after 90 (already past)
    assert out.loc["o", "silent_on"] == date(2025, 1, 26)
    assert out.loc["o", "lost_on"] == date(2025, 3, 27)
    # never bought, first seen 2025-03-24: counted from then
    assert out.loc["x", "silent_on"] == date(2025, 4, 24)


def test_stage_on_the_day_it_turns_matches_the_predicted_date() -> None:
    row = {"r": (1, 0, 2, 10.5, 100)}
    silent_on = stages(row).loc["r", "silent_on"]
    days = (silent_on - AS_OF).days
    before = assign_stages(customers({"r": (1, days - 1, 2, 10.5, 100)}), AS_OF, ONE_TIME)
    on = assign_stages(customers({"r": (1, days, 2, 10.5, 100)}), AS_OF, ONE_TIME)
    assert str(before["lifecycle_stage"].iloc[0]) == "active"
    assert str(on["lifecycle_stage"].iloc[0]) == "silent"


def test_multipliers_are_configurable() -> None:
    wide = LifecycleSettings(silent_after_cycles=2, sleeping_after_cycles=4, lost_after_cycles=6)
    out = stages({"c": (1, 15, 3, 10.0, 200)}, wide)
    assert str(out.loc["c", "lifecycle_stage"]) == "active"


def test_thresholds_are_percentiles_of_own_cycles_with_a_fallback() -> None:
    own = pd.Series([10.0, 20.0, 30.0, 40.0, np.nan, 50.0])
    t = stage_thresholds(own, Settings())
    assert t.days == pytest.approx(tuple(np.percentile([10, 20, 30, 40, 50], [50, 80, 95])))
    assert t.buyers == 5
    none = stage_thresholds(pd.Series([np.nan]), Settings())
    assert none.days == (60.0, 120.0, 180.0) and none.buyers == 0


@pytest.mark.parametrize(
    "section",
    [
        {"silent_after_cycles": 2, "sleeping_after_cycles": 2, "lost_after_cycles": 3},
        {"one_time_percentiles": [80, 50, 95]},
        {"one_time_percentiles": [50, 80, 100]},
    ],
)
def test_impossible_lifecycle_settings_are_refused(section: dict) -> None:
    with pytest.raises(ConfigError, match="lifecycle"):
        settings_from_dict({"lifecycle": section})
