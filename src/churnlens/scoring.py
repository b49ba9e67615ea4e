"""Batch scoring in bounded memory: every customer -> risk, stage, segment and action.

``score(events, as_of, out, models)`` runs in four steps:

1. **checks**: the models are loaded and checked before anything else
   (:mod:`churnlens.model_source`); the log is validated (its fingerprint goes into the
   manifest);
2. **partitions, DuckDB pass**: customers are split into partitions by a hash of
   ``customer_id`` (one per 20 million events by default); each partition's events are
   streamed from the source (Parquet is read in place, filtered on the hash) into one
   in-memory table, so each customer's events are in exactly one partition; the feature
   families' raw aggregates (kept in DuckDB) and the contact profile are computed;
3. **plan, then the model pass**: the population statistics (RFM cut points, median
   cycle), the lifecycle thresholds and the expected-value tiers come from all the
   partitions' purchase aggregates; then, per partition, features (against that whole
   population), churn probability and reasons, segment, lifecycle stage, reachability
   and the policy's action, written as a Parquet part;
4. **ranking**: DuckDB applies the contact budget and ranks ``priority`` within each
   action over all parts, and writes the scores file to a temporary name that is renamed
   only when complete, with a manifest JSON beside it.

Memory is bounded by the largest partition (plus DuckDB's own, which spills to disk);
the scored parts and DuckDB's spill files live in a temporary folder beside the output
and are removed at the end, whether the run succeeds or not.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnlens import __version__
from churnlens.actions import Policy, decide, rank_sql, value_cuts
from churnlens.config import Settings
from churnlens.contacts import contact_profile
from churnlens.errors import InputError, Problem
from churnlens.events import EventSource, EventTable, connect_for, load_events, parse_as_of
from churnlens.features import build_features
from churnlens.features.base import sql_literal
from churnlens.features.engine import (
    aggregate_events,
    aggregated_buyers,
    finish_features,
    partition_aggregates,
)
from churnlens.features.population import PopulationStats
from churnlens.lifecycle import STAGES, StageThresholds, assign_stages, stage_thresholds
from churnlens.model_source import ScoringModels
from churnlens.outputs import (
    check_output_path,
    output_failure,
    output_lock,
    remove_stale_work,
    replace_with_manifest,
)

SCORE_COLUMNS: tuple[str, ...] = (
    "customer_id", "as_of", "churn_probability", "risk_band", "lifecycle_stage",
    "cycle_days", "days_since_purchase", "segment_id", "segment_name", "expected_value",
    "value_at_risk", "action", "action_channel", "priority", "reasons", "model_version",
)  # fmt: skip
EXTRA_COLUMNS: tuple[str, ...] = ("silent_on", "lost_on", "value_tier", "rule")
YEAR_DAYS = 365.0

Progress = Callable[[int, int, int], None]  # (partitions done, total, customers so far)


@dataclass
class ScoreResult:
    """What a scoring run wrote and what it found."""

    path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    seconds: float
    events: EventTable = field(repr=False)
    scores: pd.DataFrame | None = field(default=None, repr=False)


def expected_value(cycle_days: np.ndarray, monetary_mean: np.ndarray) -> np.ndarray:
    """Expected spend over the next year: purchases a year at the customer's cycle times
    their average order value (0 for customers who never bought or only got refunds)."""
    aov = np.nan_to_num(np.asarray(monetary_mean, dtype=float), nan=0.0).clip(min=0.0)
    return YEAR_DAYS / np.asarray(cycle_days, dtype=float) * aov


@dataclass(frozen=True)
class _Plan:
    """Everything computed once over the whole log before the partitions."""

    as_of: date
    population: PopulationStats
    thresholds: StageThresholds
    value_cuts: tuple[float, float]
    fingerprint: str
    events: int
    events_after: int  # after the as-of day: ignored, reported


def _event_counts(table: EventTable, as_of: date) -> tuple[int, int]:
    """Events on or before ``as_of`` and after it; raises when there is none before."""
    day = f"DATE '{as_of.isoformat()}'"
    events, later = table.con.execute(
        f"SELECT count(*) FILTER (WHERE day <= {day}), count(*) FILTER (WHERE day > {day}) "
        f"FROM {table.name}"
    ).fetchone()  # type: ignore[misc]
    if not events:
        raise InputError(
            table.source,
            [
                Problem(
                    column="timestamp",
                    message=f"no event on or before the as-of day {as_of}, nobody to score",
                    fix="give a later --as-of",
                )
            ],
        )
    return int(events), int(later)


def _plan_from(
    as_of: date,
    settings: Settings,
    policy: Policy,
    population: PopulationStats,
    buyers: pd.DataFrame,
    fingerprint: str,
    events: int,
    later: int,
) -> _Plan:
    """The plan from the whole log's population and buyers' ``rfm_*`` / ``cycle_*``
    features (as :func:`~churnlens.features.engine.buyer_features` gives them)."""
    values = expected_value(buyers["cycle_days"], buyers["rfm_monetary_mean"])
    return _Plan(
        as_of=as_of,
        population=population,
        thresholds=stage_thresholds(buyers["cycle_own_days"], settings),
        value_cuts=value_cuts(values, policy),
        fingerprint=fingerprint,
        events=events,
        events_after=later,
    )


def partition_inputs(
    part: EventTable, plan: _Plan, models: ScoringModels, policy: Policy
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The DuckDB half of a partition: its features and its contact profile."""
    X = build_features(part, plan.as_of, models.settings, plan.population)
    return X, contact_profile(part, plan.as_of, policy.fatigue, X.index)


