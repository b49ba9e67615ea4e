"""Retention KPIs by calendar month and acquisition cohorts, from the event log.

Only purchases (events with role ``purchase``) on or before ``until`` count; later
events and contacts of any other role are ignored. Days are UTC calendar days.

Definitions, for a month ``m`` running from its first day ``s`` to its end ``e`` (its
last day, or ``until`` for the last, partial month):

active customer on day ``d``
    a customer with at least one purchase in the ``active_days`` days up to and including
    ``d``, i.e. on a day in ``[d - active_days + 1, d]``. A purchase exactly
    ``active_days`` days before ``d`` no longer makes the customer active on ``d``.
``customers_start``
    customers active on ``s - 1``, the day before the month starts.
``customers_end``
    customers active on ``e``.
``new_customers``
    customers whose first purchase in the log falls in ``[s, e]``.
``retention_rate``
    ``(customers_end - new_customers) / customers_start``; NaN when
    ``customers_start`` is 0. Returning customers who were not active at the start count
    as retained, and with ``active_days`` shorter than a month a new customer can lapse
    within the month, so the rate can leave ``[0, 1]``.
``churn_rate``
    ``1 - retention_rate``.
``purchasers``
    customers with a purchase in ``[s, e]``; ``repeat_purchasers`` those of them who had
    also purchased before ``s``.
``repeat_purchase_rate``
    ``repeat_purchasers / purchasers``; NaN when nobody purchased in the month.
``purchases``, ``revenue``
    number of purchase events and the sum of their amounts in ``[s, e]``.

Months run from the month of the first purchase to the month holding ``until``. The log
knows nothing from before its first event, so in its first ``active_days`` days the
start counts are low and customers returning from before the log count as new.

Everything is computed in DuckDB. Activity is counted without a per-month scan of every
purchase: each customer's purchase days become active spells (a customer enters on a
purchase made after ``active_days`` or more days without one, and leaves ``active_days``
days after a purchase not followed by another in time), so the number of active
customers on a day is a running sum of +1/-1 steps.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from churnlens.errors import InputError, Problem
from churnlens.events import EventTable, parse_as_of

KPI_COLUMNS: tuple[str, ...] = (
    "month",
    "partial",
    "customers_start",
    "new_customers",
    "customers_end",
    "retention_rate",
    "churn_rate",
    "purchasers",
    "repeat_purchasers",
    "repeat_purchase_rate",
    "purchases",
    "revenue",
)
_COUNTS = (
    "customers_start",
    "new_customers",
    "customers_end",
    "purchasers",
    "repeat_purchasers",
    "purchases",
)

_KPI_SQL = """
WITH days AS (  -- one row per customer and purchase day
    SELECT customer_id, day, count(*) AS n, sum(amount) AS amount
    FROM {table}
    WHERE role = 'purchase' AND day <= $until
    GROUP BY customer_id, day
),
linked AS (
    SELECT *,
           CAST(date_trunc('month', day) AS DATE) AS month,
           lag(day) OVER w AS prev,
           lead(day) OVER w AS next
    FROM days
    WINDOW w AS (PARTITION BY customer_id ORDER BY day)
),
steps AS (  -- +1 when a customer becomes active, -1 on the first day they are not
    SELECT day, sum(step) AS step
    FROM (
        SELECT day, 1 AS step FROM linked WHERE prev IS NULL OR day - prev >= $active
        UNION ALL
        SELECT day + $active, -1 FROM linked WHERE next IS NULL OR next - day >= $active
    )
    WHERE day <= $until
    GROUP BY day
),
months AS (
    SELECT CAST(m AS DATE) AS month,
           least(last_day(CAST(m AS DATE)), $until) AS month_end,
           $until < last_day(CAST(m AS DATE)) AS partial
    FROM generate_series(
        (SELECT CAST(date_trunc('month', min(day)) AS TIMESTAMP) FROM days),
        CAST(date_trunc('month', $until) AS TIMESTAMP),
        INTERVAL 1 MONTH
    ) AS g(m)
),
active AS (
    SELECT m.month,
           coalesce(sum(s.step) FILTER (WHERE s.day < m.month), 0) AS customers_start,
           coalesce(sum(s.step), 0) AS customers_end
    FROM months AS m LEFT JOIN steps AS s ON s.day <= m.month_end
    GROUP BY m.month
),
monthly AS (  -- a customer's first purchase day in a month stands for the customer
    SELECT month,
           count(*) FILTER (WHERE prev IS NULL) AS new_customers,
           count(*) FILTER (WHERE prev IS NULL OR prev < month) AS purchasers,
           count(*) FILTER (WHERE prev < month) AS repeat_purchasers,
           sum(n) AS purchases,
           sum(amount) AS revenue
    FROM linked
    GROUP BY month
)
SELECT m.month, m.partial,
       CAST(a.customers_start AS BIGINT) AS customers_start,
       CAST(coalesce(p.new_customers, 0) AS BIGINT) AS new_customers,
       CAST(a.customers_end AS BIGINT) AS customers_end,
       CAST(coalesce(p.purchasers, 0) AS BIGINT) AS purchasers,
       CAST(coalesce(p.repeat_purchasers, 0) AS BIGINT) AS repeat_purchasers,
       CAST(coalesce(p.purchases, 0) AS BIGINT) AS purchases,
       CAST(coalesce(p.revenue, 0) AS DOUBLE) AS revenue
