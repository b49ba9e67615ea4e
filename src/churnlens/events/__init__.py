"""The event log: its contract, where it is read from, how it is checked and held.

- :mod:`~churnlens.events.contract`: the columns, event-type roles, the as-of day;
- :mod:`~churnlens.events.sources`: the input file types and opening a source;
- :mod:`~churnlens.events.checks`: typing and the row checks, every problem at once;
- :mod:`~churnlens.events.sql`: quoting of everything that reaches SQL from data;
- :mod:`~churnlens.events.fingerprint`: the order-independent data fingerprint;
- :mod:`~churnlens.events.table`: a validated log in DuckDB (:func:`load_events`);
- :mod:`~churnlens.events.staged`: a typed log copied out partition by partition;
- :mod:`~churnlens.events.connection`: DuckDB connections.
"""

from churnlens.events.connection import connect, connect_for, query_arrow, read_errors, unordered
from churnlens.events.contract import (
    CANONICAL_COLUMNS,
    OPTIONAL_COLUMNS,
    REQUIRED_COLUMNS,
    ROLES,
    EventSource,
    EventSummary,
    days_after,
    parse_as_of,
    role_sql,
)
from churnlens.events.fingerprint import FingerprintParts
from churnlens.events.sources import (
    FILE_TYPES,
    check_source,
    file_type,
    parquet_schemas_differ,
)
from churnlens.events.staged import LogOverview, StagedLog, StagedPartition, stage_events
from churnlens.events.table import EventTable, load_events, read_events

__all__ = [
    "CANONICAL_COLUMNS",
    "FILE_TYPES",
    "OPTIONAL_COLUMNS",
    "REQUIRED_COLUMNS",
    "ROLES",
    "EventSource",
    "EventSummary",
    "EventTable",
    "FingerprintParts",
    "LogOverview",
    "StagedLog",
    "StagedPartition",
    "check_source",
    "connect",
    "connect_for",
    "days_after",
    "file_type",
    "load_events",
    "parquet_schemas_differ",
    "parse_as_of",
    "query_arrow",
    "read_errors",
    "read_events",
    "role_sql",
    "stage_events",
    "unordered",
]