def score_partition(
    X: pd.DataFrame,
    contacts: pd.DataFrame,
    plan: _Plan,
    models: ScoringModels,
    policy: Policy,
    num_threads: int = 1,
) -> pd.DataFrame:
    """The Python half: scores, stages, segments and actions of a partition (unranked)."""
    probability, reasons = models.churn.score(X, num_threads=num_threads)
    frame = assign_stages(X, plan.as_of, plan.thresholds, models.settings.lifecycle)
    frame["churn_probability"] = probability
    frame["reasons"] = reasons.to_numpy()
    if models.segments is not None:
        ids = models.segments.predict(X)
        frame["segment_id"] = ids.astype("Int64")
        frame["segment_name"] = ids.map(models.segments.segment_names_).astype(object)
    else:
        frame["segment_id"] = pd.array([pd.NA] * len(X), dtype="Int64")
        frame["segment_name"] = None
    frame["expected_value"] = expected_value(X["cycle_days"], X["rfm_monetary_mean"])
    frame["value_at_risk"] = frame["churn_probability"] * frame["expected_value"]
    frame = decide(frame.join(contacts), policy, plan.value_cuts)
    frame.index.name = "customer_id"
    return frame.reset_index()


def _part_table(frame: pd.DataFrame, plan: _Plan, version: str) -> pa.Table:
    frame = frame.assign(as_of=plan.as_of, model_version=version, priority=0)
    columns = [c for c in (*SCORE_COLUMNS, *EXTRA_COLUMNS) if c != "priority"]
    out = frame[columns].copy()
    for c in ("lifecycle_stage", "risk_band", "value_tier"):
        out[c] = out[c].astype(str)
    return pa.Table.from_pandas(out, preserve_index=False)


def write_output(con: Any, relation: str, tmp: Path, out: Path) -> None:
    """Write the ranked scores in ``relation`` to ``tmp`` in the format ``out``'s name
    gives, in action and priority order (see :func:`replace_with_manifest` for how
    ``tmp`` and the manifest replace ``out``)."""
    import duckdb

    order = ", ".join(f'"{c}"' for c in (*SCORE_COLUMNS, *EXTRA_COLUMNS))
    ranked = f"SELECT {order} FROM {relation} ORDER BY action, priority"
    name = out.name.lower()
    if name.endswith(".parquet"):
        options = "FORMAT parquet, COMPRESSION zstd"
        query = ranked
    else:
        compression = ", COMPRESSION gzip" if name.endswith(".gz") else ""
        options = f"FORMAT csv, HEADER true{compression}"
        query = f"SELECT * REPLACE (array_to_string(reasons, '; ') AS reasons) FROM ({ranked})"
    try:
        con.execute(f"COPY ({query}) TO {sql_literal(str(tmp))} ({options})")
    except duckdb.IOException as exc:  # a full disk, mostly: an OSError to the caller
        raise OSError(str(exc)) from None


