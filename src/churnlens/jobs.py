"""The nightly scoring job: score every customer, write the report, record the run.

:func:`score_job` is what ``churnlens score`` runs: :func:`churnlens.scoring.score`, then
the analysts' HTML report (:mod:`churnlens.report`, with retention KPIs from the same
validated log) and an MLflow run holding the manifest, the counts per stage and action
and the report. :func:`report_from_file` is ``churnlens report``: the same page for a
scores file written earlier.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from churnlens.actions import Policy, load_policy
from churnlens.campaigns import check_customers, scoring_day
from churnlens.config import Settings
from churnlens.drift import drift_metrics
from churnlens.events import EventSource, EventTable, check_source, load_events, parse_as_of
from churnlens.features.population import PopulationStats, resolve_population
from churnlens.history import AUTO, Previous, history_metrics, read_previous
from churnlens.model_source import ScoringModels, load_models
from churnlens.outputs import check_output_path
from churnlens.ranking import with_ranking
from churnlens.report import build_report, write_report
from churnlens.retention import cohort_matrix, monthly_kpis
from churnlens.scores_file import read_scores_file
from churnlens.scoring import SCORE_COLUMNS, Progress, ScoreResult, score


def score_job(
    events: EventSource,
    as_of: str,
    out: str | Path,
    models: ScoringModels,
    policy: Policy | None = None,
    *,
    max_contacts: int | None = None,
    partitions: int | None = None,
    population: PopulationStats | str | Path | None = None,
    population_source: str | None = None,
    report: str | Path | None = None,
    track: bool = False,
    progress: Progress | None = None,
    previous: str | Path | Previous | None = AUTO,
    fail_on_drift: bool = False,
) -> ScoreResult:
    """Score, then write the report (``report``) and record the run (``track``).

    The scores file is complete before the report and the run are made, so a failing
    tracking store (:class:`~churnlens.errors.TrackingError`) never costs the scores.
    ``population`` may be statistics or a features / scores manifest path.
    """
    started = time.time()
    population, population_source = resolve_population(population, population_source, as_of)
    if report is not None:
        report = check_output_path(report, suffixes=(".html",), inputs=[events, out, models.uri])
    publish = report is not None or track
    result = score(
        events,
        as_of,
        out,
        models,
        policy,
        max_contacts=max_contacts,
        partitions=partitions,
        population=population,
        population_source=population_source,
        progress=progress,
        keep_scores=publish,
        previous=previous,
        fail_on_drift=fail_on_drift,
    )
    if publish and result.scores is not None:
        html = build_scores_report(
            result.scores, result.events, result.manifest, models.settings.report.currency
        )
        if report is not None:
            write_report(html, report, like=result.path)
        if track:
            _track(result, models.settings, html, started)
    return result


@dataclass(frozen=True)
class ScoringRequest:
    """What ``churnlens score`` asks for, as given on the command line (paths and names)."""

    events: str | Path
    as_of: str
    out: str | Path
    model: str | None = None  # bundle folder or models:/ URI; None: the registry champion
    segments: str | None = "auto"  # bundle, URI, "auto" or None
    value: str | None = "auto"  # bundle, URI, "auto" or None
    uplift: str | None = "auto"  # bundle, URI, "auto" or None
    rank_by: str = "auto"  # auto, incremental_value or value_at_risk
    policy: str | Path | None = None
    config: str | Path | None = None
    population: str | Path | None = None
    report: str | Path | None = None
    max_contacts: int | None = None
    partitions: int | None = None
    track: bool = True
    engine: str = "duckdb"
    master: str | None = None  # None: spark-submit's (or spark-defaults'), else local[2]
    archive: str | Path | None = None  # an environment archive for Spark's executors
    previous: str | Path | None = AUTO  # a scores file; "auto": the one at `out`; None: none
    fail_on_drift: bool = False


def score_command(
    request: ScoringRequest, settings: Settings, progress: Progress | None = None
) -> ScoreResult | dict[str, Any]:
    """``churnlens score``: every check that can fail before any work (outputs against
    inputs, the population manifest, the policy, the models), then the job on the chosen
    engine. Returns the :class:`ScoreResult` (DuckDB) or the manifest (Spark)."""
    r = request
    inputs = [r.events, r.model, r.segments, r.value, r.uplift, r.policy, r.config]
    inputs.append(r.population)
    check_source(r.events)  # the paths and the day first: loading models takes seconds
    day = parse_as_of(r.as_of)
    if r.engine == "spark":
        from churnlens.spark_output import check_dataset_path
        from churnlens.spark_session import session_settings

        check_dataset_path(r.out, inputs)
        session_settings(r.master, archive=r.archive)  # a bad master or archive: now
    else:
        check_output_path(r.out, inputs=inputs)
    if r.report is not None:
        check_output_path(r.report, (".html",), inputs=[*inputs, r.out])
    population = resolve_population(r.population, as_of=day)
    previous = r.previous
    if previous is not None and str(previous) != AUTO and r.engine != "spark":
        previous = read_previous(previous, day.isoformat())
    models = load_models(r.model, r.segments, settings, r.value, r.uplift)
    rules = with_ranking(load_policy(r.policy), models.uplift, r.rank_by)
    if r.engine == "spark":
        from churnlens.spark_output import score_to_file

        return score_to_file(
            r.events, r.as_of, r.out, models, rules, r.max_contacts, r.master, r.partitions,
            archive=r.archive,
        )  # fmt: skip
    return score_job(
        r.events,
        r.as_of,
        r.out,
        models,
        rules,
        max_contacts=r.max_contacts,
        partitions=r.partitions,
        population=population[0],
        population_source=population[1],
        report=r.report,
        track=r.track,
        progress=progress,
        previous=previous,
        fail_on_drift=r.fail_on_drift,
    )


def build_scores_report(
    scores: pd.DataFrame,
    events: EventSource | EventTable,
    manifest: dict[str, Any] | None,
    currency: str = "",
) -> str:
    """The analysts' report of a scores frame, with retention KPIs from the event log."""
    table = load_events(events)
    as_of = (manifest or {}).get("as_of") or pd.to_datetime(scores["as_of"]).max().date()
    day = parse_as_of(as_of)
    return build_report(
        scores,
        kpis=monthly_kpis(table, day),
        cohorts=cohort_matrix(table, day),
        manifest=manifest,
        currency=currency,
    )


