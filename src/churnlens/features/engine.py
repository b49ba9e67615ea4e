"""The feature engine: every family's SQL in one DuckDB statement, pandas out.

The events up to the as-of day are copied once into a compact table that each aggregation
scans (see base.py for the relations the families aggregate over); the contacts are put in time
order per customer once, with one window, and the sequence features (channel switches,
gaps between contact days) come from that single pass. Each family then finishes its
columns with vectorised pandas. Population statistics (RFM cut points, the median
customer cycle) are computed from the same aggregates unless the caller passes them in,
so a slice of customers can be scored against a training population.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from types import ModuleType

import numpy as np
import pandas as pd

from churnlens.config import Settings
from churnlens.events import EventSource, EventTable, load_events, parse_as_of
from churnlens.features import channels, cycle, fatigue, frequency, intervals, rfm
from churnlens.features.base import FeatureContext
from churnlens.features.population import PopulationStats, quintile_cuts

FAMILIES: tuple[ModuleType, ...] = (frequency, channels, intervals, rfm, cycle, fatigue)
RELATIONS = ("contacts", "sequence", "purchase_days", "channels", "outbound")


def feature_names(settings: Settings | None = None) -> list[str]:
    """Names of the feature columns, in order, known before any data is seen."""
    settings = settings or Settings()
    return [name for family in FAMILIES for name in family.feature_names(settings)]


def _aggregates(relation: str, settings: Settings) -> str:
    exprs: list[str] = []
    for family in FAMILIES:
        contribute: Callable[[Settings], list[str]] | None = getattr(
            family, f"{relation}_aggregates", None
        )
        exprs += contribute(settings) if contribute else []
    return ",\n               ".join(exprs)


def _point_in_time_events(table: EventTable, as_of: date) -> str:
    """The events up to ``as_of`` with ``age``, copied once into a compact temp table.

    Every aggregation scans it: one copy is cheaper than decoding the source again for
    each of them.
    """
    day = f"DATE '{as_of.isoformat()}'"
    name = f"{table.name}_as_of_{as_of:%Y%m%d}"
    table.con.execute(f"""
        CREATE OR REPLACE TEMP TABLE {name} AS
        SELECT customer_id, timestamp, day, channel, event_type, amount, role,
               CAST({day} - day AS INTEGER) AS age
        FROM {table.name} WHERE day <= {day}
    """)
    return name


def _statement(events: str, settings: Settings) -> str:
    return f"""
    WITH ordered AS (
        SELECT customer_id, timestamp, age, channel,
               lag(channel) OVER w AS prev_channel,
               lag(day) OVER w AS prev_day,
               day
        FROM {events} WHERE role <> 'outbound'
        WINDOW w AS (PARTITION BY customer_id ORDER BY timestamp, channel, event_type)
    ), sequence_stats AS (
        SELECT customer_id,
               {_aggregates("sequence", settings)}
        FROM (SELECT *,
                     CASE WHEN day <> prev_day THEN CAST(day - prev_day AS DOUBLE) END AS gap,
                     prev_day IS NULL OR day <> prev_day AS new_day
              FROM ordered)
        GROUP BY customer_id
    ), contact_stats AS (
        SELECT customer_id, max(timestamp) AS _last_contact,
               {_aggregates("contacts", settings)}
        FROM {events} WHERE role <> 'outbound' GROUP BY customer_id
    ), purchase_stats AS (
        SELECT customer_id,
               {_aggregates("purchase_days", settings)}
        FROM (SELECT customer_id, max(age) AS age FROM {events}
              WHERE role = 'purchase' GROUP BY customer_id, day)
        GROUP BY customer_id
    ), channel_stats AS (
        SELECT customer_id,
               {_aggregates("channels", settings)}
        FROM (SELECT customer_id, channel, count(*) AS n
              FROM {events} WHERE role <> 'outbound' GROUP BY customer_id, channel)
        GROUP BY customer_id
    ), outbound AS (
        SELECT customer_id, timestamp, age FROM {events} WHERE role = 'outbound'
    ), outbound_stats AS (
        SELECT customer_id,
               {_aggregates("outbound", settings)}
        FROM outbound GROUP BY customer_id
    ), since_contact AS (
        SELECT o.customer_id, count(*) AS fatigue_touches_since_contact
        FROM outbound o LEFT JOIN contact_stats c ON o.customer_id = c.customer_id
        WHERE c._last_contact IS NULL OR o.timestamp > c._last_contact
        GROUP BY o.customer_id
    )
    SELECT * EXCLUDE (_last_contact)
    FROM contact_stats
    FULL OUTER JOIN outbound_stats USING (customer_id)
    LEFT JOIN sequence_stats USING (customer_id)
    LEFT JOIN purchase_stats USING (customer_id)
    LEFT JOIN channel_stats USING (customer_id)
    LEFT JOIN since_contact USING (customer_id)
    """


def _raw_aggregates(table: EventTable, as_of: date) -> pd.DataFrame:
    """Per-customer raw aggregates of every family, indexed by customer_id (sorted)."""
    events = _point_in_time_events(table, as_of)
    try:
        raw = table.con.execute(_statement(events, table.settings)).df()
    finally:
        table.con.execute(f"DROP TABLE {events}")
    raw.index = pd.Index(raw.pop("customer_id").astype(str), name="customer_id")
    return raw.sort_index()


def _population(raw: pd.DataFrame) -> PopulationStats:
    buyers = raw[raw["rfm_frequency"].fillna(0) > 0]
    return PopulationStats(
        recency_cuts=quintile_cuts(buyers["rfm_recency_days"].to_numpy(dtype=float)),
        frequency_cuts=quintile_cuts(buyers["rfm_frequency"].to_numpy(dtype=float)),
        monetary_cuts=quintile_cuts(buyers["rfm_monetary_total"].to_numpy(dtype=float)),
        median_interval_days=cycle.population_median(raw),
    )


def compute_population(
    events: EventSource | EventTable, as_of: str | date | datetime, settings: Settings | None = None
) -> PopulationStats:
    """Population statistics of the customers seen as of ``as_of``."""
    table = load_events(events, settings)
    return _population(_raw_aggregates(table, parse_as_of(as_of)))


def build_features(
    events: EventSource | EventTable,
    as_of: str | date | datetime,
    settings: Settings | None = None,
    population: PopulationStats | None = None,
) -> pd.DataFrame:
    """Point-in-time features: one row per customer seen on or before ``as_of``.

    Parameters
    ----------
    events
        An event log (path, DataFrame, Arrow table) or an already loaded
        :class:`~churnlens.events.EventTable`.
    as_of
        The features see every event up to and including this day.
    settings
        Windows, channels and event roles; defaults when ``None``.
    population
        Population statistics to score RFM and cycles against; computed from ``events``
        when ``None``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (sorted), float columns named as
        :func:`feature_names` says; see docs/features.md for every definition.
    """
    table = load_events(events, settings)
    as_of = parse_as_of(as_of)
    raw = _raw_aggregates(table, as_of)
    population = population or _population(raw)
    ctx = FeatureContext(settings=table.settings, as_of=as_of, population=population)
    frame = pd.concat([family.finish(raw, ctx) for family in FAMILIES], axis=1)
    frame = frame.astype(np.float64)
    frame.index.name = "customer_id"
    return frame
