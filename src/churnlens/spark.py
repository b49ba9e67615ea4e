"""The same feature builders and scoring on Apache Spark (``pip install "churnlens[spark]"``).

Nothing is re-implemented for Spark: the single-machine pandas/DuckDB code runs once per
*bucket* of customers. Rows are grouped by ``pmod(xxhash64(customer_id), buckets)`` (the id
cast to text and trimmed, so ids the loader will trim share a bucket) and each bucket's
events reach a one-argument wrapper through ``applyInPandas`` with an explicit schema;
the wrapper loads them with :func:`~churnlens.events.load_events` (the same validation,
de-duplication and UTC conversion) and calls the single-machine builders. A customer's
events are all in one bucket, so per-customer results are those of the whole log.

Statistics over the whole population cannot come from a bucket. A first, light pass runs
:func:`~churnlens.features.engine.buyer_features` per bucket and returns each buyer's raw
purchase aggregates (recency, frequency, monetary total, tenure, purchase days), plus one
summary row per bucket: its events up to the as-of day, DuckDB row-hash sums for the
input fingerprint and any validation problems. The driver collects these small columns
and computes, with the engine's own functions, the RFM cut points and median cycle
(:class:`~churnlens.features.PopulationStats`) and, for scoring, the plan of
:func:`churnlens.scoring.score`: lifecycle thresholds, value-tier cuts, fingerprint. The
second pass builds features (or scores) per bucket against that plan, the models
arriving as a broadcast variable; priority and the contact budget are then ranked over
all customers with window functions, exactly as :func:`churnlens.actions.rank_sql` does.

Known traps, handled here:

- Time zones: ``TimestampType`` columns are instants and travel as UTC epoch
  microseconds, other timestamp columns (text with offsets, dates, ``TIMESTAMP_NTZ``) as
  text that DuckDB parses as on one machine, so results never depend on the session time
  zone. :func:`spark_session` still sets ``spark.sql.session.timeZone=UTC``: Spark itself
  reads naive pandas datetimes and offset-less text in that zone.
- Executors must run this interpreter with churnlens installed (not only on
  ``sys.path``): :func:`spark_session` sets ``PYSPARK_PYTHON`` to ``sys.executable``.
- Never group by ``customer_id`` alone: one Python call per customer is ~700x slower.
- Broadcasting needs a classic session (not Spark Connect).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from churnlens.actions import BUDGET_RULE, Policy, value_cuts
from churnlens.config import Settings
from churnlens.errors import ChurnlensError, InputError, Problem
from churnlens.events import (
    _FINGERPRINT_PRIME,
    CANONICAL_COLUMNS,
    REQUIRED_COLUMNS,
    EventTable,
    _fingerprint,
    connect,
    load_events,
    parse_as_of,
)
from churnlens.features import cycle, rfm
from churnlens.features.base import FeatureContext
from churnlens.features.engine import _population, buyer_features, feature_names
from churnlens.features.engine import build_features as local_features
from churnlens.lifecycle import stage_thresholds
from churnlens.model_source import ScoringModels, load_models
from churnlens.outputs import check_output_path
from churnlens.scoring import (
    EXTRA_COLUMNS,
    SCORE_COLUMNS,
    _manifest,
    _part_table,
    _Plan,
    _write_manifest,
    _write_output,
    expected_value,
    partition_inputs,
    score_partition,
)

try:
    from pyspark.sql import DataFrame, SparkSession, Window
    from pyspark.sql import functions as F
    from pyspark.sql import types as T
except ImportError:  # the optional extra is not installed: _require() says so
    DataFrame = SparkSession = Window = F = T = None  # type: ignore[assignment,misc]

BUCKET = "_churnlens_bucket"
SOURCE = "<Spark DataFrame>"
_BUYER_COLUMNS = (
    "rfm_recency_days",
    "rfm_frequency",
    "rfm_monetary_total",
    "rfm_tenure_days",
    "cycle_n_intervals",
)
_STATS_SCHEMA = (
    "customer_id string, "
    + ", ".join(f"{c} double" for c in _BUYER_COLUMNS)
    + ", events long, hash_rows long, hash_xor long, hash_sum long, problems string"
)
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
        .getOrCreate()
    )
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # getOrCreate may reuse a session
    return spark


# -- the events, bucketed ---------------------------------------------------------------


@dataclass(frozen=True)
class _Events:
    frame: DataFrame  # canonical columns plus BUCKET
    micros: bool  # timestamp travels as UTC epoch microseconds
    buckets: int


def _prepare(df: DataFrame, buckets: int | None) -> _Events:
    """The canonical columns of ``df``, with timestamps made zone-proof, and the bucket."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(
            SOURCE,
            [
                Problem(column=c, message="required column is missing", fix=f"add '{c}'")
                for c in missing
            ],
        )
    if buckets is None:
        buckets = int(df.sparkSession.conf.get("spark.sql.shuffle.partitions") or 200)
    if buckets < 1:
        raise ValueError("buckets must be >= 1")
    micros = isinstance(df.schema["timestamp"].dataType, T.TimestampType)
    columns = []
    for c in (c for c in CANONICAL_COLUMNS if c in df.columns):
        if c == "timestamp":
            ts = F.unix_micros(F.col(c)) if micros else F.col(c).cast("string")
            columns.append(ts.alias(c))
        else:
            columns.append(F.col(c))
    key = F.trim(F.col("customer_id").cast("string"))
    bucket = F.pmod(F.xxhash64(key), F.lit(buckets)).alias(BUCKET)
    return _Events(df.select(*columns, bucket), micros, buckets)


