"""The same feature builders and scoring on Apache Spark (``pip install "churnlens[spark]"``).

Nothing is re-implemented: the single-machine pandas/DuckDB code runs once per *bucket*
of customers. Rows are grouped by ``pmod(xxhash64(trim(customer_id)), buckets)`` and
reach a one-argument wrapper through ``applyInPandas`` with an explicit schema, which
loads them with :func:`~churnlens.events.load_events` (same validation, de-duplication,
UTC conversion) and calls the single-machine code. A customer's events are all in one
bucket, so every per-customer result is that of the whole log.

Population statistics cannot come from a bucket. Pass 1 returns, per bucket, each
buyer's raw purchase aggregates (from :func:`~churnlens.features.engine.buyer_features`)
and a summary (events up to and after the as-of day, row-hash sums for the input
fingerprint, or the validation problems). The driver collects these small columns,
raises one InputError for all buckets' problems, and computes with the engine's own
functions the RFM cut points and median cycle and, for scoring, the rest of
:func:`churnlens.scoring.score`'s plan. Pass 2 builds features, or scores with the
models as a broadcast variable, per bucket against that plan; the contact budget and
``priority`` are then ranked over all customers with window functions, by
:func:`churnlens.actions.rank_sql`'s rules.

Traps handled:

- Time zones: ``TimestampType`` values (instants) travel as UTC epoch microseconds, other
  timestamps (text with or without an offset, dates, ``TIMESTAMP_NTZ``) as text that
  DuckDB parses as on one machine: nothing depends on the session time zone, but Spark
  reads naive pandas datetimes and offset-less text in it, so :func:`spark_session` sets
  it to UTC.
- Executors must run this interpreter, with churnlens installed (not only on
  ``sys.path``): :func:`spark_session` sets ``PYSPARK_PYTHON`` to ``sys.executable``.
- Never group by ``customer_id`` alone (one Python call per customer: ~700x slower).
- DuckDB gets one thread per task; broadcasts need a classic session (not Spark Connect).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from churnlens import events as ev
from churnlens import scoring
from churnlens.actions import BUDGET_RULE, Policy
from churnlens.config import Settings
from churnlens.errors import ChurnlensError, InputError, Problem
from churnlens.features import cycle, engine, rfm
from churnlens.features.base import FeatureContext
from churnlens.features.population import PopulationStats
from churnlens.model_source import ScoringModels, load_models
from churnlens.outputs import (
    check_output_path,
    output_lock,
    remove_stale_work,
    replace_with_manifest,
)
from churnlens.scoring import EXTRA_COLUMNS, SCORE_COLUMNS

try:
    from pyspark.sql import DataFrame, SparkSession, Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
except ImportError:  # the optional extra is not installed: _require() says so
    DataFrame = SparkSession = Window = F = T = None  # type: ignore[assignment,misc]

BUCKET = "_churnlens_bucket"
SOURCE = "<Spark DataFrame>"
_BUYERS = ("rfm_recency_days", "rfm_frequency", "rfm_monetary_total", "rfm_tenure_days")
_STATS = ("customer_id", *_BUYERS, "cycle_n_intervals", "summary")
_STATS_SCHEMA = ", ".join(f"{c} {'double' if c in _STATS[1:-1] else 'string'}" for c in _STATS)
_SCORED_SCHEMA = (
    "customer_id string, as_of date, churn_probability double, risk_band string, "
    "lifecycle_stage string, cycle_days double, days_since_purchase double, "
    "segment_id long, segment_name string, expected_value double, value_at_risk double, "
    "action string, action_channel string, reasons array<string>, model_version string, "
    "silent_on date, lost_on date, value_tier string, rule string"
)


def _require() -> None:
    if F is None:
        raise ChurnlensError(
            'churnlens.spark needs PySpark: pip install "churnlens[spark]" (and Java 17+)'
        )


def _problem(column: str, message: str, fix: str, source: str = SOURCE) -> InputError:
    return InputError(source, [Problem(column=column, message=message, fix=fix)])


def spark_session(master: str = "local[2]", ui: bool = False) -> SparkSession:
    """A SparkSession with the traps handled: UTC, this interpreter on executors, no UI."""
    _require()
    if master.startswith("local") or "PYSPARK_PYTHON" not in os.environ:
        os.environ["PYSPARK_PYTHON"] = sys.executable  # executors must import churnlens
    spark = (
        SparkSession.builder.master(master)
        .appName("churnlens")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", str(ui).lower())
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")  # the CLI shows its own
        .getOrCreate()
    )
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # getOrCreate may reuse a session
    return spark


@dataclass(frozen=True)
class _Events:
    frame: DataFrame  # the canonical columns present, plus BUCKET
    micros: bool  # timestamp travels as UTC epoch microseconds (else as text)
    buckets: int


def _prepare(df: DataFrame, buckets: int | None) -> _Events:
    missing = [c for c in ev.REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        fix = f"the event log needs {', '.join(ev.REQUIRED_COLUMNS)}"
        raise _problem(", ".join(missing), "required column is missing", fix)
    buckets = buckets or int(df.sparkSession.conf.get("spark.sql.shuffle.partitions") or 200)
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    micros = isinstance(df.schema["timestamp"].dataType, T.TimestampType)
    stamp = F.unix_micros("timestamp") if micros else F.col("timestamp").cast("string")
    columns = [
        stamp.alias(c) if c == "timestamp" else F.col(c)
        for c in ev.CANONICAL_COLUMNS
        if c in df.columns
    ]
    key = F.trim(F.col("customer_id").cast("string"))
    bucket = F.pmod(F.xxhash64(key), F.lit(buckets)).alias(BUCKET)
    return _Events(df.select(*columns, bucket), micros, buckets)


def _bucket_table(pdf: pd.DataFrame, micros: bool, settings: Settings) -> ev.EventTable:
    """A bucket's rows, loaded as single-machine code loads a pandas event frame."""
    pdf = pdf.drop(columns=BUCKET)
    if micros:
        pdf["timestamp"] = pd.to_datetime(pdf["timestamp"], unit="us")  # naive UTC
    limits = settings.engine
    con = ev.connect(limits.memory_limit, limits.temp_dir, limits.threads or 1)
    return ev.load_events(pdf, settings, con=con)


