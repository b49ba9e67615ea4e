"""The event-log contract: read, coerce and validate customer events.

An event log has one row per event with the required columns ``customer_id``,
``timestamp``, ``channel`` and ``event_type`` and the optional ``amount`` (default 0),
``direction`` (``inbound`` | ``outbound``) and ``duration_s``. Extra columns are ignored.
Timestamps with a time zone are converted to UTC; naive timestamps are taken as UTC.

Everything happens in DuckDB, so a large Parquet file is validated and loaded without
passing through pandas. Validation collects every problem before raising one
:class:`~churnlens.errors.InputError`; exact duplicate rows are dropped and counted.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnlens.config import Settings
from churnlens.errors import InputError, Problem

REQUIRED_COLUMNS: tuple[str, ...] = ("customer_id", "timestamp", "channel", "event_type")
OPTIONAL_COLUMNS: tuple[str, ...] = ("amount", "direction", "duration_s")
CANONICAL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
ROLES: tuple[str, ...] = ("purchase", "inbound", "outbound")
# what the feature engine, lifecycle and contact profile read
PARTITION_COLUMNS = "customer_id, timestamp, channel, event_type, amount, day, role"

EventSource = str | Path | pd.DataFrame | pa.Table


@dataclass(frozen=True)
class EventSummary:
    """What was loaded: sizes, date range and counts per event type, channel and role."""

    source: str
    rows_read: int
    events: int
    duplicates_dropped: int
    customers: int
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    by_event_type: dict[str, int] = field(default_factory=dict)
    by_channel: dict[str, int] = field(default_factory=dict)
    by_role: dict[str, int] = field(default_factory=dict)


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
    known_fingerprint: str | None = None  # from the validation scan, when it had one
    # the staged source the table is a view over, when it is one: hash partitions are
    # then filtered on the raw id, before any typing (see StagedLog.rows)
    staged: StagedLog | None = field(default=None, repr=False)

    def to_pandas(self) -> pd.DataFrame:
        """The canonical event frame (without ``day`` and ``role``), in time order."""
        cols = ", ".join(CANONICAL_COLUMNS)
        frame = self.con.execute(
            f"SELECT {cols} FROM {self.name} ORDER BY timestamp, customer_id, channel, event_type"
        ).df()
        frame["timestamp"] = frame["timestamp"].astype("datetime64[us]")
        return frame

    def fingerprint(self) -> str:
        """A short, order-independent fingerprint of the validated events.

        Equal for the same rows in any order (and any file format); it changes when a
        row is added, removed or altered. Based on DuckDB's row hash, so stable for one
        DuckDB version.
        """
        if self.known_fingerprint is not None:
            return self.known_fingerprint
        cols = ", ".join(CANONICAL_COLUMNS)
        n, xor, total = self.con.execute(
            f"SELECT count(*), bit_xor(h), sum(h % {_FINGERPRINT_PRIME}) "
            f"FROM (SELECT hash({cols}) AS h FROM {self.name})"
        ).fetchone()  # type: ignore[misc]
        return _fingerprint(int(n), int(xor), int(total))

    def hash_partition(self, index: int, count: int, until: date) -> EventTable:
        """The events up to ``until`` of the customers whose id hashes to partition
        ``index`` of ``count``, as one in-memory table that every query on the partition
        shares (replacing the previous partition of this log).

        Over a staged source, the rows are filtered on the raw id before they are typed,
        so each pass over the source types only the partition's own rows; each customer's
        events are in exactly one partition.
        """
        name = f"{self.name}_part"
        day = f"day <= DATE '{until.isoformat()}'"
        if self.staged is not None:
            kept = self.staged.rows(self.staged.partition_filter(index, count))
            rows = f"({_event_select(kept, self.settings)}) WHERE {day}"
        else:
            rows = f"{self.name} WHERE {day} AND {_partition_filter(index, count)}"
        with unordered(self.con):
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {PARTITION_COLUMNS} FROM {rows}"
            )
        return EventTable(self.con, name, self.source, self.settings, self.rows_read, 0)

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

        return EventSummary(
            source=self.source,
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


def query_arrow(con: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
    """A query's rows as an Arrow table (through a relation: a DB-API result's Arrow
    output makes an extra copy of the rows)."""
    con.complete()  # a relation runs only once the last execute() result is done with
    return con.sql(query).to_arrow_table()


@contextmanager
def unordered(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Let DuckDB drop insertion order for a while (copies, windows and aggregations need
    less memory); for work whose row order is never relied on."""
    (preserve,) = con.execute("SELECT current_setting('preserve_insertion_order')").fetchone()  # type: ignore[misc]
    con.execute("SET preserve_insertion_order = false")
    try:
        yield
    finally:
        con.execute(f"SET preserve_insertion_order = {bool(preserve)}")


