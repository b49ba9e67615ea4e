"""A validated event log held in DuckDB: :func:`load_events` and :class:`EventTable`.

Everything happens in DuckDB, so a large Parquet file is validated and loaded without
passing through pandas. Validation collects every problem before raising one
:class:`~churnlens.errors.InputError`; exact duplicate rows are dropped and counted.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb
import pandas as pd

from churnlens.config import Settings
from churnlens.errors import ConfigError
from churnlens.events.checks import raise_on_problems
from churnlens.events.connection import read_errors
from churnlens.events.contract import (
    CANONICAL_COLUMNS,
    EventSource,
    EventSummary,
    role_sql,
)
from churnlens.events.fingerprint import ROW_HASH, FingerprintParts
from churnlens.events.sql import date_literal

_counter = itertools.count(1)


def next_name(prefix: str) -> str:
    """A fresh name for a temporary DuckDB relation."""
    return f"{prefix}_{next(_counter)}"


@dataclass
class EventTable:
    """A validated event log held as the DuckDB table ``name`` on connection ``con``.

    Columns: the canonical ones plus ``day`` (the UTC date) and ``role``
    (``purchase`` | ``inbound`` | ``outbound``, from the settings' event-type roles).
    """

    con: duckdb.DuckDBPyConnection
    name: str
    source: str
    settings: Settings
    rows_read: int
    duplicates_dropped: int
    known_fingerprint: FingerprintParts | None = None  # from the validation scan
    # what reading the validated events once tells every later reader (the overview of
    # row count, channels and event types): training builds features a dozen times
    memo: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def with_settings(self, settings: Settings | None) -> EventTable:
        """The same events read with ``settings`` (feature windows, horizons, models):
        itself when ``None`` or equal. The event-type roles were fixed when the log was
        loaded (its ``role`` column), so settings with other roles raise ConfigError."""
        if settings is None or settings == self.settings:
            return self
        if settings.events != self.settings.events:
            raise ConfigError(
                f"the events of {self.source} were loaded with the event roles "
                f"{self.settings.events.model_dump()}, the settings given have "
                f"{settings.events.model_dump()}: load the log again with these settings "
                "(load_events(path, settings))"
            )
        return dataclasses.replace(self, settings=settings)

    def to_pandas(self) -> pd.DataFrame:
        """The canonical event frame (without ``day`` and ``role``), in time order."""
        cols = ", ".join(CANONICAL_COLUMNS)
        frame = self.con.execute(
            f"SELECT {cols} FROM {self.name} ORDER BY timestamp, customer_id, channel, event_type"
        ).df()
        frame["timestamp"] = frame["timestamp"].astype("datetime64[us]")
        return frame

    def fingerprint(self, until: date | None = None) -> str:
        """The fingerprint (:mod:`churnlens.events.fingerprint`) of the validated events,
        or of those on or before the day ``until``."""
        return self.fingerprint_parts(until).digest()

    def fingerprint_parts(self, until: date | None = None) -> FingerprintParts:
        """The parts behind :meth:`fingerprint`."""
        if until is None and self.known_fingerprint is not None:
            return self.known_fingerprint
        where = "" if until is None else f" WHERE day <= {date_literal(until)}"
        row = self.con.execute(
            f"SELECT {FingerprintParts.sql('h')} FROM "
            f"(SELECT {ROW_HASH} AS h FROM {self.name}{where})"
        ).fetchone()
        return FingerprintParts.of_row(row)

    def materialised(self) -> EventTable:
        """The same events copied into a DuckDB temporary table (spilled to disk beyond
        ``engine.memory_limit``): for work that reads the log many times, such as training
        on snapshots, where each read of a view would decode the source again (and filter
        a sample again). A table is returned as is."""
        (kind,) = self.con.execute(
            "SELECT table_type FROM information_schema.tables WHERE table_name = ?", [self.name]
        ).fetchone() or ("VIEW",)
        if kind != "VIEW":  # a (temporary) table already
            return self
        name = next_name("events_copy")
        with read_errors(self.source):
            self.con.execute(f"CREATE TEMP TABLE {name} AS SELECT * FROM {self.name}")
        return dataclasses.replace(self, name=name, memo={})

    def summary(self) -> EventSummary:
        """Sizes, date range and counts per event type, channel and role."""
        n, customers, first, last = self.con.execute(
            f"SELECT count(*), count(DISTINCT customer_id), min(timestamp), max(timestamp) "
            f"FROM {self.name}"
        ).fetchone()  # type: ignore[misc]

        def counts(col: str) -> dict[str, int]:
            rows = self.con.execute(
                f"SELECT {col}, count(*) AS n FROM {self.name} GROUP BY 1 ORDER BY n DESC, 1"
            ).fetchall()
            return {str(k): int(v) for k, v in rows}

        from churnlens.stakes import implausible_amounts

        means = self.con.execute(
            f"SELECT avg(amount) FROM {self.name} WHERE role = 'purchase' AND amount > 0 "
            "GROUP BY customer_id"
        ).df()
        return EventSummary(
            source=self.source,
            notes=implausible_amounts(means.iloc[:, 0]),
            rows_read=self.rows_read,
            events=int(n),
            duplicates_dropped=self.duplicates_dropped,
            customers=int(customers),
            first_timestamp=first,
            last_timestamp=last,
            by_event_type=counts("event_type"),
            by_channel=counts("channel"),
            by_role=counts("role"),
        )


def load_events(
    source: EventSource | EventTable,
    settings: Settings | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> EventTable:
    """Validate an event log and load it into DuckDB as an :class:`EventTable`.

    Parameters
    ----------
    source
        A CSV (``.csv``, ``.csv.gz``, ``.csv.zst``) or Parquet path, a folder of Parquet
        files, a pandas DataFrame or an Arrow table. An :class:`EventTable` is returned
        as is, read with ``settings`` when they are given (:meth:`EventTable.with_settings`).
    settings
        Event-type roles come from ``settings.events``; defaults when ``None``.
    con
        DuckDB connection to load into; a new one (see :func:`connect`) when ``None``.

    Raises
    ------
    InputError
        Listing every problem found, with row counts and example rows.
    """
    from churnlens.events.staged import stage_events

    if isinstance(source, EventTable):
        return source.with_settings(settings)
    staged = stage_events(source, settings, con)
    with read_errors(staged.source):
        rows_read, maybe_duplicates, fingerprint = raise_on_problems(
            staged.con, staged.name, staged.source, staged.checks
        )
        table = next_name("events")
        dropped = create_event_relation(
            staged.con, staged.name, table, staged.settings, maybe_duplicates
        )
    return EventTable(
        con=staged.con,
        name=table,
        source=staged.source,
        settings=staged.settings,
        rows_read=rows_read,
        duplicates_dropped=dropped,
        known_fingerprint=fingerprint,
    )


def create_event_relation(
    con: duckdb.DuckDBPyConnection,
    staged: str,
    name: str,
    settings: Settings,
    maybe_duplicates: bool,
) -> int:
    """The validated events with ``day`` and ``role``, as a view; returns duplicates dropped.

    Exact duplicate rows are rare: the validation scan hashes every row, and only when two
    hashes are equal is a de-duplicated copy made (comparing every column, so a hash
    collision never merges two different events).
    """
    cols = ", ".join(CANONICAL_COLUMNS)
    kind = "VIEW"
    source = staged
    dropped = 0
    if maybe_duplicates:
        # Rare: pay for an exact de-duplicated copy.
        kind = "TABLE"
        source = f"(SELECT DISTINCT {cols} FROM {staged})"
        (read,) = con.execute(f"SELECT count(*) FROM {staged}").fetchone()  # type: ignore[misc]
        (kept,) = con.execute(f"SELECT count(*) FROM {source}").fetchone()  # type: ignore[misc]
        dropped = read - kept
    con.execute(f"CREATE TEMP {kind} {name} AS {event_select(source, settings)}")
    return int(dropped)


def event_select(source: str, settings: Settings) -> str:
    """The event relation's SELECT (the canonical columns, ``day`` and ``role``) over
    ``source``, a staged view or subquery."""
    return f"""
        SELECT customer_id, timestamp, channel, event_type,
               coalesce(amount, 0.0) AS amount, direction, duration_s,
               CAST(timestamp AS DATE) AS day, {role_sql(settings)} AS role
        FROM {source}
    """


def read_events(source: EventSource, settings: Settings | None = None) -> pd.DataFrame:
    """Read and validate an event log into the canonical pandas frame.

    Columns ``customer_id, timestamp, channel, event_type, amount, direction,
    duration_s``; ``timestamp`` is naive UTC. Raises :class:`InputError` on bad input.
    """
    return load_events(source, settings).to_pandas()