def _collect(df: DataFrame) -> pa.Table:
    to_arrow = getattr(df, "toArrow", None)  # Spark 4; 3.5 goes through pandas
    return to_arrow() if to_arrow else pa.Table.from_pandas(df.toPandas(), preserve_index=False)


def _bucket_stats(pdf: pd.DataFrame, as_of: date, settings: Settings, micros: bool) -> pd.DataFrame:
    """Pass 1 for one bucket: its buyers' raw aggregates, and a summary row (no id) with
    its counts and fingerprint parts, or its problems, as JSON (exact 64-bit integers)."""
    found = pd.DataFrame(columns=["customer_id", *_BUYERS, "cycle_n_intervals"])
    try:
        table = _bucket_table(pdf, micros, settings)
    except InputError as exc:
        summary: dict[str, Any] = {"problems": [asdict(p) for p in exc.problems]}
    else:
        _, buyers = engine.buyer_features(table, as_of, settings)
        found = buyers[found.columns[1:]].reset_index()
        # as EventTable.fingerprint: row count, xor of the row hashes, their sum mod a prime
        rows, xor, total, events = table.con.execute(
            f"SELECT count(*), bit_xor(h), sum(h % {ev._FINGERPRINT_PRIME}), "
            f"count(*) FILTER (WHERE day <= DATE '{as_of}') "
            f"FROM (SELECT hash({', '.join(ev.CANONICAL_COLUMNS)}) AS h, day FROM {table.name})"
        ).fetchone()  # type: ignore[misc]
        summary = {"events": events, "rows": rows, "xor": int(xor), "sum": int(total)}
    out = pd.concat([found, pd.DataFrame([{"summary": json.dumps(summary)}])])
    out = out.reindex(columns=list(_STATS))
    return out.astype({"customer_id": object, "summary": object})  # plain, not Arrow, text


@dataclass(frozen=True)
class _LogStats:
    population: PopulationStats
    buyers: pd.DataFrame  # rfm_* and cycle_* features of every buyer
    events: int  # up to the as-of day
    rows: int  # all of them
    fingerprint: str


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