def report_from_file(
    scores_path: str | Path,
    events: EventSource,
    out: str | Path,
    settings: Settings | None = None,
) -> Path:
    """``churnlens report``: the HTML report of a scores file (and its manifest)."""
    out = check_output_path(out, suffixes=(".html",), inputs=[scores_path, events])
    # files of earlier versions have no groups
    earlier = tuple(c for c in SCORE_COLUMNS if c not in ("group", "contact"))
    scores, manifest = read_scores_file(scores_path, earlier)
    table = load_events(events, settings)
    # the log the scores were computed from (grown since, if you like): not another one
    check_customers(table, scores, scoring_day(scores, str(scores_path)), str(scores_path))
    currency = (settings or Settings()).report.currency
    html = build_scores_report(scores, table, manifest, currency)
    return write_report(html, out, like=scores_path)


def _track(result: ScoreResult, settings: Settings, html: str, started: float) -> None:
    """An MLflow run for the scoring job: params, counts, manifest and report."""
    from churnlens.tracking import RunContent, record_run

    manifest = result.manifest
    keys = ("as_of", "model_version", "model_uri", "segments_version", "rows", "partitions")
    params = {k: manifest[k] for k in (*keys, "max_contacts", "output")}
    tags = {"kind": "score", "data_fingerprint": manifest["input_fingerprint"]}
    metrics = {f"customers_{k}": v for k, v in manifest["stages"].items()}
    metrics |= {f"action_{k}": v for k, v in manifest["actions"].items()}
    metrics |= {"value_at_risk": manifest["value_at_risk"], "seconds": result.seconds}
    metrics |= drift_metrics(manifest.get("drift") or {}) | history_metrics(manifest)
    content = RunContent(
        metrics=metrics,
        dicts={"scores/manifest.json": manifest},
        texts={"report/report.html": html},
    )
    kept = f"the scores were written to {result.path}"
    name = f"score-{manifest['as_of']}"
    record_run(settings, name, params, tags, content, kept=kept, stage="scoring", started=started)
