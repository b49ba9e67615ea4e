"""Batch scoring in bounded memory: every customer -> risk, stage, segment and action.

``score(events, as_of, out, models)`` runs in three steps:

1. **checks**: the models are loaded and checked before anything else
   (:mod:`churnlens.model_source`), the output path against the inputs;
2. **the one partitioned pass** (:func:`~churnlens.features.aggregation.aggregate_log`,
   one partition per 20 million events by default): each partition's events are
   copied once from the source, checked, and aggregated in DuckDB, the contact profile
   with them; the population statistics (RFM cut points, median cycle) come from all
   partitions' purchase aggregates, and with them the plan: the lifecycle thresholds and
   the expected-value tiers (:class:`ScoringPlan`);
3. **the model pass**: per partition, features (against that whole population, or the
   one given with ``population=``), churn probability and reasons, segment, lifecycle
   stage, reachability and the policy's action, written as a Parquet part (two worker
   threads, one core each); then DuckDB applies the contact budget and ranks
   ``priority`` within each action over all parts (:func:`churnlens.ranking.rank_sql`)
   and the scores file and its manifest replace the earlier pair as one step.

Memory is bounded by the largest partition (plus DuckDB's own, which spills to disk);
the scored parts and DuckDB's spill files live in a temporary folder beside the output
and are removed at the end, whether the run succeeds or not.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from churnlens.actions import Policy, decide, value_cuts
from churnlens.config import Settings
from churnlens.contacts import finish_contacts
from churnlens.drift import DriftCounter, drift_report, model_reference, not_checked
from churnlens.errors import DriftError
from churnlens.events import EventSource, EventTable, connect_for, parse_as_of
from churnlens.events.sql import literal, path_literal
from churnlens.experiments import assign_groups
from churnlens.features.aggregation import LogAggregates, aggregate_log
from churnlens.features.engine import finish_features
from churnlens.features.population import PopulationStats
from churnlens.history import (
    AUTO,
    HISTORY_COLUMNS,
    Previous,
    add_history,
    history_manifest,
    history_table,
    previous_at,
)
from churnlens.lifecycle import StageThresholds, assign_stages, stage_thresholds, stale_as_of
from churnlens.model_source import ScoringModels
from churnlens.models.base import model_class, model_kinds
from churnlens.outputs import check_output_path, output_failure, replace_with_manifest
from churnlens.population_cuts import shared_cuts
from churnlens.ranking import rank_sql, with_ranking
from churnlens.scores_manifest import manifest_of
from churnlens.stakes import add_stakes, implausible_amounts
from churnlens.work_folders import owned_output, remove_work, work_prefix

SCORE_COLUMNS: tuple[str, ...] = (
    "customer_id", "as_of", "churn_probability", "risk_band", "lifecycle_stage",
    "cycle_days", "days_since_purchase", "segment_id", "segment_name", "expected_value",
    "value_if_retained", "value_at_risk", "winback_value", "clv", "uplift", "incremental_value",
    "action", "action_channel",
    "group", "contact", "priority", "reasons", "model_version",
)  # fmt: skip
EXTRA_COLUMNS: tuple[str, ...] = ("silent_on", "lost_on", "value_tier", "rule")

Progress = Callable[[int, int, int], None]  # (partitions done, total, customers so far)
NO_REFERENCE = (
    "the churn model was trained before churnlens kept a training reference: drift was "
    "not checked (retrain to check it)"
)


@dataclass
class ScoreResult:
    """What a scoring run wrote and what it found."""

    path: Path
    manifest_path: Path
    manifest: dict[str, Any]
    seconds: float
    events: EventTable | None = field(repr=False)  # the validated log, with keep_scores
    scores: pd.DataFrame | None = field(default=None, repr=False)


@dataclass(frozen=True)
class ScoringPlan:
    """Everything computed once over the whole log before the model pass."""

    as_of: date
    population: PopulationStats
    population_source: str
    thresholds: StageThresholds
    value_cuts: tuple[float, float]
    fingerprint: str
    events: int
    events_after: int  # after the as-of day: ignored, reported
    notes: tuple[str, ...] = ()  # what the manifest and the CLI should say
    shared: tuple[str, ...] = ()  # cuts taken from the --population scores manifest


def plan_from(
    as_of: date,
    settings: Settings,
    policy: Policy,
    population: PopulationStats,
    buyers: pd.DataFrame,
    fingerprint: str,
    events: int,
    later: int,
    population_source: str = "the scored log",
    value: Any = None,
) -> ScoringPlan:
    """The plan from the whole log's population and its buyers' ``rfm_*`` / ``cycle_*``
    features (:attr:`~churnlens.features.aggregation.LogAggregates.buyers`). The value
    tiers are cut on the buyers' value if retained (the value model's ``retained_value``);
    without a value model every customer is in the low tier."""
    tier_values = np.array([]) if value is None else value.retained_value(buyers)
    return ScoringPlan(
        as_of=as_of,
        population=population,
        population_source=population_source,
        thresholds=stage_thresholds(buyers["cycle_own_days"], settings),
        value_cuts=value_cuts(tier_values, policy),
        fingerprint=fingerprint,
        events=events,
        events_after=later,
        notes=(*stale_as_of(as_of, buyers), *implausible_amounts(buyers["rfm_monetary_mean"])),
    )


def score_partition(
    raw: pd.DataFrame,
    plan: ScoringPlan,
    models: ScoringModels,
    policy: Policy,
    num_threads: int = 1,
    previous: Previous | None = None,
    drift: DriftCounter | None = None,
) -> pd.DataFrame:
    """One partition's scores, stages, segments and actions (unranked) from its raw
    aggregates (:meth:`~churnlens.features.aggregation.LogAggregates.raw`); with
    ``previous``, the history columns (:mod:`churnlens.history`) before the policy decides;
    with ``drift``, the partition is counted into the training reference's bins."""
    X = finish_features(raw, plan.as_of, models.settings, plan.population)
    contacts = finish_contacts(raw, policy.fatigue)
    frame = assign_stages(X, plan.as_of, plan.thresholds, models.settings.lifecycle)
    for kind in model_kinds():  # each model kind adds its columns (or their empty form)
        loaded = models.loaded.get(kind)
        if loaded is not None:
            given = list(loaded.model.score_inputs)
            inputs = X.join(frame[given]) if given else X
            frame = frame.join(loaded.model.predict_columns(inputs, num_threads=num_threads))
        else:
            frame = frame.join(model_class(kind).empty_columns(X.index))
    if drift is not None:
        drift.add(X, frame["churn_probability"].to_numpy(), frame["lifecycle_stage"])
    frame = add_stakes(frame, models.settings)
    if previous is not None:
        frame = add_history(frame, previous)
    frame = decide(frame.join(contacts), policy, plan.value_cuts)
    experiment = models.settings.experiment
    frame["group"] = assign_groups(
        frame.index, frame["action"], policy.contact_actions(), experiment, plan.as_of
    )
    frame.index.name = "customer_id"
    return frame.reset_index()