def _log_stats(events: _Events, as_of: date, settings: Settings) -> _LogStats:
    """Pass 1: validate the log, then the whole population's statistics on the driver."""
    micros = events.micros

    def stats(pdf: pd.DataFrame) -> pd.DataFrame:
        return _bucket_stats(pdf, as_of, settings, micros)

    got = _collect(events.frame.groupBy(BUCKET).applyInPandas(stats, _STATS_SCHEMA)).to_pandas()
    summaries = [json.loads(s) for s in got.loc[got["customer_id"].isna(), "summary"]]
    if not summaries:
        raise _problem("-", "no events: the log has no rows", "check that the right log was given")
    _raise_problems(summaries)
    found = got.dropna(subset=["customer_id"]).set_index("customer_id").sort_index()
    # the raw purchase aggregates, as engine.buyer_features has them for the whole log
    raw = found[list(_BUYERS)].assign(
        _cycle_purchase_days=found["cycle_n_intervals"] + 1,  # buyers: >= 1 purchase day
        _cycle_span_days=found["rfm_tenure_days"] - found["rfm_recency_days"],
    )
    population = engine._population(raw)
    ctx = FeatureContext(settings=settings, as_of=as_of, population=population)
    buyers = pd.concat([rfm.finish(raw, ctx), cycle.finish(raw, ctx)], axis=1)
    xor = 0
    for s in summaries:
        xor ^= s["xor"]
    rows, events = sum(s["rows"] for s in summaries), sum(s["events"] for s in summaries)
    fingerprint = ev._fingerprint(rows, xor, sum(s["sum"] for s in summaries))
    return _LogStats(population, buyers, events, rows, fingerprint)


