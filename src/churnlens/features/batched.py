"""Features for logs larger than memory: per customer-hash partition, straight to a file.

:func:`write_features` is what ``churnlens features`` runs. The population statistics
(RFM cut points, median cycle) come first, from one light pass over the purchases of the
whole log; then the log is worked through one customer-hash partition at a time (see
:meth:`~churnlens.events.EventTable.hash_partition`), each partition's features built
against the whole population and appended to the output, so neither the log nor the
feature table is ever held in pandas whole. The file is written under a temporary name
and renamed when complete. The result equals :func:`~churnlens.features.build_features`
on the whole log (a test checks it).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churnlens.config import Settings
from churnlens.errors import InputError, Problem
from churnlens.events import EventSource, EventTable, load_events, parse_as_of
from churnlens.features.engine import build_features, buyer_features, feature_names
from churnlens.outputs import atomic_path, check_output_path

Progress = Callable[[int, int, int], None]  # (partitions done, total, customers so far)


@dataclass
class FeatureFile:
    """What :func:`write_features` wrote."""

    path: Path
    customers: int
    partitions: int
    seconds: float
    events: EventTable = field(repr=False)
    summary: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    events_after_as_of: int = 0  # ignored: they happened after the as-of day


def _schema(settings: Settings) -> pa.Schema:
    """The feature file's schema, with pandas metadata naming customer_id the index."""
    names = feature_names(settings)
    empty = pd.DataFrame({n: pd.Series(dtype="float64") for n in names})
    empty.index = pd.Index([], dtype=object, name="customer_id")
    schema = pa.Schema.from_pandas(empty, preserve_index=True)
    return schema.set(schema.get_field_index("customer_id"), pa.field("customer_id", pa.string()))


def write_features(
    events: EventSource | EventTable,
    as_of: str | date,
    out: str | Path,
    settings: Settings | None = None,
    *,
    partitions: int | None = None,
    progress: Progress | None = None,
) -> FeatureFile:
    """Build the features of every customer seen up to ``as_of`` into ``out``.

    ``out`` is ``.parquet``, ``.csv`` or ``.csv.gz``; rows are in customer order within
    each partition. ``partitions`` defaults to one per ``engine.partition_events``
    events. Returns the path, counts and per-column summary statistics (count, mean,
    min, max), accumulated partition by partition.
    """
    began = time.perf_counter()
    out = check_output_path(out)
    table = load_events(events, settings)
    settings = table.settings
    day = parse_as_of(as_of)
    n_events, later = table.con.execute(
        f"SELECT count(*) FILTER (WHERE day <= DATE '{day}'), "
        f"count(*) FILTER (WHERE day > DATE '{day}') FROM {table.name}"
    ).fetchone()  # type: ignore[misc]
    if not n_events:
        fix = "give a later --as-of"
        message = f"no event on or before the as-of day {day}: no customer to describe"
        raise InputError(table.source, [Problem("timestamp", message, fix=fix)])
    population, _ = buyer_features(table, day)
    count = partitions or max(1, math.ceil(n_events / settings.engine.partition_events))
    schema = _schema(settings)
    stats: list[pd.DataFrame] = []
    customers = 0
    with atomic_path(out) as tmp:
        writer = _Writer(tmp, out, schema)
        try:
            for i in range(count):
                part = table.hash_partition(i, count, day)
                frame = build_features(part, day, settings, population)
                table.con.execute(f"DROP TABLE {part.name}")
                if len(frame):
                    # customer_id stays the pandas index for readers of the Parquet file
                    writer.write(pa.Table.from_pandas(frame, schema=schema, preserve_index=True))
                    stats.append(_partial_stats(frame))
                customers += len(frame)
                if progress:
                    progress(i + 1, count, customers)
        finally:
            writer.close()
    summary = _combine_stats(stats)
    seconds = time.perf_counter() - began
    return FeatureFile(out, customers, count, seconds, table, summary, int(later))


class _Writer:
    """Appends Arrow tables to one Parquet or CSV file."""

    def __init__(self, tmp: Path, out: Path, schema: pa.Schema) -> None:
        name = out.name.lower()
        self.parquet = name.endswith(".parquet")
        self.sink = None
        if self.parquet:
            self.writer: object = pq.ParquetWriter(tmp, schema, compression="zstd")
        else:
            sink = pa.CompressedOutputStream(str(tmp), "gzip") if name.endswith(".gz") else None
            self.sink = sink
            self.writer = pacsv.CSVWriter(sink if sink is not None else str(tmp), schema)

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.writer.close()  # type: ignore[attr-defined]
        if not self.parquet and self.sink is not None:
            self.sink.close()


def _partial_stats(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "count": frame.count(),
            "sum": frame.sum(),
            "min": frame.min(),
            "max": frame.max(),
        }
    )


def _combine_stats(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return pd.DataFrame(columns=["count", "mean", "min", "max"])
    stacked = pd.concat(parts, keys=range(len(parts)))
    grouped = stacked.groupby(level=1, sort=False)
    out = pd.DataFrame(
        {
            "count": grouped["count"].sum(),
            "mean": grouped["sum"].sum() / grouped["count"].sum().where(lambda c: c > 0),
            "min": grouped["min"].min(),
            "max": grouped["max"].max(),
        }
    )
    return out
