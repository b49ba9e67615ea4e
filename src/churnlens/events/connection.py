"""DuckDB connections as churnlens uses them: UTC, limits, Arrow out, errors as input errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pyarrow as pa

from churnlens.config import Settings
from churnlens.errors import InputError, Problem
from churnlens.events.sql import literal, path_literal


def connect(
    memory_limit: str | None = None,
    temp_dir: str | Path | None = None,
    threads: int | None = None,
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection set up for churnlens: UTC session time zone, optional limits."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if memory_limit:
        con.execute(f"SET memory_limit = {literal(memory_limit)}")
    if temp_dir:
        folder = Path(temp_dir)
        if not folder.parent.is_dir():  # a typo should not build a tree of folders
            what = f"{folder}'s parent folder {folder.parent} does not exist"
            fix = "give a folder in an existing one (churnlens creates the last level only)"
            raise InputError("--temp-dir", [Problem("-", what, fix=fix)])
        folder.mkdir(exist_ok=True)
        con.execute(f"SET temp_directory = {path_literal(Path(temp_dir).resolve())}")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def connect_for(
    settings: Settings, temp_dir: str | Path | None = None
) -> duckdb.DuckDBPyConnection:
    """A connection with the engine settings' memory cap, spill folder and threads."""
    engine = settings.engine
    return connect(engine.memory_limit, engine.temp_dir or temp_dir, engine.threads)


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


@contextmanager
def read_errors(source: str) -> Iterator[None]:
    """DuckDB errors while reading ``source`` as one :class:`InputError`."""
    try:
        yield
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        fix = "check that it is a complete, UTF-8 encoded CSV or Parquet file"
        if isinstance(exc, duckdb.OutOfMemoryException) or "Out of Memory" in first:
            fix = "raise --memory-limit (engine.memory_limit), or give --temp-dir room to spill"
        raise InputError(
            source, [Problem(column="-", message=f"cannot read the file ({first})", fix=fix)]
        ) from None
