"""Features for logs larger than memory: per customer-hash partition, straight to a file.

:func:`write_features` is what ``churnlens features`` runs. It reads the log once per
customer-hash partition and never holds it in pandas:

1. one light scan counts the rows and lists the channels and event types, and the id
   map (id hash -> id, every id checked once) is read, for a Parquet source from the
   row groups' dictionaries;
2. for each partition, the events up to the as-of day are copied out of the source once
   (filtered on the raw id, typed only once kept), into a compact table keyed by the
   64-bit hash of the customer id, and checked in the same scan (the event-log
   contract's row checks; exact duplicates from row hashes, sorted in a background
   thread while DuckDB aggregates); the families' raw aggregates are computed from it
   in DuckDB and kept there;
3. the population statistics (RFM cut points, median cycle) come from the buyers'
   aggregates of all partitions;
4. a pipeline then fetches each partition's aggregates (this thread), finishes them
   against that population (a worker, pandas) and appends them to the output (another
   worker, pyarrow), which is written under a temporary name and renamed when complete.

A log that breaks the contract raises the same :class:`~churnlens.errors.InputError` as
:func:`~churnlens.events.load_events`, counted over the whole log, and leaves no output.
The result equals :func:`~churnlens.features.build_features` on the whole log (a test
checks it).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churnlens.config import Settings
from churnlens.errors import InputError, Problem
from churnlens.events import EventSource, EventTable, parse_as_of, stage_events
from churnlens.features.engine import (
    aggregate_staged,
    aggregated_population,
    feature_names,
    finish_features,
    partition_aggregates,
)
from churnlens.features.population import PopulationStats
from churnlens.outputs import atomic_path, check_output_path

Progress = Callable[[int, int, int], None]  # (partitions done, total, customers so far)


@dataclass
class FeatureFile:
    """What :func:`write_features` wrote."""

    path: Path
    customers: int
    partitions: int
    seconds: float
    source: str
    summary: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)
    events: int = 0  # on or before the as-of day, duplicates included
    events_after_as_of: int = 0  # ignored: they happened after the as-of day
    duplicates_dropped: int = 0  # exact duplicate rows among the events up to the as-of day


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
    each partition. ``partitions`` defaults to one per ``engine.feature_partition_events``
    events. Returns the path, counts and per-column summary statistics (count, mean,
    min, max), accumulated partition by partition.
    """
    began = time.perf_counter()
    out = check_output_path(out, inputs=[events])
    log = stage_events(events, settings)
    settings = log.settings
    day = parse_as_of(as_of)
    overview = log.overview()
    if not overview.rows:
        log.validate()  # says the log is empty
    per_partition = settings.engine.feature_partition_events
    count = partitions or max(1, math.ceil(overview.rows / per_partition))
    ids = log.id_keys()  # None: two ids share a hash, the partitions keep the ids
    tables: list[str] = []
    up_to = dropped = customers = 0  # events up to the as-of day, duplicates, customers
    try:
        for i in range(count):
            table = f"{log.name}_raw_{i}"
            tables.append(table)
            rows, duplicates = aggregate_staged(log, i, count, day, overview, ids, table)
            up_to += rows
            dropped += duplicates
            (n,) = log.con.execute(f"SELECT count(*) FROM {table}").fetchall()[0]
            customers += int(n)
            if progress:
                progress(i + 1, count, customers)
        if not up_to:
            fix = "give a later --as-of"
            message = f"no event on or before the as-of day {day}: no customer to describe"
            raise InputError(log.source, [Problem("timestamp", message, fix=fix)])
        population = aggregated_population(log.con, tables, settings)
        schema = _schema(settings)
        stats: list[pd.DataFrame] = []
        with atomic_path(out) as tmp:
            writer = _Writer(tmp, out, schema)

            def write(finished: Future[tuple[pa.Table, pd.DataFrame]]) -> None:
                table, partial = finished.result()
                if table.num_rows:
                    writer.write(table)
                    stats.append(partial)

            try:
                # a pipeline: this thread fetches partitions from DuckDB, one worker
                # finishes them in pandas, another writes them in order (all three
                # release the GIL for most of their work)
                with (
                    ThreadPoolExecutor(max_workers=1) as finisher,
                    ThreadPoolExecutor(max_workers=1) as writing,
                ):
                    in_flight: deque[Future[None]] = deque()
                    for table in tables:
                        raw = partition_aggregates(log.con, table)
                        log.con.execute(f"DROP TABLE {table}")
                        finished = finisher.submit(
                            _finished, raw, day, settings, population, schema
                        )
                        del raw
                        in_flight.append(writing.submit(write, finished))
                        while len(in_flight) > 2:  # at most two partitions held
                            in_flight.popleft().result()
                    while in_flight:
                        in_flight.popleft().result()
            finally:
                writer.close()
    finally:
        for table in [*tables, *([ids] if ids else [])]:
            log.con.execute(f"DROP TABLE IF EXISTS {table}")
    return FeatureFile(
        path=out,
        customers=customers,
        partitions=count,
        seconds=time.perf_counter() - began,
        source=log.source,
        summary=_combine_stats(stats),
        events=up_to,
        events_after_as_of=overview.rows - up_to,
        duplicates_dropped=dropped,
    )


class _Writer:
    """Appends Arrow tables to one Parquet or CSV file."""

    def __init__(self, tmp: Path, out: Path, schema: pa.Schema) -> None:
        name = out.name.lower()
        self.parquet = name.endswith(".parquet")
        self.sink = None
        if self.parquet:
            # min/max statistics of the float columns would take a third of the writing
            # time, for readers that seldom filter on a feature
            self.writer: object = pq.ParquetWriter(
                tmp, schema, compression="zstd", write_statistics=["customer_id"]
            )
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


def _finished(
    raw: pd.DataFrame,
    as_of: date,
    settings: Settings,
    population: PopulationStats,
    schema: pa.Schema,
) -> tuple[pa.Table, pd.DataFrame]:
    """A partition's features as the output's Arrow table (NaN stored as null), and their
    :func:`_partial_stats`."""
    frame = finish_features(raw, as_of, settings, population)
    # customer_id stays the pandas index for readers of the Parquet file
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=True)
    return table, _partial_stats(frame)


def _partial_stats(frame: pd.DataFrame) -> pd.DataFrame:
    """count, sum, min and max of every (float) column, NaN left out as pandas does."""
    rows = {}
    for name in frame.columns:
        values = frame[name].to_numpy()
        values = values[~np.isnan(values)]
        empty = not len(values)
        low, high = (np.nan, np.nan) if empty else (values.min(), values.max())
        rows[name] = (len(values), values.sum(), low, high)
    return pd.DataFrame.from_dict(rows, orient="index", columns=["count", "sum", "min", "max"])


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
