"""The feature engine: every family's SQL in one DuckDB statement, pandas out.

The events up to the as-of day are copied once into a compact table (keyed by the 64-bit
hash of the customer id, since integer keys sort and group faster than text; channel,
event type and role as one-byte ENUMs; ``age`` instead of the day) that each aggregation
scans (see base.py for the relations the families aggregate over). The contacts are put
in time order per customer once, with one window, and a single aggregation over that window
yields both the plain contact counts and the sequence features (channel switches, gaps
between contact days) and, for logs with few channels, the per-channel counts. Purchases
are aggregated per day, outbound touches together with the touches since the last
contact. Each family then finishes its columns with vectorised pandas. The population
statistics (RFM cut points, the median customer cycle) come from the buyers' purchase
aggregates (:func:`population_and_buyers`). :mod:`churnlens.features.aggregation` runs
all this partition by partition.
"""

from __future__ import annotations

from datetime import date

import duckdb
import numpy as np
import pandas as pd

from churnlens.config import Settings
from churnlens.events import query_arrow, unordered
from churnlens.features.base import FeatureContext, FeatureFamily
from churnlens.features.families import FAMILIES
from churnlens.features.families.cycle import population_median
from churnlens.features.population import PopulationStats, quintile_cuts

_BUYERS = tuple(f for f in FAMILIES if f.name in ("rfm", "cycle"))  # what the plan needs


def feature_names(settings: Settings | None = None) -> list[str]:
    """Names of the feature columns, in order, known before any data is seen."""
    settings = settings or Settings()
    return [name for family in FAMILIES for name in family.names(settings)]


def _aggregate_exprs(
    relation: str, settings: Settings, seen_channels: tuple[str, ...]
) -> list[str]:
    return [e for f in FAMILIES for e in f.expressions(relation, settings, seen_channels)]


def _aggregates(relation: str, settings: Settings, seen_channels: tuple[str, ...]) -> str:
    return ",\n               ".join(_aggregate_exprs(relation, settings, seen_channels))


def _statement(events: str, settings: Settings, seen_channels: tuple[str, ...]) -> str:
    def aggregates(*relations: str) -> str:
        return ",\n               ".join(
            exprs for r in relations if (exprs := _aggregates(r, settings, seen_channels))
        )

    channel_stats = aggregates("channels")
    channel_cte = (
        f"""
    , channel_stats AS (
        SELECT customer_id,
               {channel_stats}
        FROM (SELECT customer_id, channel, count(*) AS n
              FROM {events} WHERE role <> 'outbound' GROUP BY customer_id, channel)
        GROUP BY customer_id
    )"""
        if channel_stats
        else ""
    )
    channel_join = "LEFT JOIN channel_stats USING (customer_id)" if channel_stats else ""
    return f"""
    WITH contact_stats AS (
        SELECT customer_id, max(timestamp) AS _last_contact,
               {aggregates("contacts", "sequence")}
        FROM (SELECT *,
                     CASE WHEN age <> prev_age THEN prev_age - age END AS gap,
                     prev_age IS NULL OR age <> prev_age AS new_day
              -- in time order, then by channel; contacts that tie on both have the same
              -- age too, so their order (event type) changes no aggregate: left unsorted
              FROM (SELECT customer_id, timestamp, age, channel,
                           lag(channel) OVER w AS prev_channel,
                           lag(age) OVER w AS prev_age
                    FROM {events} WHERE role <> 'outbound'
                    WINDOW w AS (PARTITION BY customer_id ORDER BY timestamp, channel)))
        GROUP BY customer_id
    ), purchase_stats AS (
        -- amounts are summed as decimals: exact, so the same in any (parallel) order
        SELECT customer_id,
               {aggregates("purchase_days")}
        FROM (SELECT customer_id, age, count(*) AS n, sum(CAST(amount AS DECIMAL(38, 10))) AS amount
              FROM {events} WHERE role = 'purchase' GROUP BY customer_id, age)
        GROUP BY customer_id
    ), outbound_stats AS (
        SELECT customer_id,
               {aggregates("outbound")}
        FROM (SELECT o.customer_id, o.timestamp, o.age, c._last_contact AS last_contact
              FROM {events} o LEFT JOIN contact_stats c ON o.customer_id = c.customer_id
              WHERE o.role = 'outbound')
        GROUP BY customer_id
    ){channel_cte}
    SELECT * EXCLUDE (_last_contact)
    FROM contact_stats
    FULL OUTER JOIN outbound_stats USING (customer_id)
    LEFT JOIN purchase_stats USING (customer_id)
    {channel_join}
    """


def _indexed(raw: pd.DataFrame) -> pd.DataFrame:
    raw.index = pd.Index(raw.pop("customer_id").astype(str), name="customer_id")
    return raw if raw.index.is_monotonic_increasing else raw.sort_index()