def _bucket_table(pdf: pd.DataFrame, micros: bool, settings: Settings) -> EventTable:
    """A bucket's rows, loaded as the single-machine code loads a pandas event frame.

    DuckDB gets one thread (Spark runs a task per core) and the engine's memory cap.
    """
    pdf = pdf.drop(columns=BUCKET)
    if micros:
        pdf["timestamp"] = pd.to_datetime(pdf["timestamp"], unit="us")  # naive UTC
    engine = settings.engine
    con = connect(engine.memory_limit, engine.temp_dir, engine.threads or 1)
    return load_events(pdf, settings, con=con)


def _collect(df: DataFrame) -> pd.DataFrame:
    to_arrow = getattr(df, "toArrow", None)  # Spark 4; 3.5 has toPandas only
    return to_arrow().to_pandas() if to_arrow else df.toPandas()


# -- pass 1: population statistics and the plan -----------------------------------------


def _bucket_stats(pdf: pd.DataFrame, as_of: date, settings: Settings, micros: bool) -> pd.DataFrame:
    """One bucket's buyers (raw purchase aggregates) and a summary row (no customer_id)."""
    summary: dict[str, Any] = {"customer_id": [None], "problems": [None]}
    try:
        table = _bucket_table(pdf, micros, settings)
    except InputError as exc:
        summary["problems"] = [json.dumps([asdict(p) for p in exc.problems])]
        return pd.DataFrame(summary)
    _, buyers = buyer_features(table, as_of, settings)
    cols = ", ".join(CANONICAL_COLUMNS)
    rows, xor, total, events = table.con.execute(
        f"SELECT count(*), bit_xor(h), sum(h % {_FINGERPRINT_PRIME}), "
        f"count(*) FILTER (WHERE day <= DATE '{as_of.isoformat()}') "
        f"FROM (SELECT hash({cols}) AS h, day FROM {table.name})"
    ).fetchone()  # type: ignore[misc]
    xor = int(xor) - (1 << 64) if int(xor) >= 1 << 63 else int(xor)  # into a signed long
    summary.update(events=[events], hash_rows=[rows], hash_xor=[xor], hash_sum=[int(total)])
    return pd.concat([buyers[list(_BUYER_COLUMNS)].reset_index(), pd.DataFrame(summary)])


