"""The same feature builders and scoring on Apache Spark (``pip install "churnlens[spark]"``).

Nothing is re-implemented: the one partitioned pass of a single machine
(:func:`~churnlens.features.aggregation.aggregate_log`) runs once per *bucket* of
customers. Rows are grouped by ``pmod(xxhash64(trim(customer_id)), buckets)`` and reach a
one-argument wrapper through ``applyInPandas`` with an explicit schema; a customer's
events are all in one bucket, so every per-customer aggregate is that of the whole log.

1. **Aggregates** (one Spark job, kept with ``persist``): per bucket, the raw aggregates
   of every customer (and, for scoring, the contact profile's), plus one summary row
   with the bucket's counts and fingerprint parts, or its validation problems.
2. **The driver** raises one :class:`InputError` for all buckets' problems, combines the
   fingerprint, and computes the population statistics from the buyers' purchase
   aggregates with the single-machine function
   (:func:`~churnlens.features.engine.population_and_buyers`), and, for scoring, the plan
   (:func:`churnlens.scoring.plan_from`).
3. **Finishing** (``mapInPandas`` over the kept aggregates, no shuffle): features, or
   scores with the models as a broadcast variable, per batch of customers; the contact
   budget and ``priority`` of :func:`churnlens.ranking.rank_sql`, computed in two
   distributed sorts (:mod:`churnlens.spark_ranking`).

Buckets are sized from the data, as partitions are on one machine: one per
``engine.partition_events`` events when scoring (``engine.feature_partition_events`` for
features), and at least one per core (``defaultParallelism``). Each bucket is one
shuffle partition: one task, one Python call.

Traps handled:

- Time zones: ``TimestampType`` values (instants) travel as UTC epoch microseconds, other
  timestamps (text with or without an offset, dates, ``TIMESTAMP_NTZ``) as text that
  DuckDB parses as on one machine: nothing depends on the session time zone, but Spark
  reads naive pandas datetimes and offset-less text in it, so :func:`spark_session` sets
  it to UTC, and :func:`build_features` and :func:`score` warn
  (:class:`~churnlens.spark_session.TimeZoneWarning`) on ``TIMESTAMP`` events in a
  session that is not in UTC.
- Executors must run a Python with churnlens installed (not only on ``sys.path``):
  :func:`spark_session` (:mod:`churnlens.spark_session`) sees to it.
- Never group by ``customer_id`` alone (one Python call per customer: ~700x slower).
- DuckDB gets one thread per task; broadcasts need a classic session (not Spark Connect).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from churnlens import events as ev
from churnlens.actions import Policy
from churnlens.config import Settings
from churnlens.contacts import RAW_COLUMNS as CONTACT_RAW_COLUMNS
from churnlens.contacts import FatigueRules
from churnlens.errors import InputError, Problem
from churnlens.events.fingerprint import FingerprintParts, combine
from churnlens.events.sources import check_path, parquet_files, parquet_schemas_differ
from churnlens.features.aggregation import aggregate_log
from churnlens.features.engine import (
    feature_names,
    finish_features,
    population_and_buyers,
    purchase_columns,
    raw_columns,
)
from churnlens.features.population import PopulationStats
from churnlens.model_source import ScoringModels, load_models
from churnlens.ranking import with_ranking
from churnlens.scoring import ScoringPlan, part_table, plan_from, score_partition
from churnlens.spark_ranking import Ranked
from churnlens.spark_ranking import rank as rank_distributed
from churnlens.spark_session import check_time_zone, require_spark, spark_session

try:
    from pyspark import StorageLevel
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
except ImportError:  # the optional extra is not installed: _require() says so
    StorageLevel = DataFrame = SparkSession = F = T = None  # type: ignore[assignment,misc]

BUCKET = "_churnlens_bucket"
# the aggregates' text columns (every other one is a number)
_TEXT = {"customer_id", "summary", "_contact_preferred_channel", "_contact_fatigued_channels"}
SOURCE = "<Spark DataFrame>"
SCORED_SCHEMA = (
    "customer_id string, as_of date, churn_probability double, risk_band string, "
    "lifecycle_stage string, cycle_days double, days_since_purchase double, "
    "segment_id long, segment_name string, expected_value double, value_if_retained double, "
    "value_at_risk double, winback_value double, clv double, uplift double, "
    "incremental_value double, action string, action_channel string, `group` string, "
    "reasons array<string>, model_version string, "
    "silent_on date, lost_on date, value_tier string, rule string"
)


def _require() -> None:
    if F is None:
        require_spark()


def _problem(column: str, message: str, fix: str, source: str = SOURCE) -> InputError:
    return InputError(source, [Problem(column=column, message=message, fix=fix)])


@dataclass(frozen=True)
class _Events:
    frame: DataFrame  # the canonical columns present, plus BUCKET
    micros: bool  # timestamp travels as UTC epoch microseconds (else as text)
    buckets: int


def bucket_count(df: DataFrame, per_bucket: int) -> int:
    """Buckets for ``df``: one per ``per_bucket`` rows (a count of the events: cheap on
    Parquet), and at least one per core of the session (``defaultParallelism``)."""
    rows = df.count()
    cores = df.sparkSession.sparkContext.defaultParallelism
    return max(1, math.ceil(rows / per_bucket), cores)


def partition_keys(spark: SparkSession, buckets: int) -> list[int]:
    """For each bucket b, a number whose Spark hash partition among ``buckets`` is b, so
    that ``repartition(buckets, key)`` puts one bucket in each partition (hashing the
    bucket numbers themselves would put some pairs together and leave tasks empty)."""
    found: dict[int, int] = {}
    size = 64 * buckets
    while len(found) < buckets:  # 64 candidates a bucket: all found at once, in practice
        part = F.pmod(F.hash("id"), F.lit(buckets))
        rows = spark.range(size).groupBy(part.alias("p")).agg(F.min("id")).collect()
        found = {int(p): int(k) for p, k in rows}
        size *= 4
    return [found[b] for b in range(buckets)]


def _prepare(df: DataFrame, buckets: int) -> _Events:
    missing = [c for c in ev.REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        fix = f"the event log needs {', '.join(ev.REQUIRED_COLUMNS)}"
        raise _problem(", ".join(missing), "required column is missing", fix)
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    check_time_zone(df)
    micros = isinstance(df.schema["timestamp"].dataType, T.TimestampType)
    stamp = F.unix_micros("timestamp") if micros else F.col("timestamp").cast("string")
    columns = [
        stamp.alias(c) if c == "timestamp" else F.col(c)
        for c in ev.CANONICAL_COLUMNS
        if c in df.columns
    ]
    key = F.trim(F.col("customer_id").cast("string"))
    keys = F.array(*[F.lit(k).cast("long") for k in partition_keys(df.sparkSession, buckets)])
    bucket = F.element_at(keys, (F.pmod(F.xxhash64(key), F.lit(buckets)) + 1).cast("int"))
    bucket = bucket.alias(BUCKET)
    frame = df.select(*columns, bucket).repartition(buckets, BUCKET)
    return _Events(frame, micros, buckets)


def _raw_schema(settings: Settings, contacts: bool) -> tuple[list[str], str]:
    """The aggregates' columns and Spark schema: every raw aggregate as a double, the
    contact profile's channels as text, and a summary (JSON) for the summary row."""
    extra = list(CONTACT_RAW_COLUMNS) if contacts else []
    names = ["customer_id", *raw_columns(settings), *extra, "summary"]
    return names, ", ".join(f"`{n}` {'string' if n in _TEXT else 'double'}" for n in names)