def fetch(con: duckdb.DuckDBPyConnection, query: str, index: bool = True) -> pd.DataFrame:
    """A query's rows through Arrow (indexed by its customer_id when ``index``): integer
    columns with NULLs arrive as float64 with NaN (what every family's finish turns them
    into anyway), not as slower nullable integers."""
    frame = query_arrow(con, query).to_pandas()
    return _indexed(frame) if index else frame


def _finish(
    raw: pd.DataFrame, ctx: FeatureContext, families: tuple[FeatureFamily, ...]
) -> pd.DataFrame:
    """The families' columns side by side, indexed like ``raw``.

    The families compute on a positional index: every pandas operation that aligns on a
    text index of a million ids would rebuild its hash table first.
    """
    flat = raw.set_axis(pd.RangeIndex(len(raw)))
    frame = pd.concat([family.finish(flat, ctx) for family in families], axis=1)
    return frame.set_axis(raw.index)


def aggregate_compact(
    con: duckdb.DuckDBPyConnection,
    events: str,
    settings: Settings,
    channels: tuple[str, ...],
    out: str,
    customers: str | None,
    extra: str | None = None,
) -> None:
    """The raw aggregates of a compact event table into the temp table ``out``.

    ``customers``: when the events' ``customer_id`` holds ``hash(customer_id)``, the
    table (``k``, ``customer_id``) that turns it back into the id. ``extra``: a SELECT
    of more per-customer columns over the same events, joined on (say, the contact
    profile's).
    """
    statement = _statement(events, settings, channels)
    if extra:
        statement = f"SELECT * FROM ({statement}) LEFT JOIN ({extra}) USING (customer_id)"
    if customers:
        statement = (
            f"SELECT c.customer_id, r.* EXCLUDE (customer_id) "
            f"FROM ({statement}) r JOIN {customers} c ON r.customer_id = c.k"
        )
    with unordered(con):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS {statement}")


def raw_columns(settings: Settings) -> list[str]:
    """The columns of :func:`aggregate_compact`'s table besides ``customer_id`` (the
    same whatever the log's channels), in no particular order."""
    names: dict[str, None] = {}
    for relation in ("contacts", "sequence", "purchase_days", "outbound", "channels"):
        for expr in _aggregate_exprs(relation, settings, ("any",)):
            names[expr.rsplit(" AS ", 1)[1]] = None
    return list(names)


def purchase_columns(settings: Settings) -> list[str]:
    """The raw purchase aggregates the population statistics are computed from."""
    return [e.rsplit(" AS ", 1)[1] for e in _aggregate_exprs("purchase_days", settings, ())]


def purchase_aggregates(
    con: duckdb.DuckDBPyConnection, tables: list[str], settings: Settings
) -> pd.DataFrame:
    """The buyers' raw purchase aggregates in ``tables`` (from :func:`aggregate_compact`),
    without ids, in no order."""
    columns = ", ".join(purchase_columns(settings))
    union = " UNION ALL ".join(f"SELECT {columns} FROM {t} WHERE rfm_frequency > 0" for t in tables)
    return fetch(con, union, index=False)


def population_and_buyers(
    raw: pd.DataFrame,
    as_of: date,
    settings: Settings,
    population: PopulationStats | None = None,
) -> tuple[PopulationStats, pd.DataFrame]:
    """The one population computation: the statistics of the buyers whose raw purchase
    aggregates are ``raw`` (or ``population`` when given), and their ``rfm_*`` and
    ``cycle_*`` features scored against it."""
    population = population or population_of(raw)
    ctx = FeatureContext(settings=settings, as_of=as_of, population=population)
    return population, _finish(raw, ctx, _BUYERS)


def fetch_aggregates(con: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame:
    """The raw aggregates in ``table`` (from :func:`aggregate_compact`), indexed by
    customer_id (sorted)."""
    # DuckDB sorts text by its bytes, which is code point order, as pandas does
    return fetch(con, f"SELECT * FROM {table} ORDER BY customer_id")


def finish_features(
    raw: pd.DataFrame, as_of: date, settings: Settings, population: PopulationStats
) -> pd.DataFrame:
    """The features from :func:`fetch_aggregates`' raw aggregates (pandas only)."""
    ctx = FeatureContext(settings=settings, as_of=as_of, population=population)
    frame = _finish(raw, ctx, FAMILIES).astype(np.float64)
    frame.index.name = "customer_id"
    return frame


def population_of(raw: pd.DataFrame) -> PopulationStats:
    """RFM cut points and the median cycle of the buyers among raw purchase aggregates."""
    buyers = raw[raw["rfm_frequency"].fillna(0) > 0]
    return PopulationStats(
        recency_cuts=quintile_cuts(buyers["rfm_recency_days"].to_numpy(dtype=float)),
        frequency_cuts=quintile_cuts(buyers["rfm_frequency"].to_numpy(dtype=float)),
        monetary_cuts=quintile_cuts(buyers["rfm_monetary_total"].to_numpy(dtype=float)),
        median_interval_days=population_median(raw),
    )