def part_table(
    frame: pd.DataFrame, plan: ScoringPlan, version: str, history: bool = False
) -> pa.Table:
    """A scored partition as Arrow, in the scores file's columns (``priority`` comes later);
    with ``history``, the history columns too (null without a previous run)."""
    frame = frame.assign(as_of=plan.as_of, model_version=version, priority=0)
    columns = [c for c in (*SCORE_COLUMNS, *EXTRA_COLUMNS) if c not in ("priority", "contact")]
    columns += [c for c in HISTORY_COLUMNS if history and c in frame.columns]
    out = frame[columns].copy()
    for c in ("lifecycle_stage", "risk_band", "value_tier"):
        out[c] = out[c].astype(str)
    table = pa.Table.from_pandas(out, preserve_index=False)
    return history_table(table) if history else table


def write_output(con: Any, relation: str, tmp: Path, out: Path) -> None:
    """Write the ranked scores in ``relation`` to ``tmp`` in the format ``out``'s name
    gives, in action and priority order (see :func:`replace_with_manifest` for how
    ``tmp`` and the manifest replace ``out``)."""
    import duckdb

    have = con.table(relation).columns
    extra = [c for c in HISTORY_COLUMNS if c in have]
    order = ", ".join(f'"{c}"' for c in (*SCORE_COLUMNS, *EXTRA_COLUMNS, *extra))
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
        con.execute(f"COPY ({query}) TO {literal(str(tmp))} ({options})")
    except duckdb.IOException as exc:  # a full disk, mostly: an OSError to the caller
        raise OSError(str(exc)) from None