@dataclass(frozen=True)
class _LogStats:
    population: Any  # PopulationStats
    buyers: pd.DataFrame  # rfm_* and cycle_* features of every buyer
    events: int  # up to the as-of day
    fingerprint: str


def _raise_problems(problem_json: pd.Series) -> None:
    """One InputError with the problems of every bucket, merged (rows summed)."""
    merged: dict[tuple[str, str, str], Problem] = {}
    for text in problem_json.dropna():
        for p in (Problem(**{**d, "examples": tuple(d["examples"])}) for d in json.loads(text)):
            # bucket-relative row numbers would mislead: keep the values
            examples = tuple(re.sub(r"^row \d+: ", "", e) for e in p.examples)
            key = (p.column, p.message, p.fix)
            seen = merged.get(key, Problem(p.column, p.message, 0, (), p.fix))
            shown = tuple(dict.fromkeys(seen.examples + examples))[:3]
            merged[key] = Problem(p.column, p.message, seen.rows + p.rows, shown, p.fix)
    if merged:
        raise InputError(SOURCE, list(merged.values()))


def _log_stats(events: _Events, as_of: date, settings: Settings) -> _LogStats:
    """Validate the log and compute, on the driver, the whole population's statistics."""
    micros = events.micros

    def stats(pdf: pd.DataFrame) -> pd.DataFrame:
        return _bucket_stats(pdf, as_of, settings, micros)

    collected = _collect(events.frame.groupBy(BUCKET).applyInPandas(stats, _STATS_SCHEMA))
    summary = collected[collected["customer_id"].isna()]
    if summary.empty:
        raise InputError(SOURCE, [Problem("-", "no events: the log has no rows", fix="")])
    _raise_problems(summary["problems"])
    found = collected.dropna(subset=["customer_id"]).set_index("customer_id").sort_index()
    # the raw aggregates buyer_features finished, rebuilt from its (raw-valued) columns
    raw = found[["rfm_recency_days", "rfm_frequency", "rfm_monetary_total", "rfm_tenure_days"]]
    raw = raw.assign(
        _cycle_purchase_days=found["cycle_n_intervals"] + 1,  # >= 1 purchase day per buyer
        _cycle_span_days=found["rfm_tenure_days"] - found["rfm_recency_days"],
    )
    population = _population(raw)
    ctx = FeatureContext(settings=settings, as_of=as_of, population=population)
    buyers = pd.concat([rfm.finish(raw, ctx), cycle.finish(raw, ctx)], axis=1)
    xor = 0
    for v in summary["hash_xor"]:
        xor ^= int(v) & ((1 << 64) - 1)
    fingerprint = _fingerprint(
        int(summary["hash_rows"].sum()), xor, sum(int(v) for v in summary["hash_sum"])
    )
    return _LogStats(population, buyers, int(summary["events"].sum()), fingerprint)


def _plan(stats: _LogStats, as_of: date, settings: Settings, policy: Policy) -> _Plan:
    """What :func:`churnlens.scoring._plan` computes, from the collected statistics."""
    if not stats.events:
        raise InputError(
            SOURCE,
            [
                Problem(
                    column="timestamp",
                    message=f"no event on or before the as-of day {as_of}, nobody to score",
                    fix="give a later --as-of",
                )
            ],
        )
    buyers = stats.buyers
    values = expected_value(buyers["cycle_days"], buyers["rfm_monetary_mean"])
    return _Plan(
        as_of=as_of,
        population=stats.population,
        thresholds=stage_thresholds(buyers["cycle_own_days"], settings),
        value_cuts=value_cuts(values, policy),
        fingerprint=stats.fingerprint,
        events=stats.events,
    )


# -- pass 2: features and scores per bucket ---------------------------------------------