_FINGERPRINT_PRIME = 1_000_000_007


def _fingerprint(n: int, xor: int, total: int) -> str:
    return hashlib.sha256(f"{n}:{xor}:{total}".encode()).hexdigest()[:16]


def _fingerprint_of_hashes(hashes: np.ndarray) -> str:
    """:meth:`EventTable.fingerprint` from the row hashes the validation scan computed."""
    if len(hashes) == 0:
        return _fingerprint(0, 0, 0)
    xor = int(np.bitwise_xor.reduce(hashes))
    total = int((hashes % np.uint64(_FINGERPRINT_PRIME)).sum(dtype=np.uint64))
    return _fingerprint(len(hashes), xor, total)


def connect(
    memory_limit: str | None = None,
    temp_dir: str | Path | None = None,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection set up for churnlens: UTC session time zone, optional limits."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    if temp_dir:
        Path(temp_dir).mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = '{Path(temp_dir).resolve()}'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def connect_for(
    settings: Settings, temp_dir: str | Path | None = None
) -> duckdb.DuckDBPyConnection:
    """A connection with the engine settings' memory cap, spill folder and threads."""
    engine = settings.engine
    return connect(engine.memory_limit, engine.temp_dir or temp_dir, engine.threads)


@contextmanager
def _duckdb_errors(source: str) -> Iterator[None]:
    try:
        yield
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            source,
            [
                Problem(
                    column="-",
                    message=f"cannot read the file ({first})",
                    fix="check that it is a complete, UTF-8 encoded CSV or Parquet file",
                )
            ],
        ) from None


def _source_label(source: EventSource) -> str:
    if isinstance(source, pd.DataFrame):
        return "<DataFrame>"
    if isinstance(source, pa.Table):
        return "<Arrow table>"
    return str(source)


def _arrow_from_pandas(frame: pd.DataFrame) -> pa.Table:
    try:
        return pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Mixed-type object columns: validate their text form instead.
        fixed = frame.copy()
        for col in fixed.columns[fixed.dtypes.map(pd.api.types.is_object_dtype)]:
            fixed[col] = fixed[col].map(_text_or_none)
        return pa.Table.from_pandas(fixed, preserve_index=False)


def _text_or_none(value: object) -> str | None:
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return None
    return str(value)


def _raw_relation(
    con: duckdb.DuckDBPyConnection, source: EventSource, label: str
) -> tuple[duckdb.DuckDBPyRelation, tuple[str, ...]]:
    """The source as read, and its Parquet files (none for other sources)."""
    if isinstance(source, pd.DataFrame):
        source = _arrow_from_pandas(source)
    if isinstance(source, pa.Table):
        return con.from_arrow(source), ()
    path = Path(source)
    if not path.exists():
        raise InputError(
            label, [Problem(column="-", message="file not found", fix="check the path")]
        )
    name = path.name.lower()
    with _duckdb_errors(label):
        if path.is_dir():
            files = tuple(str(f) for f in sorted(path.rglob("*.parquet")))
            if not files:
                raise InputError(label, "directory holds no .parquet files")
            by_name = parquet_schemas_differ(files, label)
            return con.read_parquet(
                list(files), hive_partitioning=False, union_by_name=by_name
            ), files
        if name.endswith(".parquet") or name.endswith(".pq"):
            return con.read_parquet(str(path)), (str(path),)
        if re.search(r"\.(csv|txt)(\.gz|\.zst)?$", name):
            if path.stat().st_size == 0:
                raise InputError(
                    label,
                    [
                        Problem(
                            column="-",
                            message="the file is empty",
                            fix="write a header line and at least one event",
                        )
                    ],
                )
            return con.read_csv(str(path), all_varchar=True, header=True), ()
    raise InputError(
        label,
        [
            Problem(
                column="-",
                message=f"unknown file type '{path.suffix}'",
                fix="use .csv, .csv.gz or .parquet (or a directory of .parquet files)",
            )
        ],
    )