def _counts(con: Any, relation: str, column: str) -> dict[str, int]:
    rows = con.execute(f"SELECT {column}, count(*) FROM {relation} GROUP BY 1").fetchall()
    return {str(k): int(v) for k, v in sorted(rows, key=lambda r: str(r[0]))}


def score(
    events: EventSource | EventTable,
    as_of: str | date,
    out: str | Path,
    models: ScoringModels,
    policy: Policy | None = None,
    *,
    max_contacts: int | None = None,
    partitions: int | None = None,
    progress: Progress | None = None,
    keep_scores: bool = False,
) -> ScoreResult:
    """Score every customer seen up to ``as_of`` and write the scores file ``out``.

    Parameters
    ----------
    events
        The event log (validated here).
    out
        ``.parquet``, ``.csv`` or ``.csv.gz``; a manifest ``<out>.manifest.json`` is
        written beside it.
    models
        From :func:`churnlens.model_source.load_models`.
    max_contacts
        Keep only this many contacting actions (highest value at risk first).
    partitions
        How many hash partitions; by default one per ``engine.partition_events`` (20M).
    progress
        Called after each partition with (done, total, customers scored so far).
    keep_scores
        Also return the scores as a DataFrame (for the Python API, reports, small logs).

    Raises
    ------
    InputError
        Also when another job holds the output's lock (``<out>.lock``).
    """
    out = check_output_path(out, inputs=[events, models.uri])
    policy = policy or Policy()
    if max_contacts is not None and max_contacts < 0:
        raise ValueError("max_contacts must be >= 0")
    as_of = parse_as_of(as_of)
    with output_lock(out):
        remove_stale_work(out)  # left by a killed run: nobody else holds the lock
        return _score_locked(
            events, as_of, out, models, policy, max_contacts, partitions, progress, keep_scores
        )


def _score_locked(
    events: EventSource | EventTable,
    as_of: date,
    out: Path,
    models: ScoringModels,
    policy: Policy,
    max_contacts: int | None,
    partitions: int | None,
    progress: Progress | None,
    keep_scores: bool,
) -> ScoreResult:
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.work.", dir=out.parent.resolve()))
    try:
        con = connect_for(models.settings, temp_dir=work / "duckdb")
        table = load_events(events, models.settings, con=con)
        n_events, later = _event_counts(table, as_of)
        per_partition = models.settings.engine.partition_events
        count = partitions or max(1, math.ceil(n_events / per_partition))
        scored = work / "scored"
        scored.mkdir()
        plan = _score_partitions(
            table, as_of, (n_events, later), models, policy, count, scored, progress
        )
        con.execute(f"CREATE TEMP VIEW _scores AS SELECT * FROM read_parquet('{scored}/*.parquet')")
        con.execute(f"CREATE TEMP TABLE _ranked AS {rank_sql('_scores', policy, max_contacts)}")
        manifest = _manifest(con, plan, models, policy, out, max_contacts, count, started)
        manifest_path, manifest = replace_with_manifest(
            out, lambda tmp: write_output(con, "_ranked", tmp, out), manifest
        )
        frame = None
        if keep_scores:
            ranked = con.sql("SELECT * FROM _ranked ORDER BY customer_id").to_arrow_table()
            frame = ranked.to_pandas()  # dates stay dates, as in the file
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ScoreResult(out, manifest_path, manifest, time.perf_counter() - started, table, frame)