def build_features(
    df: DataFrame,
    as_of: str | date,
    settings: Settings | None = None,
    buckets: int | None = None,
) -> DataFrame:
    """Point-in-time features on Spark, equal to :func:`churnlens.build_features`.

    Parameters
    ----------
    df
        Events with the event-log contract's columns (extra columns are ignored).
    as_of
        The features see every event up to and including this (UTC) day.
    settings
        Feature settings; defaults when ``None``.
    buckets
        How many customer buckets (Python calls); ``spark.sql.shuffle.partitions`` by
        default.

    Returns
    -------
    pyspark.sql.DataFrame
        ``customer_id`` and every column of :func:`churnlens.feature_names` (doubles).
        The log is validated and the population computed (one Spark job) before this
        returns; the features themselves are computed lazily.
    """
    _require()
    settings = settings or Settings()
    as_of = parse_as_of(as_of)
    events = _prepare(df, buckets)
    population = _log_stats(events, as_of, settings).population
    names = feature_names(settings)
    micros = events.micros

    def features(pdf: pd.DataFrame) -> pd.DataFrame:
        table = _bucket_table(pdf, micros, settings)
        frame = local_features(table, as_of, settings, population)
        return frame.reset_index()[["customer_id", *names]]

    schema = "customer_id string, " + ", ".join(f"`{n}` double" for n in names)
    return events.frame.groupBy(BUCKET).applyInPandas(features, schema)


def _as_models(models: ScoringModels | str | Path) -> ScoringModels:
    return models if isinstance(models, ScoringModels) else load_models(models)


def _score(
    df: DataFrame,
    as_of: str | date,
    models: ScoringModels,
    policy: Policy,
    max_contacts: int | None,
    buckets: int | None,
) -> tuple[DataFrame, _Plan, int]:
    if max_contacts is not None and max_contacts < 0:
        raise ValueError("max_contacts must be >= 0")
    as_of = parse_as_of(as_of)
    events = _prepare(df, buckets)
    plan = _plan(_log_stats(events, as_of, models.settings), as_of, models.settings, policy)
    shared = df.sparkSession.sparkContext.broadcast(models)
    micros = events.micros

    def scores(pdf: pd.DataFrame) -> pd.DataFrame:
        models: ScoringModels = shared.value
        table = _bucket_table(pdf, micros, models.settings)
        part = table.hash_partition(0, 1, plan.as_of)  # the events up to the as-of day
        (rows,) = table.con.execute(f"SELECT count(*) FROM {part.name}").fetchone()  # type: ignore[misc]
        if not rows:
            return pd.DataFrame(columns=[c for c in (*SCORE_COLUMNS, *EXTRA_COLUMNS)])
        X, contacts = partition_inputs(part, plan, models, policy)
        frame = score_partition(X, contacts, plan, models, policy, num_threads=1)
        return _part_table(frame, plan, models.version).to_pandas(ignore_metadata=True)

    scored = events.frame.groupBy(BUCKET).applyInPandas(scores, _SCORED_SCHEMA)
    return _rank(scored, policy, max_contacts), plan, events.buckets


def _rank(scored: DataFrame, policy: Policy, max_contacts: int | None) -> DataFrame:
    """The contact budget and ``priority`` over all customers: actions.rank_sql's rules."""
    order = [
        F.col("value_at_risk").desc_nulls_last(),
        F.col("churn_probability").desc_nulls_last(),
        F.col("customer_id").asc_nulls_last(),
    ]
    contacting = policy.contact_actions()
    contact = F.col("action").isin(contacting) if contacting else F.lit(False)
    if max_contacts is not None:
        rank = F.row_number().over(Window.partitionBy(contact).orderBy(*order))
        scored = scored.withColumn("_over", contact & (rank > F.lit(int(max_contacts))))
        over = F.col("_over")
        note = F.array(F.lit(f"over the contact budget of {max_contacts}"))
        scored = scored.select(
            *(c for c in scored.columns if c not in ("action", "action_channel", "rule")),
            F.when(over, F.lit(policy.fallback)).otherwise(F.col("action")).alias("action"),
            F.when(over, F.lit(None)).otherwise(F.col("action_channel")).alias("action_channel"),
            F.when(over, F.lit(BUDGET_RULE)).otherwise(F.col("rule")).alias("rule"),
        ).withColumn("reasons", F.when(over, F.concat("reasons", note)).otherwise(F.col("reasons")))
    priority = F.row_number().over(Window.partitionBy("action").orderBy(*order))
    scored = scored.withColumn("priority", priority.cast("long"))
    return scored.select(*SCORE_COLUMNS, *EXTRA_COLUMNS)