FROM months AS m
JOIN active AS a USING (month)
LEFT JOIN monthly AS p USING (month)
ORDER BY m.month
"""

_COHORT_SQL = """
WITH months AS (
    SELECT customer_id, CAST(date_trunc('month', day) AS DATE) AS month
    FROM {table}
    WHERE role = 'purchase' AND day <= $until
    GROUP BY customer_id, month
),
cohorts AS (
    SELECT customer_id, min(month) AS cohort FROM months GROUP BY customer_id
)
SELECT cohort, datediff('month', cohort, month) AS age, count(*) AS customers
FROM months JOIN cohorts USING (customer_id)
WHERE datediff('month', cohort, month) <= $max_months
GROUP BY cohort, age
"""


def _positive(name: str, value: int, minimum: int) -> None:
    if int(value) != value or value < minimum:
        raise InputError(
            name,
            [
                Problem(
                    column=name,
                    message=f"must be a whole number >= {minimum}, got {value!r}",
                    fix=f"give {name} as a whole number of at least {minimum}",
                )
            ],
        )


def monthly_kpis(events: EventTable, until: date | str, active_days: int = 90) -> pd.DataFrame:
    """Retention KPIs per calendar month up to ``until`` (see the module docstring).

    Parameters
    ----------
    events
        The validated event log (see :func:`churnlens.events.load_events`).
    until
        Last day that counts; later events are ignored. The month holding it is the last
        row, flagged ``partial`` unless ``until`` is its last day.
    active_days
        A customer is active on a day with a purchase in the ``active_days`` days up to
        and including it.

    Returns
    -------
    pandas.DataFrame
        One row per month, oldest first, with the columns of :data:`KPI_COLUMNS`;
        ``month`` is the month's first day as a :class:`datetime.date`. Empty when there
        is no purchase on or before ``until``.
    """
    until = parse_as_of(until)
    _positive("active_days", active_days, 1)
    frame = events.con.execute(
        _KPI_SQL.format(table=events.name), {"until": until, "active": int(active_days)}
    ).df()
    frame["month"] = pd.to_datetime(frame["month"]).dt.date.astype(object)
    frame["partial"] = frame["partial"].astype(bool)
    for col in _COUNTS:
        frame[col] = frame[col].astype("int64")
    start = frame["customers_start"].to_numpy(dtype=float)
    kept = (frame["customers_end"] - frame["new_customers"]).to_numpy(dtype=float)
    buyers = frame["purchasers"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["retention_rate"] = np.where(start > 0, kept / start, np.nan)
        frame["repeat_purchase_rate"] = np.where(
            buyers > 0, frame["repeat_purchasers"].to_numpy(dtype=float) / buyers, np.nan
        )
    frame["churn_rate"] = 1.0 - frame["retention_rate"]
    frame["revenue"] = frame["revenue"].astype(float)
    return frame[list(KPI_COLUMNS)].reset_index(drop=True)


def _add_months(month: date, n: int) -> date:
    total = month.year * 12 + month.month - 1 + n
    return date(total // 12, total % 12 + 1, 1)


def cohort_matrix(events: EventTable, until: date | str, max_months: int = 12) -> pd.DataFrame:
    """Share of each acquisition cohort purchasing in each month after acquisition.

    A customer's cohort is the month of their first purchase on or before ``until``.

    Parameters
    ----------
    events
        The validated event log.
    until
        Last day that counts; later events are ignored.
    max_months
        Last month since acquisition shown.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``cohort`` (the month's first day, oldest first; only months that
        acquired customers), columns ``0 .. max_months``: the share of the cohort with a
        purchase in that month since acquisition (1.0 in column 0). NaN where that month
        starts after ``until``; the month holding ``until`` counts as far as it goes.
    """
    until = parse_as_of(until)
    _positive("max_months", max_months, 0)
    counts = events.con.execute(
        _COHORT_SQL.format(table=events.name), {"until": until, "max_months": int(max_months)}
    ).df()
    ages = list(range(int(max_months) + 1))
    if counts.empty:
        empty = pd.DataFrame(columns=ages, dtype=float)
        empty.index = pd.Index([], name="cohort", dtype=object)
        return empty
    counts["cohort"] = pd.to_datetime(counts["cohort"]).dt.date
    wide = counts.pivot(index="cohort", columns="age", values="customers")
    wide = wide.reindex(columns=ages).fillna(0.0).astype(float)
    shares = wide.div(wide[0], axis=0)
    last = date(until.year, until.month, 1)
    future = np.array([[_add_months(c, k) > last for k in ages] for c in shares.index])
    shares = shares.mask(future)
    shares.index = pd.Index(list(shares.index), name="cohort", dtype=object)
    shares.columns = pd.Index(ages, name="months_since_acquisition")
    return shares
