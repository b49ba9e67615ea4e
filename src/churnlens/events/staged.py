"""A log read and typed but not yet validated, copied out one customer-hash partition at a
time: the input side of the one partitioned pass (:mod:`churnlens.aggregation`).

:func:`stage_events` opens a source as a typed DuckDB view; :meth:`StagedLog.partition`
copies one partition's events up to the as-of day into a compact table, checking the
contract's rows in the same scan and hashing each row (for exact duplicates and the
fingerprint), so a batch job reads its source once per partition and never validates it
in a separate pass.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from churnlens.config import Settings
from churnlens.errors import InputError, Problem
from churnlens.events.checks import Check, any_fails, checks_for, raise_on_problems, typed_columns
from churnlens.events.connection import connect_for, query_arrow, read_errors, unordered
from churnlens.events.contract import (
    CANONICAL_COLUMNS,
    ROLES,
    EventSource,
    missing_column_problems,
    role_sql,
)
from churnlens.events.fingerprint import ROW_HASH, FingerprintParts
from churnlens.events.sources import open_source, parquet_ids, source_label
from churnlens.events.sql import date_literal, enum_type, ident
from churnlens.events.table import EventTable, next_name

MAX_ENUM = 256  # more distinct values than this stay text
ID_KEY = "hash(customer_id)"  # the integer key StagedLog.id_keys and .partition share
# the columns of the compact copy (see compact_columns)
COMPACT = ("customer_id", "timestamp", "age", "channel", "event_type", "amount", "role")


@dataclass(frozen=True)
class LogOverview:
    """What one light scan of a staged log tells: its rows, and the distinct channels and
    event types (sorted)."""

    rows: int
    channels: tuple[str, ...]
    event_types: tuple[str, ...]


@dataclass(frozen=True)
class StagedPartition:
    """A partition copied out of a :class:`StagedLog`: its table and its rows (the events
    up to the as-of day, duplicates included). Until :meth:`StagedLog.deduplicate` has
    looked, the table may hold exact duplicate rows."""

    name: str
    rows: int
    duplicates: Future[bool] | None = None  # whether two rows' hashes are equal
    exact: str = ""  # the SELECT of the de-duplicated copy


@dataclass
class StagedLog:
    """An event log read and typed but not yet validated (see the module docstring).

    ``name`` is a DuckDB view with the canonical columns (typed as the contract says)
    and, for checking, the raw ones; ``checks`` are the contract's row checks. A staged
    :class:`EventTable` (already valid, without duplicates) has none.
    """

    con: duckdb.DuckDBPyConnection
    name: str
    source: str
    settings: Settings
    checks: list[Check]
    select: str  # the view's SELECT, whose WHERE sees the raw columns (see rows)
    typed_id: str = "customer_id"  # the SQL typing a raw id
    # a Parquet source's files and id column (as named in the files): id_keys reads the
    # ids' dictionaries instead of every value
    parquet: tuple[str, ...] = ()
    raw_id: str = "customer_id"
    memo: dict[str, Any] | None = None  # a validated table's (EventTable.memo)

    def rows(self, where: str) -> str:
        """The view's rows whose *raw* columns satisfy ``where``, as a subquery.

        DuckDB does not push a filter on a typed column through the typing projection:
        filtering the raw columns first means only the rows kept are typed.
        """
        return f"({self.select} WHERE {where})"

    def partition_filter(self, index: int, count: int) -> str:
        """The raw-column filter keeping partition ``index`` of ``count`` (it hashes the
        typed id, computed from the raw column): each customer lands in exactly one."""
        if count <= 1:
            return "true"
        return f"hash({self.typed_id}) % {int(count)} = {int(index)}"

    @property
    def validated(self) -> bool:
        return not self.checks

    def validate(self) -> None:
        """Check every row; raises :class:`InputError` listing every problem found."""
        if not self.validated:
            with read_errors(self.source):
                raise_on_problems(self.con, self.name, self.source, self.checks)

    def overview(self) -> LogOverview:
        """The row count, and the distinct channels and event types: one light scan (the
        partitions count the rows up to the as-of day, which needs every timestamp);
        a validated table's is read once."""
        if self.memo is not None and "overview" in self.memo:
            return self.memo["overview"]
        with read_errors(self.source):
            rows, channels, event_types = self.con.execute(
                f"SELECT count(*), "
                f"list(DISTINCT channel ORDER BY channel) FILTER (WHERE channel <> ''), "
                f"list(DISTINCT event_type ORDER BY event_type) "
                f"FILTER (WHERE event_type <> '') FROM {self.name}"
            ).fetchall()[0]
        overview = LogOverview(int(rows), tuple(channels or ()), tuple(event_types or ()))
        if self.memo is not None:
            self.memo["overview"] = overview
        return overview

    def id_keys(self) -> str | None:
        """A temp table of the log's customers: ``k`` (the 64-bit hash of the id, what
        :meth:`partition` keys by) and ``customer_id``. ``None`` when two ids share a hash
        (about one chance in 10^8 for a billion customers): then the partitions must keep
        the ids themselves.

        Every id of the log is in it (a filter on the day would cost more than the few
        ids it leaves out), so it also checks the ids: a missing or empty one raises
        :class:`InputError` as :meth:`validate` does, and :meth:`partition` need not
        check them row by row.
        """
        name = f"{self.name}_customers"
        ids = f"SELECT customer_id FROM {self.name}"
        with read_errors(self.source), unordered(self.con):
            values = parquet_ids(self.parquet, self.raw_id) if self.parquet else None
            if values is not None:
                self.con.register(f"{name}_values", pa.table({"customer_id": values}))
                ids = f"SELECT {self.typed_id} AS customer_id FROM {name}_values"
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {ID_KEY} AS k, customer_id "
                f"FROM (SELECT DISTINCT customer_id FROM ({ids}))"
            )
            if values is not None:
                self.con.unregister(f"{name}_values")
            n, keys, missing = self.con.execute(
                f"SELECT count(*), count(DISTINCT k), "
                f"count(*) FILTER (WHERE customer_id IS NULL OR customer_id = '') FROM {name}"
            ).fetchall()[0]
        if missing:
            self.validate()  # raises when a row lacks its id, counting over the whole log
        if n == keys:
            return name
        self.con.execute(f"DROP TABLE {name}")
        return None

    def partition(
        self,
        index: int,
        count: int,
        until: date,
        overview: LogOverview,
        hashed_ids: bool,
        row_hashes: bool = True,
    ) -> StagedPartition:
        """The partition's events up to ``until`` as a compact temp table (see
        :func:`compact_columns`) with each row's hash ``_h`` (the fingerprint's row hash),
        checked as it is copied.

        Rows failing a check are copied too (whatever their day), so that a failing
        partition raises the same :class:`InputError` as :func:`load_events` (from a
        whole-log check). Exact duplicate rows are found from the row hashes, sorted in a
        background thread: call :meth:`deduplicate` before trusting the table.
        ``hashed_ids`` puts ``hash(customer_id)`` in the ``customer_id`` column (integer
        keys sort and group faster than text), which the table from :meth:`id_keys` maps
        back to the ids it has checked. ``row_hashes=False`` leaves ``_h`` out of a
        validated table's partition (nothing to de-duplicate; no fingerprint wanted).
        """
        name = f"{self.name}_part"
        role = "role" if self.validated else role_sql(self.settings, as_enum=True)
        key = ID_KEY if hashed_ids else "customer_id"
        columns = compact_columns(until, overview.channels, overview.event_types, key, role)
        # the hash reads the typed input columns, not the compact ones of the same name
        if row_hashes or not self.validated:  # an unvalidated log's copy is de-duplicated
            columns += f", {ROW_HASH} AS _h"
        rows = self.rows(self.partition_filter(index, count))
        create = f"CREATE OR REPLACE TEMP TABLE {name} AS"
        with read_errors(self.source), unordered(self.con):
            if self.validated:  # an EventTable: valid and without duplicates
                kept = f"SELECT * FROM (SELECT {columns} FROM {rows}) WHERE age >= 0"
                self.con.execute(f"{create} {kept}")
                (n,) = self.con.execute(f"SELECT count(*) FROM {name}").fetchall()[0]
                return StagedPartition(name, int(n))
            # The copy shows some problems itself, more cheaply than the checks: an ENUM
            # channel or event type is NULL exactly when the text is missing or empty (the
            # ENUM holds every other value of the log).
            coded = {"channel": overview.channels, "event_type": overview.event_types}
            shown = [c for c, values in coded.items() if text_type(values) != "VARCHAR"]
            checks = [c for c in self.checks if c.column not in shown]
            if hashed_ids:
                checks = [c for c in checks if c.column != "customer_id"]  # done by id_keys
            bad = " OR ".join(["_fails", *(f"{c} IS NULL" for c in shown)])
            compact = ", ".join(COMPACT)
            self.con.execute(
                f"{create} SELECT {compact}, _h, _bad "
                f"FROM (SELECT *, {bad} AS _bad FROM ("
                f"SELECT {columns}, ({any_fails(checks)}) IS TRUE "
                f"AS _fails FROM {rows})) WHERE age >= 0 OR _bad"
            )
            (failed,) = self.con.execute(f"SELECT bool_or(_bad) FROM {name}").fetchall()[0]
            if failed:
                self.validate()  # raises, counting over the whole log
                raise InputError(self.source, "rows fail the event-log checks")  # not reached
            # through Arrow: a third of fetchnumpy's time; combined in Arrow's memory pool,
            # which keeps its pages from one partition to the next (numpy's concatenation
            # of the chunks takes fresh ones each time, up to twice as long)
            hashes = query_arrow(self.con, f"SELECT _h FROM {name}")["_h"]
            hashes = hashes.combine_chunks().to_numpy()  # no copy; read-only
        # Sorting the hashes takes a core for a second or two: it runs beside whatever
        # the caller does with the partition next, and deduplicate() waits for it.
        sorter = ThreadPoolExecutor(max_workers=1)
        duplicates = sorter.submit(_equal_pair, hashes)
        sorter.shutdown(wait=False)
        exact = (
            f"SELECT {columns} FROM (SELECT DISTINCT {', '.join(CANONICAL_COLUMNS)} "
            f"FROM {rows} WHERE CAST(timestamp AS DATE) <= {date_literal(until)})"
        )
        return StagedPartition(name, len(hashes), duplicates, exact)

    def deduplicate(self, part: StagedPartition) -> int:
        """Waits for the partition's duplicate check; when two of its rows hashed equal,
        replaces its table by an exact de-duplicated copy (comparing every column, so a
        hash collision never merges two events). Returns the duplicate rows dropped."""
        if part.duplicates is None or not part.duplicates.result():
            return 0
        with read_errors(self.source), unordered(self.con):
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {part.name} AS {part.exact}")
            (kept,) = self.con.execute(f"SELECT count(*) FROM {part.name}").fetchall()[0]
        return part.rows - int(kept)

    def fingerprint_parts(self, part: StagedPartition) -> FingerprintParts:
        """The fingerprint parts of a (de-duplicated) partition's events."""
        row = self.con.execute(f"SELECT {FingerprintParts.sql('_h')} FROM {part.name}").fetchone()
        return FingerprintParts.of_row(row)


