"""Training snapshots: point-in-time features with the churn label of the days after.

A snapshot at day ``s`` holds the features as of ``s`` (they see nothing after it) and,
for each customer, ``churned = 1`` when the customer made no purchase in the
``horizon_days`` days after ``s`` (from ``s + 1`` to ``s + horizon``), else 0. Training
for "data known up to T" takes snapshots at T - H, T - H - step, ... so that every label
window ends on or before T.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

import pandas as pd

from churnlens.config import Settings
from churnlens.errors import InputError, Problem
from churnlens.events import EventSource, EventTable, load_events
from churnlens.events.sql import date_literal
from churnlens.features import build_features
from churnlens.features.population import PopulationStats


@dataclass(frozen=True)
class Snapshots:
    """Stacked snapshots: features ``X`` and labels ``y`` indexed by (as_of, customer_id)."""

    X: pd.DataFrame
    y: pd.Series
    dates: tuple[date, ...]

    def at(self, as_of: date) -> tuple[pd.DataFrame, pd.Series]:
        """The features and labels of one snapshot, indexed by customer_id."""
        key = pd.Timestamp(as_of)
        return self.X.xs(key, level="as_of"), self.y.xs(key, level="as_of")

    def before(self, as_of: date) -> Snapshots:
        """The snapshots strictly before ``as_of``."""
        keep = self.X.index.get_level_values("as_of") < pd.Timestamp(as_of)
        return Snapshots(self.X[keep], self.y[keep], tuple(d for d in self.dates if d < as_of))


def log_span(table: EventTable) -> tuple[date, date]:
    """First and last day of the log."""
    first, last = table.con.execute(f"SELECT min(day), max(day) FROM {table.name}").fetchone()  # type: ignore[misc]
    return first, last


def snapshot_dates(table: EventTable, known_until: date, settings: Settings) -> list[date]:
    """Snapshot days T - H, T - H - step, ... (oldest first) with enough history before.

    Raises :class:`InputError` when not even one snapshot fits.
    """
    t = settings.training
    first, _ = log_span(table)
    latest = known_until - timedelta(days=t.horizon_days)
    earliest = first + timedelta(days=t.min_history_days)
    dates = []
    day = latest
    while day >= earliest and len(dates) < t.max_snapshots:
        dates.append(day)
        day -= timedelta(days=t.snapshot_step_days or t.horizon_days)
    if not dates:
        raise InputError(
            table.source,
            [
                Problem(
                    column="timestamp",
                    message=(
                        f"not enough history for a snapshot: the log starts {first}, a "
                        f"snapshot needs {t.min_history_days} days of history and a "
                        f"{t.horizon_days}-day label window ending by {known_until}"
                    ),
                    fix="give a later --as-of, a shorter --horizon-days or a longer log",
                )
            ],
        )
    return sorted(dates)


def churn_labels(table: EventTable, as_of: date, horizon_days: int) -> pd.Index:
    """Customers who made a purchase in the ``horizon_days`` days after ``as_of``."""
    end = as_of + timedelta(days=horizon_days)
    rows = table.con.execute(
        f"SELECT DISTINCT customer_id FROM {table.name} "
        f"WHERE role = 'purchase' AND day > {date_literal(as_of)} AND day <= {date_literal(end)}"
    ).fetchall()
    return pd.Index([r[0] for r in rows], dtype=str)


def make_snapshot(
    table: EventTable,
    as_of: date,
    horizon_days: int,
    population: PopulationStats | None = None,
) -> tuple[pd.DataFrame, pd.Series]:
    """Features as of ``as_of`` and the churn label of the following ``horizon_days``."""
    settings = table.settings
    X = build_features(table, as_of, settings, population)
    if settings.training.population == "purchasers":
        X = X[X["rfm_has_purchase"] == 1]
    bought = churn_labels(table, as_of, horizon_days)
    y = pd.Series((~X.index.isin(bought)).astype(int), index=X.index, name="churned")
    return X, y


def make_snapshots(
    events: EventSource | EventTable, as_ofs: list[date], settings: Settings | None = None
) -> Snapshots:
    """Snapshots at each day of ``as_ofs``, stacked with an (as_of, customer_id) index."""
    table = load_events(events, settings)
    horizon = table.settings.training.horizon_days
    frames, labels = [], []
    for as_of in sorted(as_ofs):
        X, y = make_snapshot(table, as_of, horizon)
        key = pd.Timestamp(as_of)
        frames.append(pd.concat({key: X}, names=["as_of"]))
        labels.append(pd.concat({key: y}, names=["as_of"]))
    return Snapshots(pd.concat(frames), pd.concat(labels), tuple(sorted(as_ofs)))


def spend_labels(table: EventTable, as_of: date, horizon_days: int) -> pd.Series:
    """Each customer's spend (net of refunds) on purchases in the ``horizon_days`` days
    after ``as_of``; customers without one are absent."""
    end = as_of + timedelta(days=horizon_days)
    frame = table.con.execute(
        f"SELECT customer_id, CAST(sum(CAST(amount AS DECIMAL(38, 10))) AS DOUBLE) AS spend "
        f"FROM {table.name} WHERE role = 'purchase' AND day > {date_literal(as_of)} "
        f"AND day <= {date_literal(end)} GROUP BY customer_id"
    ).df()
    return pd.Series(
        frame["spend"].to_numpy(dtype=float),
        index=pd.Index(frame["customer_id"].astype(str), name="customer_id"),
        name="spend",
    )


def value_snapshot_dates(table: EventTable, known_until: date, settings: Settings) -> list[date]:
    """The value model's snapshot days (oldest first): as_of - H, as_of - H - step, ...
    with ``value.min_history_days`` of log before them, at most ``value.max_snapshots``;
    none when the log is too short (the value model then needs no labels)."""
    v = settings.value
    first, _ = log_span(table)
    day = known_until - timedelta(days=v.horizon_days)
    dates: list[date] = []
    while day >= first + timedelta(days=v.min_history_days) and len(dates) < v.max_snapshots:
        dates.append(day)
        day -= timedelta(days=v.snapshot_step_days)
    return sorted(dates)


def make_value_snapshots(
    table: EventTable, as_ofs: list[date]
) -> tuple[pd.DataFrame, pd.Series] | None:
    """Features at each day of ``as_ofs`` and the spend over ``value.horizon_days`` after
    it (0 for customers who bought nothing), stacked with an (as_of, customer_id) index;
    ``None`` without days."""
    if not as_ofs:
        return None
    horizon = table.settings.value.horizon_days
    frames, labels = [], []
    for as_of in sorted(as_ofs):
        X = build_features(table, as_of, table.settings)
        y = spend_labels(table, as_of, horizon).reindex(X.index, fill_value=0.0)
        key = pd.Timestamp(as_of)
        frames.append(pd.concat({key: X}, names=["as_of"]))
        labels.append(pd.concat({key: y}, names=["as_of"]))
    return pd.concat(frames), pd.concat(labels)
