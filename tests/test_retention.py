"""Monthly retention KPIs and cohorts: hand-computed logs, a naive oracle, no leakage."""

from __future__ import annotations

import math
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from churnlens import InputError, load_events
from churnlens.retention import KPI_COLUMNS, cohort_matrix, monthly_kpis
from tests.conftest import make_log

NAN = float("nan")

LOG = make_log(
    [
        ("a", "2024-01-05 09:00", "web", "purchase", 10),
        ("a", "2024-01-05 17:30", "store", "purchase", 5),  # same day: one purchase day
        ("a", "2024-02-20", "web", "purchase", 20),
        ("b", "2024-01-31 23:59", "web", "purchase", 7),
        ("c", "2024-02-10", "app", "purchase", 3),
        ("c", "2024-03-12", "app", "purchase", 4),
        ("d", "2024-02-01", "web", "visit"),  # a contact is not a purchase
        ("d", "2024-03-25", "web", "purchase", 50),  # after `until`
        ("e", "2024-03-21", "web", "purchase", 60),  # after `until`
    ]
)
UNTIL = date(2024, 3, 20)


def row(kpis: pd.DataFrame, month: date) -> dict[str, object]:
    return kpis.set_index("month").loc[month].to_dict()


def assert_row(actual: dict[str, object], expected: dict[str, object]) -> None:
    for key, want in expected.items():
        got = actual[key]
        if isinstance(want, float) and math.isnan(want):
            assert math.isnan(got), key
        else:
            assert got == pytest.approx(want), key


def test_hand_computed_months() -> None:
    # active_days=30: active on d with a purchase on d-29 .. d
    kpis = monthly_kpis(load_events(LOG), UNTIL, active_days=30)
    assert list(kpis.columns) == list(KPI_COLUMNS)
    assert list(kpis["month"]) == [date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1)]
    assert list(kpis["partial"]) == [False, False, True]
    # January: the first month, nobody active on Dec 31
    assert_row(
        row(kpis, date(2024, 1, 1)),
        dict(customers_start=0, new_customers=2, customers_end=2, retention_rate=NAN,
             churn_rate=NAN, purchasers=2, repeat_purchasers=0, repeat_purchase_rate=0.0,
             purchases=3, revenue=22.0),
    )  # fmt: skip
    # February: start {a, b}; end on Feb 29 {a, b (Jan 31 is 29 days before), c}; c is new
    assert_row(
        row(kpis, date(2024, 2, 1)),
        dict(customers_start=2, new_customers=1, customers_end=3, retention_rate=1.0,
             churn_rate=0.0, purchasers=2, repeat_purchasers=1, repeat_purchase_rate=0.5,
             purchases=2, revenue=23.0),
    )  # fmt: skip
    # March up to the 20th: start {a, b, c}; end {a (Feb 20 is 29 days before), c}
    assert_row(
        row(kpis, date(2024, 3, 1)),
        dict(customers_start=3, new_customers=0, customers_end=2, retention_rate=2 / 3,
             churn_rate=1 / 3, purchasers=1, repeat_purchasers=1, repeat_purchase_rate=1.0,
             purchases=1, revenue=4.0),
    )  # fmt: skip


def test_column_types() -> None:
    kpis = monthly_kpis(load_events(LOG), UNTIL, active_days=30)
    assert all(isinstance(m, date) for m in kpis["month"])
    assert kpis["partial"].dtype == bool
    for col in ("customers_start", "new_customers", "customers_end", "purchasers", "purchases"):
        assert kpis[col].dtype == np.int64, col
    for col in ("retention_rate", "churn_rate", "repeat_purchase_rate", "revenue"):
        assert kpis[col].dtype == np.float64, col


@pytest.mark.parametrize(("active_days", "end", "retention"), [(30, 0, 0.0), (31, 1, 1.0)])
def test_purchase_exactly_active_days_ago_is_not_active(active_days, end, retention) -> None:
    # Jan 30 is 30 days before Feb 29: active on Feb 29 only when active_days > 30
    log = make_log([("a", "2024-01-30", "web", "purchase", 1)])
    kpis = monthly_kpis(load_events(log), date(2024, 2, 29), active_days=active_days)
    feb = row(kpis, date(2024, 2, 1))
    assert (feb["customers_start"], feb["customers_end"]) == (1, end)
    assert feb["retention_rate"] == retention
    assert feb["churn_rate"] == 1 - retention
    assert not feb["partial"]  # `until` is the month's last day


