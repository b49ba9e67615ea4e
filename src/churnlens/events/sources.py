"""Where events come from: the input file types, and a source opened as a DuckDB relation.

:data:`FILE_TYPES` is the one table of what churnlens reads (the single-machine reader
and the Spark reader both dispatch on it): CSV (``.csv``, ``.txt``, plain, gzip or
zstd), Parquet (``.parquet``, ``.pq``) and a folder of Parquet files (read by column name
when its files' columns differ). A pandas DataFrame or an Arrow table is read as is.
CSV is read as text, typed by the contract's rules in :mod:`churnlens.events.checks`.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnlens.errors import InputError, Problem
from churnlens.events.connection import read_errors
from churnlens.events.contract import REQUIRED_COLUMNS, EventSource


@dataclass(frozen=True)
class FileType:
    """An input file type: the end of its name (a regular expression on the lower-cased
    name), its format and its compression."""

    pattern: str
    format: str  # "csv" | "parquet"
    compression: str | None = None


FILE_TYPES: tuple[FileType, ...] = (
    FileType(r"\.(parquet|pq)$", "parquet"),
    FileType(r"\.(csv|txt)$", "csv"),
    FileType(r"\.(csv|txt)\.gz$", "csv", "gzip"),
    FileType(r"\.(csv|txt)\.zst$", "csv", "zstd"),
)
SUPPORTED = ".csv, .csv.gz, .csv.zst, .txt or .parquet (or a folder of .parquet files)"


def file_type(path: Path) -> FileType | None:
    """The type of a file by its name; ``None`` when churnlens does not read it."""
    name = path.name.lower()
    return next((t for t in FILE_TYPES if re.search(t.pattern, name)), None)


def source_label(source: object) -> str:
    """How errors name a source."""
    if isinstance(source, pd.DataFrame):
        return "<DataFrame>"
    if isinstance(source, pa.Table):
        return "<Arrow table>"
    return str(source)


def _problem(label: str, message: str, fix: str) -> InputError:
    return InputError(label, [Problem(column="-", message=message, fix=fix)])


def check_source(source: object) -> None:
    """Fail early, before any work, when an event-log path is missing or of an unknown
    type (anything but a path, such as a DataFrame, is checked when it is read)."""
    if isinstance(source, (str, Path)):
        check_path(Path(source), str(source))


def check_path(path: Path, label: str) -> FileType | None:
    """The file type of an input path (``None`` for a folder of Parquet files); raises
    :class:`InputError` for a missing path, an empty CSV or an unknown type."""
    if not path.exists():
        raise _problem(label, "file not found", "check the path")
    if path.is_dir():
        return None
    kind = file_type(path)
    if kind is None:
        raise _problem(label, f"unknown file type '{path.suffix}'", f"use {SUPPORTED}")
    if kind.format == "csv" and path.stat().st_size == 0:
        raise _problem(label, "the file is empty", "write a header line and at least one event")
    if kind.format == "csv":
        check_width(path, kind, label)
    return kind


MAX_COLUMNS = 1_000  # an event log has 7 columns; extra ones are ignored, up to this many
HEADER_BYTES = 1 << 20


def check_width(path: Path, kind: FileType, label: str) -> None:
    """Refuse a CSV whose header line holds more than :data:`MAX_COLUMNS` columns (by its
    most frequent delimiter) or is not found in the first MB, before DuckDB sniffs it
    (a 200,000-column header takes it minutes)."""
    with pa.input_stream(str(path), compression=kind.compression) as stream:
        head = stream.read(HEADER_BYTES)
    line, newline, _ = head.partition(b"\n")
    columns = 1 + max(line.count(d) for d in (b",", b";", b"\t", b"|"))
    if columns > MAX_COLUMNS or (not newline and len(head) == HEADER_BYTES):
        seen = f"has {columns:,} columns" if newline else "is longer than 1 MB"
        raise _problem(
            label,
            f"the header line {seen}; an event log has 7 columns (at most "
            f"{MAX_COLUMNS:,} are read)",
            "keep the contract's columns (customer_id, timestamp, channel, event_type, "
            "amount, direction, duration_s) and drop the others",
        )


def parquet_files(folder: Path, label: str) -> tuple[str, ...]:
    """The Parquet files of a folder (recursively, in name order)."""
    files = tuple(str(f) for f in sorted(folder.rglob("*.parquet")))
    if not files:
        raise _problem(
            label, "the folder holds no .parquet files", "give a folder of .parquet files"
        )
    return files


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
            problems.append(
                Problem(
                    column=col,
                    message=f"required column is missing from {len(lacking)} of the folder's "
                    f"{len(files)} Parquet files",
                    examples=tuple(Path(f).name for f in lacking[:3]),
                    fix="write every file of the folder with the same columns",
                )
            )
    if problems:
        raise InputError(label, problems)
    first = schemas[0]
    return any(not schema.equals(first) for schema in schemas[1:])


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


def open_source(
    con: duckdb.DuckDBPyConnection, source: EventSource, label: str
) -> tuple[duckdb.DuckDBPyRelation, tuple[str, ...]]:
    """The source as read, and its Parquet files (none for other sources)."""
    if isinstance(source, pd.DataFrame):
        source = _arrow_from_pandas(source)
    if isinstance(source, pa.Table):
        return con.from_arrow(source), ()
    path = Path(source)
    kind = check_path(path, label)
    with read_errors(label):
        if kind is None:
            files = parquet_files(path, label)
            by_name = parquet_schemas_differ(files, label)
            relation = con.read_parquet(list(files), hive_partitioning=False, union_by_name=by_name)
            return relation, files
        if kind.format == "parquet":
            return con.read_parquet(str(path)), (str(path),)
        return con.read_csv(str(path), all_varchar=True, header=True), ()


def parquet_ids(files: tuple[str, ...], column: str) -> pa.ChunkedArray | None:
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
