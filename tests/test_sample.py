"""The synthetic event log: contract, determinism and the behaviour it is meant to show."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from churnlens.sample import CHANNELS, COLUMNS, EVENT_TYPES, generate_events, simulate_log

START = dt.date(2024, 1, 1)
DAYS = 730


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    """Two years of a mid-sized population, shared by the statistical tests."""
    return generate_events(customers=10_000, days=DAYS, seed=11, start=START)


@pytest.fixture(scope="module")
def day(events: pd.DataFrame) -> pd.Series:
    return (events["timestamp"] - pd.Timestamp(START)).dt.days


def _per_customer(frame: pd.DataFrame, index: pd.Index) -> pd.Series:
    return frame.groupby("customer_id").size().reindex(index, fill_value=0)


# ------------------------------------------------------------------------- contract


def test_same_seed_gives_the_same_frame() -> None:
    first = generate_events(customers=300, days=200, seed=3)
    second = generate_events(customers=300, days=200, seed=3)
    pd.testing.assert_frame_equal(first, second)


def test_different_seeds_give_different_frames() -> None:
    first = generate_events(customers=300, days=200, seed=3)
    second = generate_events(customers=300, days=200, seed=4)
    assert not first.equals(second)
    assert first["amount"].sum() != second["amount"].sum()


def test_columns_dtypes_and_index(events: pd.DataFrame) -> None:
    assert tuple(events.columns) == COLUMNS
    text = pd.Series(["x"], dtype="str").dtype
    for column in ("customer_id", "channel", "event_type", "direction"):
        assert events[column].dtype == text, column
    assert events["timestamp"].dtype == np.dtype("datetime64[us]")
    assert events["amount"].dtype == np.float64
    assert events["duration_s"].dtype == np.float64
    assert isinstance(events.index, pd.RangeIndex)
    assert events.index.equals(pd.RangeIndex(len(events)))
    assert events["customer_id"].str.fullmatch(r"C\d{7}").all()
    assert events[["customer_id", "timestamp", "channel", "event_type"]].notna().all().all()


def test_value_domains(events: pd.DataFrame) -> None:
    kind, channel = events["event_type"], events["channel"]
    assert set(kind.unique()) == set(EVENT_TYPES)
    assert set(channel.unique()) == set(CHANNELS)
    assert set(events["direction"].unique()) == {"inbound", "outbound"}
    assert ((events["direction"] == "outbound") == (kind == "marketing")).all()
    allowed = {
        "visit": {"web", "app"},
        "purchase": {"web", "app", "store"},
        "support": {"phone", "chat", "email"},
        "complaint": {"phone", "chat", "email", "store"},
        "marketing": {"email", "app"},
    }
    for event_type, channels in allowed.items():
        assert set(channel[kind == event_type].unique()) == channels, event_type


def test_amounts_only_on_purchases(events: pd.DataFrame) -> None:
    purchase = events["event_type"] == "purchase"
    assert (events.loc[~purchase, "amount"] == 0.0).all()
    amount = events.loc[purchase, "amount"]
    assert amount.notna().all()
    assert (amount != 0).all()
    assert 0 < (amount < 0).mean() < 0.05  # refunds exist but are rare
    positive = amount[amount > 0]
    assert positive.mean() > positive.median() * 1.1  # right-skewed order values


def test_duration_only_on_phone_and_chat_service_contacts(events: pd.DataFrame) -> None:
    service = events["event_type"].isin(["support", "complaint"])
    call = events["channel"].isin(["phone", "chat"])
    has = events["duration_s"].notna()
    assert (has == (service & call)).all()
    assert has.any()
    assert (events.loc[has, "duration_s"] > 0).all()


def test_sorted_and_within_the_period() -> None:
    start = dt.date(2023, 3, 15)
    frame = generate_events(customers=500, days=100, seed=5, start=start)
    ts = frame["timestamp"]
    assert ts.min() >= pd.Timestamp(start)
    assert ts.max() < pd.Timestamp(start) + pd.Timedelta(days=100)
    resorted = frame.sort_values(["timestamp", "customer_id"], kind="stable")
    pd.testing.assert_frame_equal(resorted.reset_index(drop=True), frame)
    assert ts.dt.hour.nunique() >= 18  # real times of day, not midnights


def test_empty_and_invalid_arguments() -> None:
    empty = generate_events(customers=0, days=30)
    assert tuple(empty.columns) == COLUMNS
    assert empty.empty
    with pytest.raises(ValueError, match="customers"):
        generate_events(customers=-1)
    with pytest.raises(ValueError, match="days"):
        generate_events(customers=10, days=0)


# ------------------------------------------------------------------------ behaviour


def test_about_fifty_events_per_customer_scaling_with_days() -> None:
    two_years = len(generate_events(customers=4000, days=730, seed=2)) / 4000
    one_year = len(generate_events(customers=4000, days=365, seed=2)) / 4000
    assert 42 <= two_years <= 58
    assert 1.4 <= two_years / one_year <= 2.2


def test_customers_join_over_time(events: pd.DataFrame, day: pd.Series) -> None:
    first = day.groupby(events["customer_id"]).min()
    assert 0.15 <= (first < 14).mean() <= 0.35  # an existing base at the start
    quarters = np.bincount(np.minimum(first // (DAYS // 4), 3), minlength=4) / first.size
    assert (quarters[1:] > 0.1).all()  # and steady acquisition afterwards
    assert quarters[3] > quarters[1]  # growing a bit


def test_marketing_continues_after_the_last_purchase(events: pd.DataFrame, day: pd.Series) -> None:
    kind = events["event_type"]
    last_purchase = day[kind == "purchase"].groupby(events["customer_id"]).max()
    last_touch = day[kind == "marketing"].groupby(events["customer_id"]).max()
    touched_after = last_touch.reindex(last_purchase.index) > last_purchase + 60
    assert touched_after.mean() > 0.2


def test_heavy_tailed_activity(events: pd.DataFrame) -> None:
    per_customer = events["customer_id"].value_counts()
    top = per_customer.iloc[: len(per_customer) // 10].sum() / per_customer.sum()
    assert top > 0.3  # a uniform population would give about 0.1-0.15
    purchases = events.loc[events["event_type"] == "purchase", "customer_id"].value_counts()
    assert purchases.max() > 20 * purchases.median()


def test_churn_follows_over_contact_and_complaints(events: pd.DataFrame, day: pd.Series) -> None:
    """Buyers of the first year who were touched a lot or complained stop buying more often."""
    mid = DAYS // 2
    kind, customer = events["event_type"], events["customer_id"]
    buyers = pd.Index(customer[(kind == "purchase") & day.between(mid - 90, mid - 1)].unique())
    bought_later = customer[(kind == "purchase") & (day >= mid)].unique()
    stopped = pd.Series(~buyers.isin(bought_later), index=buyers)
    touches = _per_customer(events[(kind == "marketing") & day.between(mid - 90, mid - 1)], buyers)
    complaints = _per_customer(
        events[(kind == "complaint") & day.between(mid - 180, mid - 1)], buyers
    )
    many, few = touches >= touches.quantile(0.8), touches <= touches.median()
    assert many.sum() > 400
    assert (complaints > 0).sum() > 200
    assert stopped[many].mean() > stopped[few].mean() + 0.05
    assert stopped[complaints > 0].mean() > stopped[complaints == 0].mean() + 0.05


def test_engagement_fades_before_churn_and_stops_after() -> None:
    events, truth = simulate_log(customers=4000, days=DAYS, seed=13, start=START)
    frame = events.join(truth, on="customer_id")
    t = (frame["timestamp"] - pd.Timestamp(START)) / pd.Timedelta(days=1)
    after = np.floor(t) > frame["churn_day"]  # event times of day are drawn per day
    assert not (after & frame["event_type"].isin(["visit", "purchase", "complaint"])).any()
    assert (after & (frame["event_type"] == "marketing")).any()
    stray = (frame["event_type"] == "support") & after
    assert stray.sum() < 0.03 * (frame["event_type"] == "support").sum()
    # churners with a long history: weekly engagement before and during the fade
    churners = truth.index[truth["onset_day"] - truth["join_day"] > 120]
    engaged = frame["event_type"].isin(["visit", "purchase"])
    rel = (t - frame["onset_day"])[frame["customer_id"].isin(churners) & engaged]
    before = rel.between(-84, -28).sum() / 8
    fading = rel.between(7, 20).sum() / 2
    assert fading < 0.5 * before
    assert np.isinf(truth["churn_day"]).mean() > 0.25  # many never churn