def _bucket_aggregates(
    pdf: pd.DataFrame,
    as_of: date,
    settings: Settings,
    micros: bool,
    contacts: FatigueRules | None,
    columns: list[str],
) -> pd.DataFrame:
    """Pass 1 for one bucket: its customers' raw aggregates, and a summary row (no id)
    with its counts and fingerprint parts, or its problems, as JSON (exact integers)."""
    pdf = pdf.drop(columns=BUCKET)
    if micros:
        pdf["timestamp"] = pd.to_datetime(pdf["timestamp"], unit="us")  # naive UTC
    limits = settings.engine
    con = ev.connect(limits.memory_limit, limits.temp_dir, limits.threads or 1)
    found = pd.DataFrame(columns=columns[:-1])
    try:
        with aggregate_log(
            pdf, as_of, settings, partitions=1, contacts=contacts, require_events=False, con=con
        ) as log:
            found = log.raw(0).reset_index()
            parts = log.partitions[0].fingerprint
            summary: dict[str, Any] = {"events": log.events, "rows": log.rows, **asdict(parts)}
    except InputError as exc:
        summary = {"problems": [asdict(p) for p in exc.problems]}
    finally:
        con.close()
    out = pd.concat([found, pd.DataFrame([{"summary": json.dumps(summary)}])])
    out = out.reindex(columns=columns)
    return out.astype({c: object if c in _TEXT else float for c in columns})