def parquet_schemas_differ(files: tuple[str, ...], label: str) -> bool:
    """Whether the Parquet files of a folder differ in their columns (then they are read by
    column name, a column a file lacks being empty in its rows); raises
    :class:`InputError` naming the files when a required column is missing from some of
    them (their events could not be told apart from broken rows). Reads footers only."""
    if len(files) < 2:
        return False
    try:
        schemas = [pq.read_schema(f) for f in files]
    except (pa.ArrowException, OSError) as exc:
        raise InputError(label, f"cannot read a Parquet file's schema ({exc})") from None
    names = [{n.strip() for n in schema.names} for schema in schemas]
    problems = []
    for col in REQUIRED_COLUMNS:
        lacking = [f for f, have in zip(files, names, strict=True) if col not in have]
        if lacking and len(lacking) < len(files):
            shown = tuple(Path(f).name for f in lacking[:3])
            problems.append(
                Problem(
                    column=col,
                    message=f"required column is missing from {len(lacking)} of the folder's "
                    f"{len(files)} Parquet files",
                    examples=shown,
                    fix="write every file of the folder with the same columns",
                )
            )
    if problems:
        raise InputError(label, problems)
    first = schemas[0]
    return any(not schema.equals(first) for schema in schemas[1:])


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _missing_column_problems(present: list[str]) -> list[Problem]:
    problems = []
    by_norm = {_normalise(c): c for c in present}
    for col in REQUIRED_COLUMNS:
        if col in present:
            continue
        close = difflib.get_close_matches(_normalise(col), list(by_norm), n=1, cutoff=0.75)
        hint = f"; did you mean '{by_norm[close[0]]}'?" if close else ""
        fix = (
            f"rename '{by_norm[close[0]]}' to '{col}'"
            if close
            else f"add a '{col}' column (required: {', '.join(REQUIRED_COLUMNS)})"
        )
        problems.append(Problem(column=col, message=f"required column is missing{hint}", fix=fix))
    return problems


_NUMERIC = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|"
    r"UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL.*)$"
)
_TIME = re.compile(r"^(DATE|TIMESTAMP.*)$")


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _text(col: str, trim: bool = True) -> str:
    return f"NULLIF({_plain_text(col, trim)}, '')"


def _plain_text(col: str, trim: bool) -> str:
    """The column as (trimmed) text, empty text left empty: for columns whose checks
    reject empty values themselves. Without NULLIF's CASE, DuckDB keeps Parquet's
    dictionary-encoded vectors and casts each distinct value once."""
    value = f"CAST({_q(col)} AS VARCHAR)"
    return f"trim({value})" if trim else value


def _number(col: str, dtype: str) -> str:
    if _NUMERIC.match(dtype):
        return f"CAST({_q(col)} AS DOUBLE)"
    return f"TRY_CAST({_text(col)} AS DOUBLE)"


def _timestamp(col: str, dtype: str) -> str:
    if _TIME.match(dtype):
        return f"CAST({_q(col)} AS TIMESTAMP)"
    if dtype == "VARCHAR":
        # Session time zone is UTC: offsets are converted, naive values taken as UTC.
        return f"CAST(TRY_CAST({_text(col)} AS TIMESTAMPTZ) AS TIMESTAMP)"
    return "CAST(NULL AS TIMESTAMP)"


@dataclass(frozen=True)
class _Check:
    column: str
    condition: str
    message: str
    fix: str