def test_purchases_exactly_active_days_apart_keep_a_customer_active() -> None:
    # the Jan 5 purchase stops counting on Jan 15, the day the next one starts counting
    log = make_log(
        [("a", "2024-01-05", "web", "purchase", 1), ("a", "2024-01-15", "web", "purchase", 1)]
    )
    for until, active in [(date(2024, 1, 14), 1), (date(2024, 1, 15), 1), (date(2024, 1, 24), 1)]:
        assert monthly_kpis(load_events(log), until, 10)["customers_end"].tolist() == [active]
    feb = row(monthly_kpis(load_events(log), date(2024, 2, 3), 10), date(2024, 2, 1))
    assert (feb["customers_start"], feb["customers_end"]) == (0, 0)  # Jan 25 is the first day out


@pytest.mark.parametrize(("active_days", "start"), [(30, 0), (31, 1)])
def test_start_is_the_day_before_the_month(active_days, start) -> None:
    # Jan 1 is 30 days before Jan 31, the day before February starts
    log = make_log([("a", "2024-01-01", "web", "purchase", 1)])
    feb = row(monthly_kpis(load_events(log), date(2024, 2, 10), active_days), date(2024, 2, 1))
    assert feb["customers_start"] == start
    assert feb["partial"]


def test_months_without_start_customers() -> None:
    log = make_log(
        [("a", "2024-01-05", "web", "purchase", 2), ("a", "2024-03-15", "web", "purchase", 3)]
    )
    kpis = monthly_kpis(load_events(log), date(2024, 3, 20), active_days=10)
    assert len(kpis) == 3
    assert_row(
        row(kpis, date(2024, 2, 1)),  # a gap month: still a row, all zero
        dict(customers_start=0, new_customers=0, customers_end=0, retention_rate=NAN,
             churn_rate=NAN, purchasers=0, repeat_purchasers=0, repeat_purchase_rate=NAN,
             purchases=0, revenue=0.0),
    )  # fmt: skip
    assert_row(
        row(kpis, date(2024, 3, 1)),  # a returns: active at the end, not new, no start
        dict(customers_start=0, new_customers=0, customers_end=1, retention_rate=NAN,
             purchasers=1, repeat_purchasers=1, repeat_purchase_rate=1.0, revenue=3.0),
    )  # fmt: skip


def test_nothing_before_until_gives_an_empty_frame() -> None:
    kpis = monthly_kpis(load_events(LOG), date(2023, 12, 31))
    assert kpis.empty
    assert list(kpis.columns) == list(KPI_COLUMNS)
    assert cohort_matrix(load_events(LOG), date(2023, 12, 31), max_months=2).shape == (0, 3)


def test_until_as_text_and_bad_parameters() -> None:
    table = load_events(LOG)
    pd.testing.assert_frame_equal(
        monthly_kpis(table, "2024-03-20", 30), monthly_kpis(table, UNTIL, 30)
    )
    with pytest.raises(InputError, match="active_days"):
        monthly_kpis(table, UNTIL, active_days=0)
    with pytest.raises(InputError, match="max_months"):
        cohort_matrix(table, UNTIL, max_months=-1)


def test_hand_computed_cohorts() -> None:
    # January cohort {a, b}: a buys again in February; February cohort {c}: c buys in March.
    # d and e buy only after `until`: no March cohort.
    cohorts = cohort_matrix(load_events(LOG), UNTIL, max_months=3)
    expected = pd.DataFrame(
        [[1.0, 0.5, 0.0, NAN], [1.0, 1.0, NAN, NAN]],
        index=pd.Index([date(2024, 1, 1), date(2024, 2, 1)], name="cohort", dtype=object),
        columns=pd.Index([0, 1, 2, 3], name="months_since_acquisition"),
    )
    pd.testing.assert_frame_equal(cohorts, expected)