def score(
    df: DataFrame,
    as_of: str | date,
    models: ScoringModels | str | Path,
    policy: Policy | None = None,
    max_contacts: int | None = None,
    buckets: int | None = None,
) -> DataFrame:
    """Score every customer on Spark, equal to :func:`churnlens.scoring.score`'s rows.

    Parameters
    ----------
    df
        Events with the event-log contract's columns.
    models
        Loaded models, or a bundle directory / ``models:/`` URI for
        :func:`~churnlens.model_source.load_models`; sent to executors as a broadcast.
    policy
        The action policy; the default policy when ``None``.
    max_contacts
        Keep only this many contacting actions (highest value at risk first).
    buckets
        How many customer buckets; ``spark.sql.shuffle.partitions`` by default.

    Returns
    -------
    pyspark.sql.DataFrame
        The scores contract columns (``SCORE_COLUMNS`` then ``EXTRA_COLUMNS``),
        ``reasons`` as ``array<string>``. Validation and the plan (one Spark job) run
        before this returns; the scores are computed lazily.
    """
    _require()
    scored, _, _ = _score(df, as_of, _as_models(models), policy or Policy(), max_contacts, buckets)
    return scored


def read_events(spark: SparkSession, path: str | Path) -> DataFrame:
    """An event log file (``.parquet``, a folder of them, ``.csv``/``.csv.gz``) on Spark.

    CSV columns stay text (as the single-machine reader keeps them) for DuckDB to parse.
    """
    _require()
    path = Path(path)
    if not path.exists():
        raise InputError(str(path), [Problem("-", "file not found", fix="check the path")])
    name = path.name.lower()
    if path.is_dir() or name.endswith((".parquet", ".pq")):
        return spark.read.parquet(str(path))
    if re.search(r"\.(csv|txt)(\.gz)?$", name):
        return spark.read.csv(str(path), header=True, escape='"', multiLine=False)
    raise InputError(
        str(path),
        [
            Problem(
                column="-",
                message=f"unknown file type '{path.suffix}' for --engine spark",
                fix="use .csv, .csv.gz or .parquet (or a directory of .parquet files)",
            )
        ],
    )


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
    """Score an event log file on Spark and write the scores file and its manifest.

    The output (``.parquet``, ``.csv``, ``.csv.gz``) is collected to the driver as Arrow
    and written by the single-machine writer: same order (action, priority), same CSV
    form (reasons joined by ``"; "``), a temporary file renamed when complete, and the
    same manifest JSON beside it (with ``"engine": "spark"``). Returns the manifest.
    """
    _require()
    started = time.perf_counter()
    out = check_output_path(out)
    models = _as_models(models)  # fail on a bad model before starting Spark
    policy = policy or Policy()
    spark = spark_session(master, ui=ui)
    events = read_events(spark, events_path)
    scored, plan, count = _score(events, as_of, models, policy, max_contacts, buckets)
    to_arrow = getattr(scored, "toArrow", None)
    ranked: pa.Table = (
        to_arrow() if to_arrow else pa.Table.from_pandas(scored.toPandas(), preserve_index=False)
    )
    con = connect()
    try:
        con.register("_ranked", ranked)
        _write_output(con, "_ranked", out)
        manifest = _manifest(con, plan, models, policy, out, max_contacts, count, started)
    finally:
        con.close()
    manifest.update(engine="spark", spark_master=spark.sparkContext.master)
    _write_manifest(out, manifest)
    return manifest