def _typed_columns(types: dict[str, str], trim: bool) -> dict[str, str]:
    """SQL expressions giving each canonical column its contract type."""
    typed = {
        # required text: empty values stay empty, and are rejected by the checks
        "customer_id": _plain_text("customer_id", trim),
        "timestamp": _timestamp("timestamp", types["timestamp"]),
        "channel": _plain_text("channel", trim),
        "event_type": _plain_text("event_type", trim),
        "amount": "CAST(NULL AS DOUBLE)",
        "direction": "CAST(NULL AS VARCHAR)",
        "duration_s": "CAST(NULL AS DOUBLE)",
    }
    if "amount" in types:
        typed["amount"] = _number("amount", types["amount"])
    if "duration_s" in types:
        typed["duration_s"] = _number("duration_s", types["duration_s"])
    if "direction" in types:
        typed["direction"] = f"NULLIF(lower({_plain_text('direction', trim=True)}), '')"
    return typed


def _checks(types: dict[str, str], trim: bool) -> list[_Check]:
    ts_type = types["timestamp"]
    checks = [
        _Check(
            "customer_id",
            "customer_id IS NULL OR customer_id = ''",
            "missing or empty customer id",
            "every event needs the id of its customer; drop or repair these rows",
        ),
        _Check(
            "timestamp",
            f"{_text('r_timestamp', trim)} IS NULL"
            if ts_type == "VARCHAR"
            else "r_timestamp IS NULL",
            "missing timestamp",
            "every event needs a date or date-time",
        ),
        _Check(
            "channel",
            "channel IS NULL OR channel = ''",
            "missing or empty channel",
            "give each event the channel it came through (e.g. web, phone)",
        ),
        _Check(
            "event_type",
            "event_type IS NULL OR event_type = ''",
            "missing or empty event type",
            "give each event a type (e.g. purchase, visit, marketing)",
        ),
    ]
    # Checks a source's types make impossible are left out (each costs a little on every
    # row): a date-time column always casts, a numeric one is never text or, unless
    # floating point, NaN.
    if ts_type == "VARCHAR":
        checks.append(
            _Check(
                "timestamp",
                "r_timestamp IS NOT NULL AND timestamp IS NULL",
                "timestamp cannot be parsed",
                "use ISO 8601: YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or with an offset (+02:00 or Z)",
            )
        )
    elif not _TIME.match(ts_type):
        checks.append(
            _Check(
                "timestamp",
                "r_timestamp IS NOT NULL",
                f"timestamp has type {ts_type}",
                "store timestamps as dates, date-times or ISO 8601 text, not numbers",
            )
        )
    for col in ("amount", "duration_s"):
        if col not in types:
            continue
        numeric = bool(_NUMERIC.match(types[col]))
        if not numeric:
            checks.append(
                _Check(
                    col,
                    f"r_{col} IS NOT NULL AND {col} IS NULL",
                    "value is not a number",
                    "use plain decimal numbers with a dot (e.g. 12.50), no currency signs",
                )
            )
        if not numeric or types[col] in ("FLOAT", "DOUBLE"):
            checks.append(
                _Check(
                    col,
                    f"isnan({col}) OR isinf({col})",
                    "value is not finite (NaN or infinite)",
                    "replace NaN/inf with a real value or leave the cell empty",
                )
            )
    if "amount" in types:
        checks.append(
            _Check(
                "amount",
                "NOT isinf(amount) AND NOT isnan(amount) AND abs(amount) >= 1e18",
                "amount is implausibly large (at least 1e18 in size)",
                "check the column's unit and format; amounts are money per event",
            )
        )
    if "duration_s" in types:
        checks.append(
            _Check(
                "duration_s", "duration_s < 0", "negative duration", "durations are seconds >= 0"
            )
        )
    if "direction" in types:
        checks.append(
            _Check(
                "direction",
                "direction NOT IN ('inbound', 'outbound')",
                "unknown direction",
                "use 'inbound', 'outbound' or leave it empty",
            )
        )
    return checks


