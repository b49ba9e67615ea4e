"""``churnlens features``: every customer's features, straight to a file, in bounded memory.

:func:`write_features` runs the one partitioned pass
(:func:`~churnlens.features.aggregation.aggregate_log`), then a pipeline fetches each
partition's aggregates (this thread), finishes them against the whole log's population
(a worker, pandas) and appends them to the output (another worker, pyarrow). The output
and its manifest (counts, fingerprint, the population used) are written under temporary
names and replace the earlier pair as one step. A log that breaks the contract raises
the same :class:`~churnlens.errors.InputError` as :func:`~churnlens.events.load_events`
and leaves no output. The result equals :func:`~churnlens.features.build_features` on the
whole log (a test checks it).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from churnlens import __version__
from churnlens.config import Settings
from churnlens.events import EventSource, EventTable
from churnlens.features.aggregation import Progress, aggregate_log
from churnlens.features.engine import feature_names, finish_features
from churnlens.features.population import PopulationStats, resolve_population
from churnlens.outputs import check_output_path, replace_with_manifest
from churnlens.work_folders import owned_output


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
    population: PopulationStats | str | Path | None = None,
    population_source: str | None = None,
    inputs: tuple[object, ...] = (),
    progress: Progress | None = None,
) -> FeatureFile:
    """Build the features of every customer seen up to ``as_of`` into ``out``.

    ``out`` is ``.parquet``, ``.csv`` or ``.csv.gz``, with ``<out>.manifest.json`` beside
    it; rows are in customer order within each partition. ``partitions`` defaults to one
    per ``engine.feature_partition_events`` events. ``population``: score RFM and cycles
    against these statistics, or those of a manifest path (``population_source`` says
    where they came from), instead of the log's own. ``inputs``: more input paths the
    output must not overwrite (a config file).
    Returns the path, counts and per-column summary statistics (count, mean, min, max),
    accumulated partition by partition.
    """
    began = time.perf_counter()
    out = check_output_path(out, inputs=[events, population, *inputs])
    population, population_source = resolve_population(population, population_source, as_of)
    with (
        owned_output(out),  # one job on out; what a killed one left is finished first
        aggregate_log(
            events, as_of, settings, partitions=partitions, population=population,
            progress=progress,
        ) as log,
    ):  # fmt: skip
        settings = log.settings
        schema = _schema(settings)
        stats: list[pd.DataFrame] = []

        def write(tmp: Path) -> None:
            writer = _Writer(tmp, out, schema)

            def append(finished: Future[tuple[pa.Table, pd.DataFrame]]) -> None:
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
                    for i in range(len(log.partitions)):
                        raw = log.raw(i)
                        finished = finisher.submit(
                            _finished, raw, log.as_of, settings, log.population, schema
                        )
                        del raw
                        in_flight.append(writing.submit(append, finished))
                        while len(in_flight) > 2:  # at most two partitions held
                            in_flight.popleft().result()
                    while in_flight:
                        in_flight.popleft().result()
            finally:
                writer.close()

        manifest = {
            "kind": "features",
            "created": dt.datetime.now(dt.UTC).isoformat(),
            "churnlens": __version__,
            "as_of": log.as_of.isoformat(),
            "output": out.name,
            "source": log.log.source,
            "rows": log.customers,
            "input_fingerprint": log.fingerprint,
            "events_used": log.events,
            "events_after_as_of_ignored": log.events_after,
            "duplicates_dropped": log.duplicates,
            "partitions": len(log.partitions),
            "population": {
                "source": population_source or "the log itself",
                "statistics": log.population.to_dict(),
            },
        }
        replace_with_manifest(out, write, manifest)
        return FeatureFile(
            path=out,
            customers=log.customers,
            partitions=len(log.partitions),
            seconds=time.perf_counter() - began,
            source=log.log.source,
            summary=_combine_stats(stats),
            events=log.events,
            events_after_as_of=log.events_after,
            duplicates_dropped=log.duplicates,
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