def _raise_problems(summaries: list[dict[str, Any]]) -> None:
    """One InputError with every bucket's problems, merged: rows summed, in column order,
    examples sorted (a bucket's row numbers would mislead: only the values are kept)."""
    merged: dict[tuple[str, str, str], Problem] = {}
    for found in (s["problems"] for s in summaries if "problems" in s):
        for p in (Problem(**{**d, "examples": tuple(d["examples"])}) for d in found):
            key = (p.column, p.message, p.fix)
            seen = merged.get(key, Problem(p.column, p.message, 0, (), p.fix))
            shown = {re.sub(r"^row \d+: ", "", e) for e in (*seen.examples, *p.examples)}
            merged[key] = replace(seen, rows=seen.rows + p.rows, examples=tuple(sorted(shown)))
    where = {c: i for i, c in enumerate(ev.CANONICAL_COLUMNS)}
    ordered = sorted(merged.values(), key=lambda p: (where.get(p.column, 99), p.message))
    if ordered:
        raise InputError(SOURCE, [replace(p, examples=p.examples[:3]) for p in ordered])


@dataclass(frozen=True)
class _Aggregated:
    frame: DataFrame  # the customers' raw aggregates (persisted), no summary rows
    population: PopulationStats
    buyers: pd.DataFrame  # rfm_* and cycle_* of every buyer
    events: int  # up to the as-of day
    rows: int  # all of them
    fingerprint: str
    buckets: int
    kept: DataFrame | None = None  # the persisted aggregates behind ``frame``: unpersist it


def _aggregate(
    df: DataFrame,
    as_of: date,
    settings: Settings,
    buckets: int | None,
    contacts: FatigueRules | None = None,
    population: PopulationStats | None = None,
) -> _Aggregated:
    """Passes 1 and 2: the buckets' aggregates (kept), then the whole log's statistics."""
    if buckets is None:
        engine = settings.engine
        per = engine.partition_events if contacts else engine.feature_partition_events
        buckets = bucket_count(df, per)
    events = _prepare(df, buckets)
    columns, schema = _raw_schema(settings, contacts is not None)
    micros = events.micros

    def aggregates(pdf: pd.DataFrame) -> pd.DataFrame:
        return _bucket_aggregates(pdf, as_of, settings, micros, contacts, columns)

    kept = events.frame.groupBy(BUCKET).applyInPandas(aggregates, schema)
    kept = kept.persist(StorageLevel.MEMORY_AND_DISK)
    try:
        rows = kept.filter("customer_id IS NULL").select("summary").collect()
        summaries = [json.loads(r[0]) for r in rows]
        if not summaries:
            fix = "check that the right log was given"
            raise _problem("-", "no events: the log has no rows", fix)
        _raise_problems(summaries)
        buyers = kept.filter("customer_id IS NOT NULL AND rfm_frequency > 0")
        raw = _collect(buyers.select(*purchase_columns(settings))).to_pandas()
        own, features = population_and_buyers(raw, as_of, settings, population)
        parts = combine(FingerprintParts(s["n"], s["xor"], s["total"]) for s in summaries)
        rows, up_to = sum(s["rows"] for s in summaries), sum(s["events"] for s in summaries)
        if not up_to:
            message = f"no event on or before the as-of day {as_of}: no customer to describe"
            raise _problem("timestamp", message, "give a later --as-of")
    except BaseException:
        kept.unpersist()
        raise
    customers = kept.filter("customer_id IS NOT NULL").drop("summary")
    digest = parts.digest()
    return _Aggregated(customers, own, features, up_to, rows, digest, events.buckets, kept)


def _collect(df: DataFrame) -> pa.Table:
    to_arrow = getattr(df, "toArrow", None)  # Spark 4; 3.5 goes through pandas
    return to_arrow() if to_arrow else pa.Table.from_pandas(df.toPandas(), preserve_index=False)


def _indexed(pdf: pd.DataFrame) -> pd.DataFrame:
    raw = pdf.set_index("customer_id").sort_index()
    raw.index.name = "customer_id"
    return raw