def _plan(stats: _LogStats, as_of: date, settings: Settings, policy: Policy) -> scoring._Plan:
    """What churnlens.scoring._plan_from computes, from the collected statistics."""
    if not stats.events:
        message = f"no event on or before the as-of day {as_of}, nobody to score"
        raise _problem("timestamp", message, "give a later --as-of")
    return scoring._plan_from(
        as_of,
        settings,
        policy,
        stats.population,
        stats.buyers,
        stats.fingerprint,
        stats.events,
        stats.rows - stats.events,
    )


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
        Customer buckets (one Python call each); ``spark.sql.shuffle.partitions`` by default.

    Returns
    -------
    pyspark.sql.DataFrame
        ``customer_id`` and every column of :func:`churnlens.feature_names`, as doubles.
        Validation and the population (one Spark job) run before this returns.
    """
    _require()
    settings = settings or Settings()
    as_of = ev.parse_as_of(as_of)
    events = _prepare(df, buckets)
    population = _log_stats(events, as_of, settings).population
    names, micros = engine.feature_names(settings), events.micros

    def features(pdf: pd.DataFrame) -> pd.DataFrame:
        table = _bucket_table(pdf, micros, settings)
        frame = engine.build_features(table, as_of, settings, population)
        return frame.reset_index()[["customer_id", *names]]

    schema = "customer_id string, " + ", ".join(f"`{n}` double" for n in names)
    return events.frame.groupBy(BUCKET).applyInPandas(features, schema)


def _score(
    df: DataFrame,
    as_of: str | date,
    models: ScoringModels | str | Path,
    policy: Policy | None,
    max_contacts: int | None,
    buckets: int | None,
) -> tuple[DataFrame, scoring._Plan, int]:
    if max_contacts is not None and max_contacts < 0:
        raise ValueError("max_contacts must be >= 0")
    models = models if isinstance(models, ScoringModels) else load_models(models)
    policy, as_of = policy or Policy(), ev.parse_as_of(as_of)
    events = _prepare(df, buckets)
    plan = _plan(_log_stats(events, as_of, models.settings), as_of, models.settings, policy)
    shared, micros = df.sparkSession.sparkContext.broadcast(models), events.micros
    empty = [c for c in (*SCORE_COLUMNS, *EXTRA_COLUMNS) if c != "priority"]

    def scores(pdf: pd.DataFrame) -> pd.DataFrame:
        models: ScoringModels = shared.value
        part = _bucket_table(pdf, micros, models.settings).hash_partition(0, 1, plan.as_of)
        (rows,) = part.con.execute(f"SELECT count(*) FROM {part.name}").fetchone()  # type: ignore[misc]
        if not rows:  # every event of the bucket is after the as-of day
            return pd.DataFrame(columns=empty)
        X, contacts = scoring.partition_inputs(part, plan, models, policy)
        frame = scoring.score_partition(X, contacts, plan, models, policy, num_threads=1)
        return scoring._part_table(frame, plan, models.version).to_pandas(ignore_metadata=True)

    scored = events.frame.groupBy(BUCKET).applyInPandas(scores, _SCORED_SCHEMA)
    return _rank(scored, policy, max_contacts), plan, events.buckets


def _rank(scored: DataFrame, policy: Policy, max_contacts: int | None) -> DataFrame:
    """The contact budget, then ``priority`` over all customers (actions.rank_sql's rules)."""
    order = [F.desc_nulls_last(c) for c in ("value_at_risk", "churn_probability")]
    order.append(F.asc_nulls_last("customer_id"))
    contacting = policy.contact_actions()
    contact = F.col("action").isin(contacting) if contacting else F.lit(False)
    if max_contacts is not None:
        rank = F.row_number().over(Window.partitionBy(contact).orderBy(*order))
        over = F.col("_over")
        note = F.array(F.lit(f"over the contact budget of {max_contacts}"))
        replaced = {
            "action": F.when(over, F.lit(policy.fallback)).otherwise(F.col("action")),
            "action_channel": F.when(~over, F.col("action_channel")),
            "rule": F.when(over, F.lit(BUDGET_RULE)).otherwise(F.col("rule")),
            "reasons": F.when(over, F.concat("reasons", note)).otherwise(F.col("reasons")),
        }
        scored = scored.withColumn("_over", contact & (rank > F.lit(int(max_contacts))))
        scored = scored.withColumns(replaced)
    priority = F.row_number().over(Window.partitionBy("action").orderBy(*order))
    return scored.withColumn("priority", priority.cast("long")).select(
        *SCORE_COLUMNS, *EXTRA_COLUMNS
    )


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
        ``array<string>``. Validation and the plan (one Spark job) run before this returns.
    """
    _require()
    return _score(df, as_of, models, policy, max_contacts, buckets)[0]


def read_events(spark: SparkSession, path: str | Path) -> DataFrame:
    """An event log (``.parquet``, a folder of them, ``.csv``, ``.csv.gz``) on Spark.

    CSV columns stay text, as the single-machine reader keeps them, for DuckDB to parse.
    """
    _require()
    path, name = Path(path), Path(path).name.lower()
    if not path.exists():
        raise _problem("-", "file not found", "check the path", str(path))
    if path.is_dir():
        files = tuple(str(f) for f in sorted(path.rglob("*.parquet")))
        # files with different columns are read by name, as on one machine
        merge = ev.parquet_schemas_differ(files, str(path))
        return spark.read.option("mergeSchema", str(merge).lower()).parquet(str(path))
    if name.endswith((".parquet", ".pq")):
        return spark.read.parquet(str(path))
    if re.search(r"\.(csv|txt)(\.gz)?$", name):
        return spark.read.csv(str(path), header=True, escape='"')
    fix = "use .csv, .csv.gz or .parquet (or a folder of .parquet files)"
    raise _problem("-", f"unknown file type '{path.suffix}' for the Spark engine", fix, str(path))


def score_to_file(
    events_path: str | Path,
    as_of: str | date,
    out: str | Path,
    models: ScoringModels | str | Path,
    policy: Policy | None = None,
    max_contacts: int | None = None,
    master: str = "local[2]",
    buckets: int | None = None,
    ui: bool = False,
) -> dict[str, Any]:
    """Score an event log file on Spark; write the scores file and its manifest.

    The scores are collected to the driver as Arrow and written by the single-machine
    writer (same order, Parquet or CSV with reasons joined by ``"; "``, a temporary file
    renamed when complete), with the same manifest JSON beside them plus ``engine`` and
    ``spark_master``; ``partitions`` is the number of buckets. Returns the manifest.
    """
    _require()
    started = time.perf_counter()
    out = check_output_path(out, inputs=[events_path])
    if not isinstance(models, ScoringModels):
        models = load_models(models)  # a bad model fails before Spark starts
    policy = policy or Policy()
    spark = spark_session(master, ui=ui)
    events = read_events(spark, events_path)
    with output_lock(out):  # one job per output, as on one machine
        remove_stale_work(out)
        scored, plan, count = _score(events, as_of, models, policy, max_contacts, buckets)
        con = ev.connect()
        try:
            con.register("_ranked", _collect(scored))
            manifest = scoring._manifest(
                con, plan, models, policy, out, max_contacts, count, started
            )
            manifest.update(engine="spark", spark_master=spark.sparkContext.master)
            _, manifest = replace_with_manifest(
                out, lambda tmp: scoring.write_output(con, "_ranked", tmp, out), manifest
            )
        finally:
            con.close()
    return manifest
