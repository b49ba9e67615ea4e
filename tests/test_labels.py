"""Snapshots and labels: the right days, the right churners, nothing leaks."""

from __future__ import annotations

import itertools
from datetime import date, timedelta

import pandas as pd
import pytest

from churnlens import InputError, Settings, build_features, load_events
from churnlens.config import TrainingSettings
from churnlens.labels import make_snapshot, make_snapshots, snapshot_dates
from tests.conftest import make_log

LOG = make_log(
    [
        ("a", "2024-01-01", "web", "purchase", 10),
        ("a", "2024-03-15", "web", "purchase", 10),  # within 30 days after 03-01
        ("b", "2024-01-10", "web", "purchase", 10),
        ("b", "2024-04-15", "web", "purchase", 10),  # after the window of 03-01
        ("c", "2024-02-01", "email", "marketing"),
        ("c", "2024-03-10", "app", "visit"),  # a contact is not a purchase
        ("d", "2024-03-05", "web", "purchase", 10),  # first seen after 03-01
    ]
)


def settings(**training: object) -> Settings:
    return Settings(training=TrainingSettings(**training))  # type: ignore[arg-type]


def test_churn_label_is_no_purchase_in_the_horizon() -> None:
    table = load_events(LOG, settings(horizon_days=30))
    X, y = make_snapshot(table, date(2024, 3, 1), 30)
    assert list(X.index) == ["a", "b", "c"]  # d has no event by 03-01
    assert y.to_dict() == {"a": 0, "b": 1, "c": 1}


def test_purchasers_population() -> None:
    table = load_events(LOG, settings(horizon_days=30, population="purchasers"))
    X, _ = make_snapshot(table, date(2024, 3, 1), 30)
    assert list(X.index) == ["a", "b"]


def test_snapshot_days_end_label_windows_by_as_of() -> None:
    table = load_events(LOG, settings(horizon_days=30, snapshot_step_days=14, min_history_days=20))
    dates = snapshot_dates(table, date(2024, 4, 30), table.settings)
    assert dates[-1] == date(2024, 3, 31)  # T - H
    assert all(b - a == timedelta(days=14) for a, b in itertools.pairwise(dates))
    assert dates[0] >= date(2024, 1, 21)  # 20 days of history after the first event
    assert all(d + timedelta(days=30) <= date(2024, 4, 30) for d in dates)


def test_no_room_for_a_snapshot_is_a_clear_error() -> None:
    table = load_events(LOG, settings(horizon_days=90, min_history_days=60))
    with pytest.raises(InputError, match="not enough history for a snapshot"):
        snapshot_dates(table, date(2024, 4, 1), table.settings)


def test_snapshot_features_never_see_their_label_window(sample_events: pd.DataFrame) -> None:
    """Cut the log at each snapshot day: the features stay exactly the same."""
    s = settings(horizon_days=60, snapshot_step_days=60, min_history_days=60)
    snaps = make_snapshots(sample_events, [date(2024, 6, 30), date(2024, 8, 29)], s)
    for day in snaps.dates:
        X, _ = snaps.at(day)
        cut = sample_events[sample_events["timestamp"] < pd.Timestamp(day + timedelta(days=1))]
        # population statistics come from the same snapshot, so they are unchanged too
        pd.testing.assert_frame_equal(X, build_features(cut, day, s), check_exact=False, rtol=1e-12)


def test_stacked_snapshots_are_indexed_by_day_and_customer(sample_events: pd.DataFrame) -> None:
    s = settings(horizon_days=60)
    snaps = make_snapshots(sample_events, [date(2024, 8, 29), date(2024, 6, 30)], s)
    assert snaps.dates == (date(2024, 6, 30), date(2024, 8, 29))
    assert snaps.X.index.names == ["as_of", "customer_id"]
    assert snaps.y.index.equals(snaps.X.index)
    earlier = snaps.before(date(2024, 8, 29))
    assert set(earlier.X.index.get_level_values("as_of")) == {pd.Timestamp("2024-06-30")}