def build_features(
    df: DataFrame, as_of: str | date, settings: Settings | None = None, buckets: int | None = None
) -> DataFrame:
    """Point-in-time features on Spark, equal to :func:`churnlens.build_features`.

    Parameters
    ----------
    df
        Events with the event-log contract's columns (other columns are ignored).
    as_of
        The features see every event up to and including this (UTC) day.
    settings
        Feature settings; defaults when ``None``.
    buckets
        Customer buckets (one task and one Python call each); by default one per
        ``engine.feature_partition_events`` events (``engine.partition_events`` when
        scoring), at least one per core (:func:`bucket_count`).

    Returns
    -------
    pyspark.sql.DataFrame
        ``customer_id`` and every column of :func:`churnlens.feature_names`, as doubles.
        Validation and the population (Spark jobs) run before this returns; the
        aggregates are kept (``persist``) for the finishing pass.
    """
    _require()
    settings = settings or Settings()
    day = ev.parse_as_of(as_of)
    found = _aggregate(df, day, settings, buckets)
    names, population = feature_names(settings), found.population

    def features(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            frame = finish_features(_indexed(pdf), day, settings, population)
            yield frame.reset_index()[["customer_id", *names]]

    schema = "customer_id string, " + ", ".join(f"`{n}` double" for n in names)
    return found.frame.mapInPandas(features, schema)


def ranked_scores(
    df: DataFrame,
    as_of: str | date,
    models: ScoringModels | str | Path,
    policy: Policy | None,
    max_contacts: int | None,
    buckets: int | None,
) -> tuple[Ranked, ScoringPlan, _Aggregated]:
    """:func:`score`'s work: the ranked scores (kept, for the caller to release), the
    scoring plan and the aggregation's counts (``buckets``)."""
    if max_contacts is not None and max_contacts < 0:
        raise ValueError("max_contacts must be >= 0")
    models = models if isinstance(models, ScoringModels) else load_models(models)
    policy = with_ranking(policy or Policy(), models.uplift)
    day = ev.parse_as_of(as_of)
    found = _aggregate(df, day, models.settings, buckets, contacts=policy.fatigue)
    plan = plan_from(
        day,
        models.settings,
        policy,
        found.population,
        found.buyers,
        found.fingerprint,
        found.events,
        found.rows - found.events,
        value=models.value,
    )
    shared = df.sparkSession.sparkContext.broadcast(models)

    def scores(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        models: ScoringModels = shared.value
        for pdf in batches:
            frame = score_partition(_indexed(pdf), plan, models, policy, num_threads=1)
            yield part_table(frame, plan, models.version).to_pandas(ignore_metadata=True)

    scored = found.frame.mapInPandas(scores, SCORED_SCHEMA)
    scored = scored.persist(StorageLevel.MEMORY_AND_DISK)  # the ranking reads it twice
    try:
        ranked = rank_distributed(scored, policy, max_contacts, found.buckets)
    finally:  # the ranked scores are kept: what they came from is not needed any more
        scored.unpersist()
        if found.kept is not None:
            found.kept.unpersist()
    return ranked, plan, found


def rank(
    scored: DataFrame, policy: Policy, max_contacts: int | None, partitions: int | None = None
) -> DataFrame:
    """The contact budget, then ``priority`` over all customers, as
    :func:`churnlens.ranking.rank_sql` defines them, in distributed sorts
    (:func:`churnlens.spark_ranking.rank`); the result is kept (``persist``) until
    ``spark.catalog.clearCache()``."""
    _require()
    partitions = partitions or scored.sparkSession.sparkContext.defaultParallelism
    return rank_distributed(scored, policy, max_contacts, partitions).frame


def score(
    df: DataFrame,
    as_of: str | date,
    models: ScoringModels | str | Path,
    policy: Policy | None = None,
    max_contacts: int | None = None,
    buckets: int | None = None,
) -> DataFrame:
    """Score every customer on Spark: the rows :func:`churnlens.scoring.score` writes.

    Parameters
    ----------
    df, buckets
        As for :func:`build_features`.
    models
        Loaded models, or a bundle directory or ``models:/`` URI for
        :func:`~churnlens.model_source.load_models`; executors get them as a broadcast.
    policy, max_contacts
        As for :func:`churnlens.scoring.score` (the default policy when ``None``).

    Returns
    -------
    pyspark.sql.DataFrame
        The scores contract (``SCORE_COLUMNS`` then ``EXTRA_COLUMNS``), ``reasons`` as
        ``array<string>``, each partition sorted by action then priority. Validation,
        the plan and the ranking (Spark jobs) run before this returns; the ranked scores
        are kept (``persist``) until ``spark.catalog.clearCache()``.
    """
    _require()
    return ranked_scores(df, as_of, models, policy, max_contacts, buckets)[0].frame


def read_events(spark: SparkSession, path: str | Path) -> DataFrame:
    """An event log of any of :data:`churnlens.events.FILE_TYPES` (or a folder of Parquet
    files) on Spark. CSV columns stay text, as the single-machine reader keeps them, for
    DuckDB to parse."""
    _require()
    path = Path(path)
    kind = check_path(path, str(path))
    if kind is None:  # files with different columns are read by name, as on one machine
        merge = parquet_schemas_differ(parquet_files(path, str(path)), str(path))
        return spark.read.option("mergeSchema", str(merge).lower()).parquet(str(path))
    if kind.format == "parquet":
        return spark.read.parquet(str(path))
    return spark.read.csv(str(path), header=True, escape='"')


__all__ = [
    "bucket_count",
    "build_features",
    "partition_keys",
    "rank",
    "ranked_scores",
    "read_events",
    "score",
    "spark_session",
]
