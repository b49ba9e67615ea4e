"""The feature engine: every family's SQL in one DuckDB statement, pandas out.

The events up to the as-of day are copied once into a compact table (keyed by the 64-bit
hash of the customer id, since integer keys sort and group faster than text; channel,
event type and role as one-byte ENUMs; ``age`` instead of the day) that each aggregation
scans (see base.py for the relations the families aggregate over). The contacts are put
in time order per customer once, with one window, and a single aggregation over that window
yields both the plain contact counts and the sequence features (channel switches, gaps
between contact days) and, for logs with few channels, the per-channel counts. Purchases
are aggregated per day, outbound touches together with the touches since the last
contact. Each family then finishes its columns with vectorised pandas. Population
statistics (RFM cut points, the median customer cycle) are computed from the same
aggregates unless the caller passes them in, so a slice of customers can be scored
against a training population.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from types import ModuleType

import duckdb
import numpy as np
import pandas as pd

from churnlens.config import Settings
from churnlens.events import (
    EventSource,
    EventTable,
    LogOverview,
    StagedLog,
    load_events,
    parse_as_of,
    query_arrow,
    stage_events,
    unordered,
)
from churnlens.features import channels, cycle, fatigue, frequency, intervals, rfm
from churnlens.features.base import FeatureContext
from churnlens.features.population import PopulationStats, quintile_cuts

FAMILIES: tuple[ModuleType, ...] = (frequency, channels, intervals, rfm, cycle, fatigue)
RELATIONS = ("contacts", "sequence", "purchase_days", "channels", "outbound")


def feature_names(settings: Settings | None = None) -> list[str]:
    """Names of the feature columns, in order, known before any data is seen."""
    settings = settings or Settings()
    return [name for family in FAMILIES for name in family.feature_names(settings)]


def _aggregate_exprs(
    relation: str, settings: Settings, seen_channels: tuple[str, ...]
) -> list[str]:
    exprs: list[str] = []
    for family in FAMILIES:
        contribute: Callable[[Settings, tuple[str, ...]], list[str]] | None = getattr(
            family, f"{relation}_aggregates", None
        )
        exprs += contribute(settings, seen_channels) if contribute else []
    return exprs


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


def _raw_aggregates(table: EventTable, as_of: date) -> pd.DataFrame:
    """Per-customer raw aggregates of every family, indexed by customer_id (sorted)."""
    out = f"{table.name}_raw"
    try:
        aggregate_events(table, as_of, out)
        return partition_aggregates(table.con, out)
    finally:
        table.con.execute(f"DROP TABLE IF EXISTS {out}")


def aggregate_events(table: EventTable, as_of: date, out: str) -> None:
    """The raw aggregates of every customer seen up to ``as_of`` into the temp table ``out``
    (read them with :func:`partition_aggregates`)."""
    log = stage_events(table)
    ids = log.id_keys()
    try:
        aggregate_staged(log, 0, 1, as_of, log.overview(), ids, out)
    finally:
        if ids:
            log.con.execute(f"DROP TABLE {ids}")


def aggregate_staged(
    log: StagedLog,
    index: int,
    count: int,
    as_of: date,
    overview: LogOverview,
    ids: str | None,
    out: str,
) -> tuple[int, int]:
    """Partition ``index`` of ``count`` of a staged log, copied (and checked, see
    :meth:`~churnlens.events.StagedLog.partition`) once into a compact table that every
    aggregation scans, aggregated into the temp table ``out``; returns the partition's
    events up to ``as_of`` (duplicates included) and the duplicate rows dropped.
    ``ids``: the table from :meth:`~churnlens.events.StagedLog.id_keys` to key the copy
    by id hashes, or ``None`` to keep the ids.
    """
    part = log.partition(index, count, as_of, overview, hashed_ids=ids is not None)
    try:
        # aggregated while the duplicate check runs; again in the rare case it finds some
        _aggregate(log.con, part.name, log.settings, overview.channels, out, ids)
        dropped = log.deduplicate(part)
        if dropped:
            _aggregate(log.con, part.name, log.settings, overview.channels, out, ids)
    finally:
        log.con.execute(f"DROP TABLE IF EXISTS {part.name}")
    return part.rows, dropped


def _indexed(raw: pd.DataFrame) -> pd.DataFrame:
    raw.index = pd.Index(raw.pop("customer_id").astype(str), name="customer_id")
    return raw if raw.index.is_monotonic_increasing else raw.sort_index()


def _fetch(con: duckdb.DuckDBPyConnection, query: str, index: bool = True) -> pd.DataFrame:
    """A query's rows through Arrow (indexed by its customer_id when ``index``): integer
    columns with NULLs arrive as float64 with NaN (what every family's finish turns them
    into anyway), not as slower nullable integers."""
    frame = query_arrow(con, query).to_pandas()
    return _indexed(frame) if index else frame


def _finish(
    raw: pd.DataFrame, ctx: FeatureContext, families: tuple[ModuleType, ...]
) -> pd.DataFrame:
    """The families' columns side by side, indexed like ``raw``.

    The families compute on a positional index: every pandas operation that aligns on a
    text index of a million ids would rebuild its hash table first.
    """
    flat = raw.set_axis(pd.RangeIndex(len(raw)))
    frame = pd.concat([family.finish(flat, ctx) for family in families], axis=1)
    return frame.set_axis(raw.index)


def _aggregate(
    con: duckdb.DuckDBPyConnection,
    events: str,
    settings: Settings,
    channels: tuple[str, ...],
    out: str,
    customers: str | None,
) -> None:
    """The raw aggregates of a compact event table into the temp table ``out``.

    ``customers``: when the events' ``customer_id`` holds ``hash(customer_id)``, the
    table (``k``, ``customer_id``) that turns it back into the id.
    """
    statement = _statement(events, settings, channels)
    if customers:
        statement = (
            f"SELECT c.customer_id, r.* EXCLUDE (customer_id) "
            f"FROM ({statement}) r JOIN {customers} c ON r.customer_id = c.k"
        )
    with unordered(con):
        con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS {statement}")


def aggregated_population(
    con: duckdb.DuckDBPyConnection, tables: list[str], settings: Settings
) -> PopulationStats:
    """Population statistics of the customers in ``tables`` (from
    :func:`aggregate_staged`)."""
    return _population(_purchase_aggregates(con, tables, settings, ids=False))


def aggregated_buyers(
    con: duckdb.DuckDBPyConnection, tables: list[str], as_of: date, settings: Settings
) -> tuple[PopulationStats, pd.DataFrame]:
    """What :func:`buyer_features` gives, from the aggregates of :func:`aggregate_staged`
    (which hold the same purchase aggregates): no second pass over the log."""
    return _buyers(_purchase_aggregates(con, tables, settings), as_of, settings)


def _purchase_aggregates(
    con: duckdb.DuckDBPyConnection, tables: list[str], settings: Settings, ids: bool = True
) -> pd.DataFrame:
    """The buyers' purchase aggregates (what :func:`buyer_features` computes) in ``tables``,
    indexed by customer_id (sorted); without ids, in no order, unless ``ids``."""
    names = [e.rsplit(" AS ", 1)[1] for e in _aggregate_exprs("purchase_days", settings, ())]
    columns = ", ".join(["customer_id", *names] if ids else names)
    union = " UNION ALL ".join(f"SELECT {columns} FROM {t} WHERE rfm_frequency > 0" for t in tables)
    if not ids:
        return _fetch(con, union, index=False)
    return _fetch(con, f"{union} ORDER BY customer_id")


def _buyers(
    raw: pd.DataFrame, as_of: date, settings: Settings
) -> tuple[PopulationStats, pd.DataFrame]:
    population = _population(raw)
    ctx = FeatureContext(settings=settings, as_of=as_of, population=population)
    return population, _finish(raw, ctx, (rfm, cycle))


def partition_aggregates(con: duckdb.DuckDBPyConnection, table: str) -> pd.DataFrame:
    """The raw aggregates in ``table`` (from :func:`aggregate_staged`), indexed by
    customer_id (sorted)."""
    # DuckDB sorts text by its bytes, which is code point order, as pandas does
    return _fetch(con, f"SELECT * FROM {table} ORDER BY customer_id")


def finish_features(
    raw: pd.DataFrame, as_of: date, settings: Settings, population: PopulationStats
) -> pd.DataFrame:
    """The features from :func:`partition_aggregates`' raw aggregates (pandas only)."""
    ctx = FeatureContext(settings=settings, as_of=as_of, population=population)
    frame = _finish(raw, ctx, FAMILIES).astype(np.float64)
    frame.index.name = "customer_id"
    return frame


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
    return buyer_features(events, as_of, settings)[0]


def buyer_features(
    events: EventSource | EventTable, as_of: str | date | datetime, settings: Settings | None = None
) -> tuple[PopulationStats, pd.DataFrame]:
    """Population statistics, and the ``rfm_*`` and ``cycle_*`` features of every buyer.

    Only purchases are aggregated (one pass, no contact ordering), so this is a small
    fraction of :func:`build_features`' work: a batch job computes the population once
    and then builds the full features slice by slice against it. Indexed by customer_id
    (sorted); buyers only.
    """
    table = load_events(events, settings)
    as_of = parse_as_of(as_of)
    day = f"DATE '{as_of.isoformat()}'"
    raw = _fetch(
        table.con,
        f"""
        SELECT customer_id, {_aggregates("purchase_days", table.settings, ())}
        FROM (SELECT customer_id, CAST({day} - day AS INTEGER) AS age,
                     count(*) AS n, sum(CAST(amount AS DECIMAL(38, 10))) AS amount
              FROM {table.name} WHERE role = 'purchase' AND day <= {day}
              GROUP BY customer_id, age)
        GROUP BY customer_id ORDER BY customer_id
    """,
    )
    return _buyers(raw, as_of, table.settings)


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
    return finish_features(raw, as_of, table.settings, population or _population(raw))