def score(
    events: EventSource | EventTable,
    as_of: str | date,
    out: str | Path,
    models: ScoringModels,
    policy: Policy | None = None,
    *,
    max_contacts: int | None = None,
    partitions: int | None = None,
    population: PopulationStats | None = None,
    population_source: str | None = None,
    progress: Progress | None = None,
    keep_scores: bool = False,
    previous: str | Path | Previous | None = AUTO,
    fail_on_drift: bool = False,
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
        Contact only this many treated customers, in the policy's ``rank_by`` order
        (incremental value with an uplift model, else value at risk; see
        :func:`churnlens.ranking.rank_sql`).
    partitions
        How many hash partitions; by default one per ``engine.partition_events`` (20M).
    population, population_source
        Score RFM and cycles against this population (recorded in the manifest with its
        source) instead of the scored log's own: a slice of a log scored with the whole
        log's population gets exactly the probabilities it gets within the whole log.
    progress
        Called after each partition with (done, total, customers scored so far).
    keep_scores
        Also return the scores as a DataFrame (for the Python API, reports, small logs).
    previous
        The last run's scores (a path, or read with :func:`churnlens.history.read_previous`)
        for the history columns and the policy's ``risk_change_min``; ``"auto"``: the scores
        file at ``out`` that this run replaces; ``None``: no history.
    fail_on_drift
        Write nothing and raise :class:`DriftError` when drift against the training
        reference reaches an alert (:mod:`churnlens.drift`).

    Raises
    ------
    InputError
        Also when another job holds the output's lock (``<out>.lock``).
    DriftError
        With ``fail_on_drift``, on an alert; the earlier scores at ``out`` are unchanged.
    """
    out = check_output_path(out, inputs=[events, models.uri])
    policy = with_ranking(policy or Policy(), models.uplift)
    if max_contacts is not None and max_contacts < 0:
        raise ValueError("max_contacts must be >= 0")
    as_of = parse_as_of(as_of)
    with owned_output(out):  # one job on out; what a killed one left is finished first
        # the file this run replaces is read now, before the new one is renamed over it
        before, notes = previous_at(previous, out, as_of)
        return _score_locked(
            events,
            as_of,
            out,
            models,
            policy,
            max_contacts,
            partitions,
            (population, population_source),
            progress,
            keep_scores,
            (before, notes, fail_on_drift),
        )


def _score_locked(
    events: EventSource | EventTable,
    as_of: date,
    out: Path,
    models: ScoringModels,
    policy: Policy,
    max_contacts: int | None,
    partitions: int | None,
    population: tuple[PopulationStats | None, str | None],
    progress: Progress | None,
    keep_scores: bool,
    watch: tuple[Previous | None, tuple[str, ...], bool],
) -> ScoreResult:
    started = time.perf_counter()
    previous, history_notes, fail_on_drift = watch
    reference = model_reference(models.loaded["churn"].model)
    drift = DriftCounter(reference) if reference is not None else None
    settings = models.settings
    work = Path(tempfile.mkdtemp(prefix=work_prefix(out.name), dir=out.parent.resolve()))
    con = finished = None
    try:
        con = connect_for(settings, temp_dir=work / "duckdb")
        stages = _TwoPasses(progress)
        given, source = population
        with aggregate_log(
            events,
            as_of,
            settings,
            partitions=partitions,
            per_partition=settings.engine.partition_events,
            contacts=policy.fatigue,
            population=given,
            progress=stages.first,
            con=con,
        ) as log:
            plan = plan_from(
                as_of,
                settings,
                policy,
                log.population,
                log.buyers,
                log.fingerprint,
                log.events,
                log.events_after,
                source or ("given" if given else "the scored log"),
                models.value,
            )
            found = shared_cuts(source, plan.thresholds, plan.value_cuts, models.value_version,
                                policy, settings)  # fmt: skip
            plan = replace(plan, thresholds=found[0], value_cuts=found[1], shared=found[2],
                           notes=(*plan.notes, *found[3]))  # fmt: skip
            scored = work / "scored"
            scored.mkdir()
            _score_parts(log, plan, models, policy, scored, stages.second, (previous, drift))
            table = log.event_table() if keep_scores else None
        parts = path_literal(f"{scored}/*.parquet")
        con.execute(f"CREATE TEMP VIEW _scores AS SELECT * FROM read_parquet({parts})")
        ranked = rank_sql("_scores", con.table("_scores").columns, policy, max_contacts)
        con.execute(f"CREATE TEMP TABLE _ranked AS {ranked}")
        count = len(log.partitions)
        sections = {
            "drift": not_checked(NO_REFERENCE) if drift is None
            else drift_report(drift, settings.drift),
            "history": history_manifest(con, "_ranked", previous) | {"notes": list(history_notes)},
        }  # fmt: skip
        if fail_on_drift and sections["drift"]["level"] == "alert":
            raise DriftError(sections["drift"], settings.drift.top)
        manifest = manifest_of(
            con, plan, models, policy, out, max_contacts, count, started, sections
        )
        manifest_path, manifest = replace_with_manifest(
            out, lambda tmp: write_output(con, "_ranked", tmp, out), manifest
        )
        frame = None
        if keep_scores:
            ranked = con.sql("SELECT * FROM _ranked ORDER BY customer_id").to_arrow_table()
            frame = ranked.to_pandas()  # dates stay dates, as in the file
        finished = True
    finally:  # the connection stays open for the kept event table of a finished run
        remove_work(work, None if finished and keep_scores else con)
    seconds = time.perf_counter() - started
    return ScoreResult(out, manifest_path, manifest, seconds, table, frame)


class _TwoPasses:
    """Progress over the two passes: the aggregation's partitions, then the model's."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.total = 0

    def first(self, done: int, total: int, customers: int) -> None:
        self.total = total
        if self.progress:
            self.progress(done, 2 * total, 0)

    def second(self, done: int, customers: int) -> None:
        if self.progress:
            self.progress(self.total + done, 2 * self.total, customers)


def _score_parts(
    log: LogAggregates,
    plan: ScoringPlan,
    models: ScoringModels,
    policy: Policy,
    scored: Path,
    progress: Callable[[int, int], None],
    watch: tuple[Previous | None, DriftCounter | None],
) -> None:
    """The model pass: this thread fetches each partition's aggregates from DuckDB while
    two workers score the previous ones (LightGBM, numpy, pandas, one core each)."""

    def finish(i: int, raw: pd.DataFrame) -> int:
        if raw.empty:  # more partitions than customers: nobody hashed here
            return 0
        frame = score_partition(raw, plan, models, policy, 1, *watch)
        part = scored / f"part-{i}.parquet"
        try:
            pq.write_table(part_table(frame, plan, models.version, history=True), part)
        except OSError as exc:  # the work folder beside the output: a full disk, mostly
            raise output_failure(part, exc) from None
        return len(frame)

    done = customers = 0
    with ThreadPoolExecutor(max_workers=2) as workers:
        pending: list[Future[int]] = []
        for i in range(len(log.partitions)):
            raw = log.raw(i)
            if len(pending) == 2:
                customers += pending.pop(0).result()
                done += 1
                progress(done, customers)
            pending.append(workers.submit(finish, i, raw))
            del raw
        for future in pending:
            customers += future.result()
            done += 1
            progress(done, customers)
