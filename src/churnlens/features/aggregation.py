"""The one partitioned pass over an event log: per-partition aggregates, whole-log statistics.

:func:`aggregate_log` is what ``features``, ``score``, training snapshots, the Python API
and each Spark bucket run. It reads the log once per customer-hash partition and never
holds it in pandas:

1. one light scan counts the rows and lists the channels and event types, and the id
   map (id hash -> id, every id checked once) is read, for a Parquet source from the
   row groups' dictionaries;
2. for each partition, the events up to the as-of day are copied out of the source once
   (filtered on the raw id, typed only once kept) into a compact table keyed by the
   64-bit hash of the customer id, checked in the same scan (the event-log contract's
   row checks; exact duplicates from row hashes, sorted in a background thread while
   DuckDB aggregates) and hashed for the fingerprint; every feature family's raw
   aggregates (and, for scoring, the contact profile's) are computed from it and kept
   in DuckDB;
3. the population statistics (RFM cut points, median cycle) and the buyers' ``rfm_*``
   and ``cycle_*`` features come from the buyers' purchase aggregates of all partitions
   (:func:`~churnlens.features.engine.population_and_buyers`, the one population
   computation), unless the caller passes a population in.

The caller then takes each partition's raw aggregates with :meth:`LogAggregates.raw`
and finishes them (:func:`~churnlens.features.engine.finish_features`). A log that
breaks the contract raises the same :class:`~churnlens.errors.InputError` as
:func:`~churnlens.events.load_events`, counted over the whole log.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from types import TracebackType

import duckdb
import pandas as pd

from churnlens.config import Settings
from churnlens.contacts import FatigueRules, contact_stats_sql
from churnlens.errors import InputError, Problem
from churnlens.events import EventSource, EventTable, FingerprintParts, parse_as_of, stage_events
from churnlens.events.fingerprint import combine
from churnlens.events.staged import StagedLog
from churnlens.events.table import create_event_relation, next_name
from churnlens.features.engine import (
    aggregate_compact,
    fetch_aggregates,
    finish_features,
    population_and_buyers,
    purchase_aggregates,
)
from churnlens.features.population import PopulationStats

Progress = Callable[[int, int, int], None]  # (partitions done, total, customers so far)


@dataclass(frozen=True)
class PartitionAggregates:
    """One partition's raw aggregates (the DuckDB table ``table``) and its counts."""

    table: str
    events: int  # up to the as-of day, duplicates included
    duplicates: int  # exact duplicate rows dropped
    customers: int
    fingerprint: FingerprintParts | None  # None when not asked for


@dataclass
class LogAggregates:
    """What :func:`aggregate_log` computed (see the module docstring). A context manager:
    leaving it drops the partitions' tables that were not taken."""

    log: StagedLog
    as_of: date
    rows: int  # every row of the log, whatever its day
    partitions: list[PartitionAggregates]
    population: PopulationStats
    buyers: pd.DataFrame = field(repr=False)  # rfm_* and cycle_* of every buyer
    ids: str | None = None  # the id map table, when partitions are keyed by id hashes

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        return self.log.con

    @property
    def settings(self) -> Settings:
        return self.log.settings

    @property
    def events(self) -> int:
        """Events up to the as-of day (duplicates included)."""
        return sum(p.events for p in self.partitions)

    @property
    def events_after(self) -> int:
        """Events after the as-of day: ignored."""
        return self.rows - self.events

    @property
    def duplicates(self) -> int:
        return sum(p.duplicates for p in self.partitions)

    @property
    def customers(self) -> int:
        return sum(p.customers for p in self.partitions)

    @property
    def fingerprint(self) -> str:
        """The fingerprint of the (de-duplicated) events up to the as-of day."""
        parts = [p.fingerprint for p in self.partitions]
        if any(part is None for part in parts):
            raise ValueError("the log was aggregated without its fingerprint")
        return combine(p for p in parts if p is not None).digest()

    def raw(self, index: int) -> pd.DataFrame:
        """Partition ``index``'s raw aggregates, indexed by customer_id (sorted); its
        table is dropped (each partition is taken once)."""
        table = self.partitions[index].table
        try:
            return fetch_aggregates(self.con, table)
        finally:
            self.con.execute(f"DROP TABLE IF EXISTS {table}")

    def event_table(self) -> EventTable:
        """The whole log as a validated :class:`EventTable` (for KPIs, reports): every row
        passed the contract's checks in the partition copies, so this is a view over the
        source, or a de-duplicated copy when the log had exact duplicates."""
        if self.log.validated:  # staged over an EventTable: that table
            return EventTable(self.con, self.log.name, self.log.source, self.settings, self.rows, 0)
        name = next_name("events")
        dropped = create_event_relation(
            self.con, self.log.name, name, self.settings, bool(self.duplicates)
        )
        return EventTable(self.con, name, self.log.source, self.settings, self.rows, dropped)

    def close(self) -> None:
        for table in [*(p.table for p in self.partitions), *([self.ids] if self.ids else [])]:
            self.con.execute(f"DROP TABLE IF EXISTS {table}")

    def __enter__(self) -> LogAggregates:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()