def _equal_pair(hashes: np.ndarray) -> bool:
    """Whether two of the hashes are equal."""
    hashes = np.sort(hashes)
    return bool(np.any(hashes[1:] == hashes[:-1]))


def stage_events(
    source: EventSource | EventTable,
    settings: Settings | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> StagedLog:
    """Read and type an event log without the validation scan (see :class:`StagedLog`).

    Text files are parsed once into a table; typed sources (Parquet, Arrow) are scanned
    in place. Missing required columns raise :class:`InputError` here; every other
    problem is found by :meth:`StagedLog.validate` or partition by partition.
    """
    if isinstance(source, EventTable):
        table = source.with_settings(settings)  # the settings given win, roles checked
        select = f"SELECT * FROM {table.name}"
        return StagedLog(
            table.con, table.name, table.source, table.settings, [], select, memo=table.memo
        )
    settings = settings or Settings()
    con = con or connect_for(settings)
    label = source_label(source)
    raw, files = open_source(con, source, label)
    types = {c.strip(): str(t) for c, t in zip(raw.columns, raw.types, strict=True)}
    present = [c.strip() for c in raw.columns]
    problems = missing_column_problems(present)
    if problems:
        raise_with_other_problems(con, raw, present, types, label, problems)

    raw_view, staged = next_name("_raw"), next_name("_staged")
    text_source = all(t == "VARCHAR" for t in types.values())
    # one rule for every format: text values are trimmed (CSV and Parquet agree)
    typed = typed_columns(types, trim=True)
    raw_cols = ", ".join(f"{ident(c)} AS r_{c}" for c in CANONICAL_COLUMNS if c in types)
    renamed = ", ".join(
        f"{ident(o)} AS {ident(c)}" for o, c in zip(raw.columns, present, strict=True)
    )
    selected = ", ".join(f"{expr} AS {name}" for name, expr in typed.items())
    select = f"SELECT {selected}, {raw_cols} FROM (SELECT {renamed} FROM {raw_view})"
    with read_errors(label):
        if isinstance(source, (str, Path)) and text_source:
            # Parse text files once; typed sources (Parquet, Arrow) are scanned in place.
            raw.to_table(raw_view)
        else:
            raw.create_view(raw_view)
        con.execute(f"CREATE TEMP VIEW {staged} AS {select}")
    checks = checks_for(types, trim=True)
    raw_id = raw.columns[present.index("customer_id")]
    return StagedLog(
        con, staged, label, settings, checks, select, typed["customer_id"], files, raw_id
    )


def raise_with_other_problems(
    con: duckdb.DuckDBPyConnection,
    raw: duckdb.DuckDBPyRelation,
    present: list[str],
    types: dict[str, str],
    label: str,
    missing: list[Problem],
) -> None:
    """Raise the missing columns' problems together with every problem of the columns
    that are there (a renamed column must not hide a bad timestamp): the row checks run
    with the missing columns as empty text, their own checks left out."""
    absent = [p.column for p in missing]
    filled = {**types, **dict.fromkeys(absent, "VARCHAR")}
    columns = [*present, *absent]
    renamed = ", ".join(
        [f"{ident(o)} AS {ident(c)}" for o, c in zip(raw.columns, present, strict=True)]
        + [f"CAST(NULL AS VARCHAR) AS {ident(c)}" for c in absent]
    )
    typed = typed_columns(filled, trim=True)
    raw_cols = ", ".join(f"{ident(c)} AS r_{c}" for c in CANONICAL_COLUMNS if c in columns)
    selected = ", ".join(f"{expr} AS {name}" for name, expr in typed.items())
    view, checked = next_name("_raw"), next_name("_checked")
    checks = [c for c in checks_for(filled, trim=True) if c.column not in absent]
    if not checks:  # no column of the contract to check
        raise InputError(label, missing)
    try:
        with read_errors(label):
            raw.create_view(view)
            con.execute(
                f"CREATE TEMP VIEW {checked} AS SELECT {selected}, {raw_cols} "
                f"FROM (SELECT {renamed} FROM {view})"
            )
            raise_on_problems(con, checked, label, checks)
    except InputError as found:
        raise InputError(label, [*missing, *found.problems]) from None
    raise InputError(label, missing)


def compact_columns(
    until: date, channels: tuple[str, ...], event_types: tuple[str, ...], key: str, role: str
) -> str:
    """The select list of the compact event copy the feature engine scans.

    ``customer_id`` (``key``), ``timestamp``, ``age`` (days from the event's day to
    ``until``), ``channel`` and ``event_type`` as ENUMs over the given sorted distinct
    values (so they order exactly like the text but sort and group as one byte; text
    beyond 256 values), ``amount`` (0 when missing) and ``role`` as an ENUM. ``key`` and
    ``role`` are the SQL giving the id (or its hash) and the role.
    """
    return (
        f"{key} AS customer_id, timestamp, "
        f"CAST({date_literal(until)} - CAST(timestamp AS DATE) AS INTEGER) AS age, "
        # TRY_CAST: a missing or empty value becomes NULL (and is reported), not an error
        f"TRY_CAST(channel AS {text_type(channels)}) AS channel, "
        f"TRY_CAST(event_type AS {text_type(event_types)}) AS event_type, "
        f"coalesce(amount, 0.0) AS amount, CAST({role} AS {enum_type(ROLES)}) AS role"
    )


def text_type(values: tuple[str, ...]) -> str:
    """The compact copy's type for a text column with these distinct values."""
    return enum_type(values) if 0 < len(values) <= MAX_ENUM else "VARCHAR"