def _score_partitions(
    table: EventTable,
    as_of: date,
    counts: tuple[int, int],
    models: ScoringModels,
    policy: Policy,
    count: int,
    scored: Path,
    progress: Progress | None,
) -> _Plan:
    """Score every partition into a Parquet part under ``scored``; returns the plan.

    Two passes over the partitions:

    1. DuckDB: each partition's events are streamed from the source; the families' raw
       aggregates (kept in DuckDB) and the contact profile are computed from them;
    2. the plan (population statistics, stage thresholds, value tiers) comes from the
       purchase aggregates of all partitions, so the log is not read again for it; then
       the main thread finishes each partition's features while two worker threads
       score the previous ones (LightGBM, numpy, pandas, one core each: DuckDB is done).

    Progress counts both passes (``2 * count`` steps).
    """
    con, settings = table.con, models.settings
    raws: list[tuple[str, pd.DataFrame]] = []
    done = 0
    try:
        for i in range(count):
            part = table.hash_partition(i, count, as_of)
            raw = f"{table.name}_raw_{i}"
            aggregate_events(part, as_of, raw)
            ids = con.execute(f"SELECT customer_id FROM {raw} ORDER BY customer_id").df()
            customers = pd.Index(ids["customer_id"].astype(str), name="customer_id")
            if len(customers):
                raws.append((raw, contact_profile(part, as_of, policy.fatigue, customers)))
            else:
                con.execute(f"DROP TABLE {raw}")
            con.execute(f"DROP TABLE {part.name}")
            if progress:
                progress(i + 1, 2 * count, 0)
        names = [raw for raw, _ in raws]
        population, buyers = aggregated_buyers(con, names, as_of, settings)
        fingerprint = table.fingerprint()
        plan = _plan_from(as_of, settings, policy, population, buyers, fingerprint, *counts)

        def finish(i: int, X: pd.DataFrame, contacts: pd.DataFrame) -> int:
            frame = score_partition(X, contacts, plan, models, policy, num_threads=1)
            part = scored / f"part-{i}.parquet"
            try:
                pq.write_table(_part_table(frame, plan, models.version), part)
            except OSError as exc:  # the work folder beside the output: a full disk, mostly
                raise output_failure(part, exc) from None
            return len(frame)

        # two workers, one core each: the model work is mostly single-threaded
        with ThreadPoolExecutor(max_workers=2) as workers:
            pending: list[Future[int]] = []
            for i, (raw, contacts) in enumerate(raws):
                X = finish_features(partition_aggregates(con, raw), as_of, settings, population)
                con.execute(f"DROP TABLE {raw}")
                if len(pending) == 2:
                    done += pending.pop(0).result()
                    if progress:
                        progress(count + i - 1, 2 * count, done)
                pending.append(workers.submit(finish, i, X, contacts))
                del X, contacts
            for future in pending:
                done += future.result()
            if progress:
                progress(2 * count, 2 * count, done)
        return plan
    finally:
        for raw, _ in raws:
            con.execute(f"DROP TABLE IF EXISTS {raw}")


def _manifest(
    con: Any,
    plan: _Plan,
    models: ScoringModels,
    policy: Policy,
    out: Path,
    max_contacts: int | None,
    partitions: int,
    started: float,
) -> dict[str, Any]:
    (rows, value_at_risk) = con.execute(
        "SELECT count(*), sum(value_at_risk) FROM _ranked"
    ).fetchone()
    stages = _counts(con, "_ranked", "lifecycle_stage")
    return {
        "kind": "scores",
        "created": dt.datetime.now(dt.UTC).isoformat(),
        "churnlens": __version__,
        "as_of": plan.as_of.isoformat(),
        "output": out.name,
        "rows": int(rows),
        "model_version": models.version,
        "model_uri": models.uri,
        "model_trained_as_of": models.trained_as_of,
        "segments_version": models.segments_version,
        "input_fingerprint": plan.fingerprint,
        "events_scored": plan.events,
        "events_after_as_of_ignored": plan.events_after,
        "partitions": partitions,
        "max_contacts": max_contacts,
        "stages": {s: stages.get(s, 0) for s in STAGES},
        "actions": _counts(con, "_ranked", "action"),
        "value_at_risk": float(value_at_risk or 0.0),
        "value_tier_cuts": [v if math.isfinite(v) else None for v in plan.value_cuts],
        "stage_thresholds_days": list(plan.thresholds.days),
        "policy": policy.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - started, 3),
    }