def partition_count(rows: int, per_partition: int, partitions: int | None = None) -> int:
    """``partitions`` when given, else one per ``per_partition`` rows (at least one)."""
    return partitions or max(1, math.ceil(rows / per_partition))


def aggregate_log(
    events: EventSource | EventTable | StagedLog,
    as_of: str | date | datetime,
    settings: Settings | None = None,
    *,
    partitions: int | None = None,
    per_partition: int | None = None,
    contacts: FatigueRules | None = None,
    population: PopulationStats | None = None,
    progress: Progress | None = None,
    require_events: bool = True,
    con: duckdb.DuckDBPyConnection | None = None,
    fingerprint: bool = True,
) -> LogAggregates:
    """Aggregate every customer seen up to ``as_of`` (see the module docstring).

    Parameters
    ----------
    events
        A path, DataFrame, Arrow table, validated :class:`EventTable` or staged log.
    partitions, per_partition
        How many customer-hash partitions; by default one per ``per_partition`` rows
        (default ``engine.feature_partition_events``).
    contacts
        Also aggregate the contact profile (:mod:`churnlens.contacts`) with these rules.
    population
        Score RFM and cycles against this population instead of the log's own.
    progress
        Called with (0, total, 0) first, then after each partition with (done, total,
        customers so far).
    require_events
        Raise when no event is on or before ``as_of`` (a Spark bucket may have none).
    fingerprint
        Compute the events' fingerprint (``False``: a validated table's events are not
        hashed, for callers that only want the features).

    Raises
    ------
    InputError
        When the log breaks the contract, or has no event on or before ``as_of``.
    """
    log = events if isinstance(events, StagedLog) else stage_events(events, settings, con)
    settings = log.settings
    day = parse_as_of(as_of)
    overview = log.overview()
    if not overview.rows:
        log.validate()  # says the log is empty
    per = per_partition or settings.engine.feature_partition_events
    count = partition_count(overview.rows, per, partitions)
    ids = log.id_keys()  # None: two ids share a hash, the partitions keep the ids
    extra = None
    found: list[PartitionAggregates] = []
    if progress:  # the count is known from the start
        progress(0, count, 0)
    try:
        for i in range(count):
            table = f"{log.name}_raw_{i}"
            part = log.partition(
                i, count, day, overview, hashed_ids=ids is not None, row_hashes=fingerprint
            )
            try:
                if contacts is not None:
                    extra = contact_stats_sql(part.name, contacts)
                args = (log.con, part.name, settings, overview.channels, table, ids, extra)
                # aggregated while the duplicate check runs; again in the rare case it finds some
                aggregate_compact(*args)
                dropped = log.deduplicate(part)
                if dropped:
                    aggregate_compact(*args)
                parts = log.fingerprint_parts(part) if fingerprint else None
            finally:
                log.con.execute(f"DROP TABLE IF EXISTS {part.name}")
            (n,) = log.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0]
            found.append(PartitionAggregates(table, part.rows, dropped, int(n), parts))
            if progress:
                progress(i + 1, count, sum(p.customers for p in found))
        if require_events and not sum(p.events for p in found):
            raise InputError(
                log.source,
                [
                    Problem(
                        "timestamp",
                        f"no event on or before the as-of day {day}: no customer to describe",
                        fix="give a later --as-of",
                    )
                ],
            )
        purchases = purchase_aggregates(log.con, [p.table for p in found], settings)
        own, buyers = population_and_buyers(purchases, day, settings, population)
    except BaseException:
        current = f"{log.name}_raw_{len(found)}"  # the partition that failed, if any
        for table in [*(p.table for p in found), current, *([ids] if ids else [])]:
            log.con.execute(f"DROP TABLE IF EXISTS {table}")
        raise
    return LogAggregates(log, day, overview.rows, found, own, buyers, ids)


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
        Population statistics to score RFM and cycles against; the log's own when
        ``None``. Passing the whole log's population (from :func:`compute_population`,
        or a ``features``/``score`` manifest) gives a slice of customers exactly the
        features they get within the whole log.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``customer_id`` (sorted), float columns named as
        :func:`feature_names` says; see docs/features.md for every definition.
    """
    with aggregate_log(
        events,
        as_of,
        settings,
        partitions=1,
        population=population,
        require_events=False,
        fingerprint=False,
    ) as log:
        return finish_features(log.raw(0), log.as_of, log.settings, log.population)


def compute_population(
    events: EventSource | EventTable, as_of: str | date | datetime, settings: Settings | None = None
) -> PopulationStats:
    """Population statistics of the customers seen as of ``as_of``."""
    with aggregate_log(events, as_of, settings, require_events=False) as log:
        return log.population


def buyer_features(
    events: EventSource | EventTable, as_of: str | date | datetime, settings: Settings | None = None
) -> tuple[PopulationStats, pd.DataFrame]:
    """Population statistics, and the ``rfm_*`` and ``cycle_*`` features of every buyer
    (in no particular order)."""
    with aggregate_log(events, as_of, settings) as log:
        return log.population, log.buyers
