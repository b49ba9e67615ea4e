"""The feature engine: every family's SQL in one DuckDB statement, pandas out.

The event table is filtered to the as-of date once (the view ``ev``); each family
contributes one query over it, the engine joins them on the customer list and lets
each family finish its columns with vectorised pandas. Population statistics (RFM cut
points, the median purchase interval) are computed from the same view unless the caller
passes them in, so a slice of customers can be scored against a training population.
"""

from __future__ import annotations

from datetime import date, datetime

import numpy as np
import pandas as pd

from churnlens.config import Settings
from churnlens.events import EventSource, EventTable, load_events, parse_as_of
from churnlens.features import channels, cycle, fatigue, frequency, intervals, rfm
from churnlens.features.base import FeatureContext
from churnlens.features.population import PopulationStats, quintile_cuts

FAMILIES = (frequency, channels, intervals, rfm, cycle, fatigue)


def feature_names(settings: Settings | None = None) -> list[str]:
    """Names of the feature columns, in order, known before any data is seen."""
    settings = settings or Settings()
    return [name for family in FAMILIES for name in family.feature_names(settings)]


def _point_in_time_view(table: EventTable, as_of: date) -> str:
    view = f"{table.name}_as_of_{as_of:%Y%m%d}"
    table.con.execute(
        f"CREATE OR REPLACE TEMP VIEW {view} AS "
        f"SELECT customer_id, timestamp, day, channel, event_type, amount, role, "
        f"CAST(DATE '{as_of.isoformat()}' - day AS INTEGER) AS age "
        f"FROM {table.name} WHERE day <= DATE '{as_of.isoformat()}'"
    )
    return view


def _raw_aggregates(table: EventTable, view: str) -> pd.DataFrame:
    settings = table.settings
    ctes = [f"ev AS (SELECT * FROM {view})"]
    ctes.append("customers AS (SELECT DISTINCT customer_id FROM ev)")
    joins = []
    for family in FAMILIES:
        name = f"f_{family.__name__.rsplit('.', 1)[-1]}"
        ctes.append(f"{name} AS ({family.sql(settings)})")
        joins.append(f"LEFT JOIN {name} USING (customer_id)")
    query = f"WITH {', '.join(ctes)} SELECT * FROM customers {' '.join(joins)}"
    raw = table.con.execute(query).df()
    raw["customer_id"] = raw["customer_id"].astype(str)
    return raw.set_index("customer_id").sort_index()


def compute_population(
    events: EventSource | EventTable, as_of: str | date | datetime, settings: Settings | None = None
) -> PopulationStats:
    """Population statistics of the customers seen as of ``as_of``."""
    table = load_events(events, settings)
    view = _point_in_time_view(table, parse_as_of(as_of))
    return _population(table, view)


def _population(table: EventTable, view: str) -> PopulationStats:
    recency, frequency_, monetary = (
        table.con.execute(f"WITH ev AS (SELECT * FROM {view}) {rfm.sql(table.settings)}")
        .df()[["rfm_recency_days", "rfm_frequency", "rfm_monetary_total"]]
        .to_numpy(dtype=float)
        .T
    )
    (median,) = table.con.execute(
        f"WITH ev AS (SELECT * FROM {view}) "
        f"SELECT quantile_cont(interval_days, 0.5) FROM ({cycle.PURCHASE_INTERVALS})"
    ).fetchone()  # type: ignore[misc]
    return PopulationStats(
        recency_cuts=quintile_cuts(recency),
        frequency_cuts=quintile_cuts(frequency_),
        monetary_cuts=quintile_cuts(monetary),
        median_interval_days=float("nan") if median is None else float(median),
    )


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
    view = _point_in_time_view(table, as_of)
    population = population or _population(table, view)
    raw = _raw_aggregates(table, view)
    ctx = FeatureContext(settings=table.settings, as_of=as_of, population=population)
    frame = pd.concat([family.finish(raw, ctx) for family in FAMILIES], axis=1)
    frame = frame.astype(np.float64)
    frame.index.name = "customer_id"
    return frame