def test_cohort_sizes_match_new_customers(sample_events: pd.DataFrame) -> None:
    table = load_events(sample_events)
    until = date(2024, 11, 15)
    kpis = monthly_kpis(table, until)
    cohorts = cohort_matrix(table, until, max_months=24)
    assert (
        kpis["new_customers"].sum()
        == table.con.execute(
            f"SELECT count(DISTINCT customer_id) FROM {table.name} "
            f"WHERE role = 'purchase' AND day <= DATE '{until}'"
        ).fetchone()[0]
    )  # type: ignore[index]
    assert cohorts[0].eq(1.0).all()
    assert set(cohorts.index) == set(kpis.loc[kpis["new_customers"] > 0, "month"])
    assert cohorts.notna().sum(axis=1).tolist() == [
        min(25, (until.year - c.year) * 12 + until.month - c.month + 1) for c in cohorts.index
    ]


# ------------------------------------------------------- a naive oracle and properties

START = date(2024, 1, 1)


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def reference_kpis(log: pd.DataFrame, until: date, active_days: int) -> pd.DataFrame:
    """Month by month, customer by customer, straight from the definitions."""
    log = log.drop_duplicates()  # the contract drops exact duplicates
    buys = log[log["event_type"] == "purchase"].assign(day=log["timestamp"].dt.date)
    buys = buys[buys["day"] <= until]
    days = {c: set(g["day"]) for c, g in buys.groupby("customer_id")}
    first = {c: min(d) for c, d in days.items()}

    def active(day: date) -> int:
        lo = day - timedelta(days=active_days - 1)
        return sum(any(lo <= x <= day for x in d) for d in days.values())

    rows = []
    month = date(min(buys["day"]).year, min(buys["day"]).month, 1) if days else None
    while month is not None and month <= until:
        end = min(_next_month(month) - timedelta(days=1), until)
        inside = buys[(buys["day"] >= month) & (buys["day"] <= end)]
        buyers = set(inside["customer_id"])
        start, finish = active(month - timedelta(days=1)), active(end)
        new = sum(month <= f <= end for f in first.values())
        repeat = sum(first[c] < month for c in buyers)
        retention = (finish - new) / start if start else NAN
        rows.append(
            dict(month=month, partial=end < _next_month(month) - timedelta(days=1),
                 customers_start=start, new_customers=new, customers_end=finish,
                 retention_rate=retention, churn_rate=1 - retention, purchasers=len(buyers),
                 repeat_purchasers=repeat,
                 repeat_purchase_rate=repeat / len(buyers) if buyers else NAN,
                 purchases=len(inside), revenue=float(inside["amount"].sum()))
        )  # fmt: skip
        month = _next_month(month)
    return pd.DataFrame(rows, columns=list(KPI_COLUMNS))


event = st.tuples(
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.integers(0, 130 * 4 - 1),  # quarter-days over 130 days
    st.sampled_from(["purchase", "purchase", "visit", "marketing"]),
    st.sampled_from([0.0, 5.0, 12.5, -3.0]),
)


def to_log(rows: list[tuple]) -> pd.DataFrame:
    base = pd.Timestamp(START)
    return make_log([(c, base + pd.Timedelta(hours=6 * q), "web", t, a) for c, q, t, a in rows])


PROPERTY = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(
    rows=st.lists(event, min_size=1, max_size=40),
    until_day=st.integers(0, 129),
    active_days=st.integers(1, 70),
)
def test_matches_the_naive_oracle(rows, until_day, active_days) -> None:
    log = to_log(rows)
    until = START + timedelta(days=until_day)
    got = monthly_kpis(load_events(log), until, active_days)
    want = reference_kpis(log, until, active_days)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)


@PROPERTY
@given(
    before=st.lists(event, min_size=1, max_size=40),
    after=st.lists(event, min_size=1, max_size=20),
    until_day=st.integers(0, 129),
    active_days=st.integers(1, 70),
)
def test_events_after_until_never_change_the_result(before, after, until_day, active_days):
    until = START + timedelta(days=until_day)
    cutoff = (until_day + 1) * 4  # first quarter-day after `until`
    past = [r for r in before if r[1] < cutoff]
    future = [(c, cutoff + q, *rest) for c, q, *rest in after]
    if not past:
        return
    alone, mixed = load_events(to_log(past)), load_events(to_log(past + future))
    pd.testing.assert_frame_equal(
        monthly_kpis(mixed, until, active_days), monthly_kpis(alone, until, active_days)
    )
    pd.testing.assert_frame_equal(cohort_matrix(mixed, until, 4), cohort_matrix(alone, until, 4))