_counter = iter(range(1, 1 << 62))


def load_events(
    source: EventSource | EventTable,
    settings: Settings | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> EventTable:
    """Validate an event log and load it into DuckDB as an :class:`EventTable`.

    Parameters
    ----------
    source
        A CSV (``.csv``, ``.csv.gz``) or Parquet path, a directory of Parquet files, a
        pandas DataFrame or an Arrow table. An :class:`EventTable` is returned as is.
    settings
        Event-type roles come from ``settings.events``; defaults when ``None``.
    con
        DuckDB connection to load into; a new one (see :func:`connect`) when ``None``.

    Raises
    ------
    InputError
        Listing every problem found, with row counts and example rows.
    """
    if isinstance(source, EventTable):
        return source
    staged = stage_events(source, settings, con)
    with _duckdb_errors(staged.source):
        rows_read, maybe_duplicates, fingerprint = _raise_on_problems(
            staged.con, staged.name, staged.source, staged.checks
        )
        table = f"events_{next(_counter)}"
        dropped = _create_event_relation(
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
        # a de-duplicated copy is a table: it is filtered as it is
        staged=None if maybe_duplicates else staged,
    )


@dataclass
class StagedLog:
    """An event log read and typed but not yet validated, for batch jobs that validate it
    partition by partition, in the same scan that copies each partition out.

    ``name`` is a DuckDB view with the canonical columns (typed as the contract says)
    and, for checking, the raw ones; ``checks`` are the contract's row checks. A staged
    :class:`EventTable` (already valid, without duplicates) has none.
    """

    con: duckdb.DuckDBPyConnection
    name: str
    source: str
    settings: Settings
    checks: list[_Check]
    select: str  # the view's SELECT, whose WHERE sees the raw columns (see rows)
    typed_id: str = "customer_id"  # the SQL typing a raw id
    # a Parquet source's files and id column (as named in the files): id_keys reads the
    # ids' dictionaries instead of every value
    parquet: tuple[str, ...] = ()
    raw_id: str = "customer_id"

    def rows(self, where: str) -> str:
        """The view's rows whose *raw* columns satisfy ``where``, as a subquery.

        DuckDB does not push a filter on a typed column through the typing projection:
        filtering the raw columns first means only the rows kept are typed.
        """
        return f"({self.select} WHERE {where})"

    def partition_filter(self, index: int, count: int) -> str:
        """The raw-column filter keeping partition ``index`` of ``count`` (it hashes the
        typed id, computed from the raw column): each customer lands in exactly one."""
        return _partition_filter(index, count, self.typed_id)

    @property
    def validated(self) -> bool:
        return not self.checks

    def validate(self) -> None:
        """Check every row; raises :class:`InputError` listing every problem found."""
        if not self.validated:
            with _duckdb_errors(self.source):
                _raise_on_problems(self.con, self.name, self.source, self.checks)

    def overview(self) -> LogOverview:
        """The row count, and the distinct channels and event types: one light scan (the
        partitions count the rows up to the as-of day, which needs every timestamp)."""
        with _duckdb_errors(self.source):
            rows, channels, event_types = self.con.execute(
                f"SELECT count(*), "
                f"list(DISTINCT channel ORDER BY channel) FILTER (WHERE channel <> ''), "
                f"list(DISTINCT event_type ORDER BY event_type) "
                f"FILTER (WHERE event_type <> '') FROM {self.name}"
            ).fetchall()[0]
        return LogOverview(int(rows), tuple(channels or ()), tuple(event_types or ()))

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
        with _duckdb_errors(self.source), unordered(self.con):
            values = _parquet_ids(self.parquet, self.raw_id) if self.parquet else None
            if values is not None:
                self.con.register(f"{name}_values", pa.table({"customer_id": values}))
                ids = f"SELECT {self.typed_id} AS customer_id FROM {name}_values"
            self.con.execute(
                f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT {_ID_KEY} AS k, customer_id "
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
        self, index: int, count: int, until: date, overview: LogOverview, hashed_ids: bool
    ) -> StagedPartition:
        """The partition's events up to ``until`` as a compact temp table (see
        :func:`_compact_columns`), checked as it is copied.

        Rows failing a check are copied too (whatever their day), so that a failing
        partition raises the same :class:`InputError` as :func:`load_events` (from a
        whole-log check). Exact duplicate rows are found from 64-bit row hashes computed
        in the copy and sorted in a background thread: call :meth:`deduplicate` before
        trusting the table. ``hashed_ids`` puts ``hash(customer_id)`` in the
        ``customer_id`` column (integer keys sort and group faster than text), which
        the table from :meth:`id_keys` maps back to the ids it has checked.
        """
        name = f"{self.name}_part"
        role = "role" if self.validated else role_sql(self.settings, as_enum=True)
        key = _ID_KEY if hashed_ids else "customer_id"
        columns = _compact_columns(until, overview.channels, overview.event_types, key, role)
        rows = self.rows(self.partition_filter(index, count))
        create = f"CREATE OR REPLACE TEMP TABLE {name} AS"
        with _duckdb_errors(self.source), unordered(self.con):
            if self.validated:
                kept = f"SELECT * FROM (SELECT {columns} FROM {rows}) WHERE age >= 0"
                self.con.execute(f"{create} {kept}")
                (n,) = self.con.execute(f"SELECT count(*) FROM {name}").fetchall()[0]
                return StagedPartition(name, int(n))
            # The copy shows some problems itself, more cheaply than the checks: an ENUM
            # channel or event type is NULL exactly when the text is missing or empty (the
            # ENUM holds every other value of the log).
            coded = {"channel": overview.channels, "event_type": overview.event_types}
            shown = [c for c, values in coded.items() if _text_type(values) != "VARCHAR"]
            checks = [c for c in self.checks if c.column not in shown]
            if hashed_ids:
                checks = [c for c in checks if c.column != "customer_id"]  # done by id_keys
            bad = " OR ".join(["_fails", *(f"{c} IS NULL" for c in shown)])
            # _h hashes the compact values (cheaper than the text) with the two columns the
            # copy leaves out: equal rows have equal hashes, and equal hashes only trigger
            # the exact comparison of deduplicate
            compact = ", ".join(_COMPACT)
            self.con.execute(
                f"{create} SELECT {compact}, hash({compact}, direction, duration_s) AS _h, _bad "
                f"FROM (SELECT *, {bad} AS _bad FROM ("
                f"SELECT {columns}, direction, duration_s, ({_any_fails(checks)}) IS TRUE "
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
            f"FROM {rows} WHERE {_day_on_or_before(until)})"
        )
        return StagedPartition(name, len(hashes), duplicates, exact)

    def deduplicate(self, part: StagedPartition) -> int:
        """Waits for the partition's duplicate check; when two of its rows hashed equal,
        replaces its table by an exact de-duplicated copy (comparing every column, so a
        hash collision never merges two events). Returns the duplicate rows dropped."""
        if part.duplicates is None or not part.duplicates.result():
            return 0
        with _duckdb_errors(self.source), unordered(self.con):
            self.con.execute(f"CREATE OR REPLACE TEMP TABLE {part.name} AS {part.exact}")
            (kept,) = self.con.execute(f"SELECT count(*) FROM {part.name}").fetchall()[0]
        return part.rows - int(kept)


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
        select = f"SELECT * FROM {source.name}"
        return StagedLog(source.con, source.name, source.source, source.settings, [], select)
    settings = settings or Settings()
    con = con or connect_for(settings)
    label = _source_label(source)
    raw, files = _raw_relation(con, source, label)
    types = {c.strip(): str(t) for c, t in zip(raw.columns, raw.types, strict=True)}
    present = [c.strip() for c in raw.columns]
    problems = _missing_column_problems(present)
    if problems:
        raise InputError(label, problems)

    n = next(_counter)
    raw_view, staged = f"_raw_{n}", f"_staged_{n}"
    text_source = all(t == "VARCHAR" for t in types.values())
    typed = _typed_columns(types, trim=text_source)
    raw_cols = ", ".join(f"{_q(c)} AS r_{c}" for c in CANONICAL_COLUMNS if c in types)
    renamed = ", ".join(f"{_q(o)} AS {_q(c)}" for o, c in zip(raw.columns, present, strict=True))
    selected = ", ".join(f"{expr} AS {name}" for name, expr in typed.items())
    select = f"SELECT {selected}, {raw_cols} FROM (SELECT {renamed} FROM {raw_view})"
    with _duckdb_errors(label):
        if isinstance(source, (str, Path)) and text_source:
            # Parse text files once; typed sources (Parquet, Arrow) are scanned in place.
            raw.to_table(raw_view)
        else:
            raw.create_view(raw_view)
        con.execute(f"CREATE TEMP VIEW {staged} AS {select}")
    checks = _checks(types, trim=text_source)
    raw_id = raw.columns[present.index("customer_id")]
    return StagedLog(
        con, staged, label, settings, checks, select, typed["customer_id"], files, raw_id
    )


def _parquet_ids(files: tuple[str, ...], column: str) -> pa.ChunkedArray | None:
    """The values of a Parquet column's row-group dictionaries (a null among them if the
    column has one), repeated across row groups: a DISTINCT over them is a fraction of
    the cost of one over every value. A dictionary may hold a value no row uses, which
    an id map can afford. ``None`` when the files do not allow it (say, with different
    column types): DuckDB then reads every value."""

    def dictionaries(file: str) -> tuple[list[pa.Array], int]:
        reader = pq.ParquetFile(file, read_dictionary=[column])
        values, nulls = [], 0
        for group in range(reader.num_row_groups):
            for chunk in reader.read_row_group(group, columns=[column]).column(0).chunks:
                nulls += chunk.null_count
                values.append(chunk.dictionary if pa.types.is_dictionary(chunk.type) else chunk)
        return values, nulls

    try:
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            parts = list(pool.map(dictionaries, files))
        values = pa.chunked_array([v for vs, _ in parts for v in vs])
    except (pa.ArrowException, OSError, KeyError):
        return None
    if any(nulls for _, nulls in parts):
        values = pa.chunked_array([*values.chunks, pa.nulls(1, values.type)])
    return values


_MAX_ENUM = 256  # more distinct values than this stay text
_ID_KEY = "hash(customer_id)"  # the integer key StagedLog.id_keys and .partition share


def _enum(values: tuple[str, ...] | list[str]) -> str:
    return "ENUM(" + ", ".join(_lit(v) for v in values) + ")"


# the columns of the compact copy (see _compact_columns)
_COMPACT = ("customer_id", "timestamp", "age", "channel", "event_type", "amount", "role")


def _compact_columns(
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
        f"CAST(DATE '{until.isoformat()}' - CAST(timestamp AS DATE) AS INTEGER) AS age, "
        # TRY_CAST: a missing or empty value becomes NULL (and is reported), not an error
        f"TRY_CAST(channel AS {_text_type(channels)}) AS channel, "
        f"TRY_CAST(event_type AS {_text_type(event_types)}) AS event_type, "
        f"coalesce(amount, 0.0) AS amount, CAST({role} AS {_enum(ROLES)}) AS role"
    )


def _text_type(values: tuple[str, ...]) -> str:
    """The compact copy's type for a text column with these distinct values."""
    return _enum(values) if 0 < len(values) <= _MAX_ENUM else "VARCHAR"


def role_sql(settings: Settings, as_enum: bool = False) -> str:
    """The SQL giving an event's role from its ``event_type`` and ``direction``; as the
    role ENUM (cheaper than casting the text row by row) when ``as_enum``."""
    purchase = ", ".join(_lit(t) for t in settings.events.purchase_types)
    outbound = ", ".join(_lit(t) for t in settings.events.outbound_types) or "NULL"

    def role(name: str) -> str:
        return f"CAST({_lit(name)} AS {_enum(ROLES)})" if as_enum else _lit(name)

    return (
        f"CASE WHEN event_type IN ({purchase}) THEN {role('purchase')} "
        f"WHEN direction = 'outbound' OR (direction IS NULL AND event_type IN ({outbound})) "
        f"THEN {role('outbound')} ELSE {role('inbound')} END"
    )


def _partition_filter(index: int, count: int, key: str = "customer_id") -> str:
    return f"hash({key}) % {int(count)} = {int(index)}" if count > 1 else "true"


def _day_on_or_before(until: date) -> str:
    return f"CAST(timestamp AS DATE) <= DATE '{until.isoformat()}'"


def _any_fails(checks: list[_Check]) -> str:
    """Whether a row fails any of the checks (NULL or false when it fails none)."""
    return " OR ".join(f"({c.condition})" for c in checks) or "false"


def _mask(checks: list[_Check]) -> str:
    """A row's failed checks as a bit mask (one bit per check)."""
    assert len(checks) <= 16  # one bit each in a USMALLINT
    return " + ".join(
        f"CASE WHEN {c.condition} THEN {1 << i} ELSE 0 END" for i, c in enumerate(checks)
    )


# the event view's columns (amount defaults to 0), so that the validation scan's row
# hashes are the fingerprint's
_HASHED = ", ".join("coalesce(amount, 0.0)" if c == "amount" else c for c in CANONICAL_COLUMNS)


def _raise_on_problems(
    con: duckdb.DuckDBPyConnection, staged: str, label: str, checks: list[_Check]
) -> tuple[int, bool, str | None]:
    """One scan for every check and for duplicates; raises listing every problem.

    The scan yields, per row, a bit mask of the checks it fails and a 64-bit hash of its
    canonical columns. Returns the number of rows, whether two rows share a hash (a sort
    of the hashes finds that far faster than a hash aggregation over them) and, without
    duplicates, the log's fingerprint (from the same hashes).
    """
    scanned = con.execute(
        f"SELECT hash({_HASHED}) AS h, CAST({_mask(checks)} AS USMALLINT) AS bad FROM {staged}"
    ).fetchnumpy()
    hashes, bad = scanned["h"], scanned["bad"]
    del scanned
    failing = bad[bad != 0]
    counts = [len(hashes)] + [int(np.count_nonzero(failing & (1 << i))) for i in range(len(checks))]
    del bad, failing
    if counts[0] == 0:
        raise InputError(
            label,
            [
                Problem(
                    column="-",
                    message="no events: the log has no rows",
                    fix="check that the right file was given",
                )
            ],
        )
    problems = []
    for check, count in zip(checks, counts[1:], strict=True):
        if not count:
            continue
        examples = con.execute(
            f"SELECT _row, r_{check.column} FROM (SELECT row_number() OVER () AS _row, * "
            f"FROM {staged}) WHERE {check.condition} ORDER BY _row LIMIT 3"
        ).fetchall()
        shown = tuple(f"row {row}: {_show(value)}" for row, value in examples)
        problems.append(
            Problem(
                column=check.column,
                message=check.message,
                rows=int(count),
                examples=shown,
                fix=check.fix,
            )
        )
    if problems:
        raise InputError(label, problems)
    hashes.sort()
    maybe_duplicates = bool(np.any(hashes[1:] == hashes[:-1]))
    # with duplicates, the fingerprint is of the de-duplicated rows: computed later
    fingerprint = None if maybe_duplicates else _fingerprint_of_hashes(hashes)
    return int(counts[0]), maybe_duplicates, fingerprint


def _show(value: object) -> str:
    if value is None:
        return "(empty)"
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _create_event_relation(
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
    con.execute(f"CREATE TEMP {kind} {name} AS {_event_select(source, settings)}")
    return int(dropped)


def _event_select(source: str, settings: Settings) -> str:
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


def parse_as_of(value: str | date | datetime) -> date:
    """An as-of date from ``YYYY-MM-DD`` text, a date or a datetime."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise InputError(
            "--as-of",
            [
                Problem(
                    column="as_of",
                    message=f"not a date: {value!r}",
                    fix="give the date as YYYY-MM-DD",
                )
            ],
        ) from None
