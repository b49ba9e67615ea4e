"""``churnlens outcomes``: a scoring run's campaign measured once its horizon has passed.

:func:`outcomes_job` reads a scores file with its groups (written by ``churnlens score``),
checks that the event log reaches the end of the window ``(T, T + H]`` (``H``: the scoring
model's horizon, from the scores manifest, unless given), measures every customer's
purchases in the window, compares treatment and control per action and per lifecycle
stage within each action (:mod:`churnlens.outcomes`), and writes the table (CSV or JSON,
with a manifest), the HTML report (:mod:`churnlens.outcomes_report`) and an MLflow run
``outcomes-<as-of>``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from churnlens import __version__
from churnlens.config import Settings
from churnlens.errors import InputError, Problem
from churnlens.events import EventSource, EventTable, days_after, load_events, parse_as_of
from churnlens.events.sql import date_literal
from churnlens.labels import log_span
from churnlens.outcomes import DETAIL_COLUMNS, OUTCOME_COLUMNS, measure
from churnlens.outputs import atomic_path, check_output_path, publish_mode, replace_with_manifest
from churnlens.scores_file import read_scores_file
from churnlens.work_folders import owned_output

NEEDED = ("customer_id", "as_of", "action", "lifecycle_stage", "group", "contact")
ARMS = ("treatment", "control")


@dataclass
class OutcomesResult:
    """What ``churnlens outcomes`` measured and wrote."""

    path: Path
    table: pd.DataFrame  # one row per action, then "all"
    stages: pd.DataFrame  # per action and lifecycle stage
    manifest: dict[str, Any]
    report: Path | None = None
    customers: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)


def experiment_rows(scores: pd.DataFrame) -> pd.DataFrame:
    """The rows of a campaign's experiment: the contacted (treatment) and the controls."""
    return scores[(scores["group"] == "control") | scores["contact"].astype(bool)]


def window_outcomes(
    table: EventTable, scores: pd.DataFrame, as_of: date, horizon_days: int
) -> pd.DataFrame:
    """Per customer of ``scores`` (``customer_id`` and any other columns, kept): purchase
    events, orders (purchases of a positive amount) and revenue (net of refunds) in
    ``(as_of, as_of + horizon_days]``, then ``retained`` (a purchase event) and
    ``repeat`` (two orders or more)."""
    end = days_after(as_of, horizon_days, "--horizon-days")
    window = table.con.execute(
        f"SELECT customer_id, count(*) AS purchases, "
        f"count(*) FILTER (WHERE amount > 0) AS orders, "
        f"CAST(sum(CAST(coalesce(amount, 0) AS DECIMAL(38, 10))) AS DOUBLE) AS revenue "
        f"FROM {table.name} WHERE role = 'purchase' AND day > {date_literal(as_of)} "
        f"AND day <= {date_literal(end)} GROUP BY customer_id"
    ).df()
    window["customer_id"] = window["customer_id"].astype(str)
    out = scores.assign(customer_id=scores["customer_id"].astype(str)).merge(
        window, on="customer_id", how="left"
    )
    for column in ("purchases", "orders", "revenue"):
        out[column] = out[column].fillna(0)
    out["retained"] = out["purchases"] > 0
    out["repeat"] = out["orders"] >= 2
    return out


def check_customers(table: EventTable, scores: pd.DataFrame, as_of: date, source: str) -> None:
    """:class:`InputError` when customers of ``scores`` have no event up to ``as_of`` in
    the log: scores of another log (or ids changed since), whose outcomes would all read
    as "did not buy"."""
    scored_ids = scores[["customer_id"]].astype({"customer_id": str}).drop_duplicates()
    # only the absent ids come back (DuckDB reads the frame by its name: a replacement scan)
    absent = table.con.execute(
        f"SELECT customer_id FROM scored_ids ANTI JOIN (SELECT DISTINCT CAST(customer_id AS "
        f"VARCHAR) AS customer_id FROM {table.name} WHERE day <= {date_literal(as_of)}) "
        "USING (customer_id) ORDER BY customer_id"
    ).df()["customer_id"]
    if len(absent):
        what = (
            f"{len(absent):,} of the {len(scored_ids):,} scored customers have no "
            f"event on or before {as_of} in the event log: these scores are not of this log"
        )
        fix = "give the event log the scores were computed from (grown since, if you like)"
        raise InputError(source, [Problem("customer_id", what, len(absent),
                                          tuple(absent.head(3)), fix)])  # fmt: skip


def check_window(table: EventTable, source: str, as_of: date, horizon_days: int) -> date:
    """The window's last day; :class:`InputError` when the log ends before it."""
    end = days_after(as_of, horizon_days, "--horizon-days")
    _, last = log_span(table)
    if last is None or last < end:
        ends = "has no events" if last is None else f"ends on {last}"
        raise InputError(
            source,
            [
                Problem(
                    "-",
                    f"the log {ends}; the outcomes of the campaign of {as_of} over "
                    f"{horizon_days} days need events up to {end}",
                    fix=f"measure on or after {end + timedelta(days=1)} with the log up to "
                    f"{end}, or give a shorter --horizon-days",
                )
            ],
        )
    return end


def outcomes_job(
    scores_path: str | Path,
    events: EventSource | EventTable,
    out: str | Path,
    settings: Settings | None = None,
    *,
    horizon_days: int | None = None,
    report: str | Path | None = None,
    track: bool = False,
) -> OutcomesResult:
    """Measure a scoring run's campaign (see the module docstring)."""
    started = time.perf_counter()
    settings = settings or Settings()
    inputs = [scores_path, events]
    out = check_output_path(out, suffixes=(".csv", ".json"), inputs=inputs)
    if report is not None:
        report = check_output_path(report, suffixes=(".html",), inputs=[*inputs, out])
    scores, scored = read_scores_file(scores_path, NEEDED)
    scored = scored or {}
    as_of = scoring_day(scores, str(scores_path))
    horizon = int(horizon_days or scored.get("horizon_days") or settings.training.horizon_days)
    table = load_events(events, settings)
    end = check_window(table, str(events), as_of, horizon)
    arms = experiment_rows(scores)[list(NEEDED)]
    check_customers(table, arms, as_of, str(scores_path))
    customers = window_outcomes(table, arms, as_of, horizon)
    costs = settings.experiment.costs
    result_table, stages = measure(customers, costs)
    manifest = {
        "kind": "outcomes",
        "churnlens": __version__,
        "scores": Path(scores_path).name,
        "scores_sha256": scored.get("output_sha256"),
        "experiment": scored.get("experiment"),
        "as_of": as_of.isoformat(),
        "horizon_days": horizon,
        "window": [(as_of + timedelta(days=1)).isoformat(), end.isoformat()],
        "input_fingerprint": table.fingerprint(until=end),
        "customers": {g: int((customers["group"] == g).sum()) for g in ARMS},
        "costs": dict(costs),
        "methods": {
            "retention": "Newcombe hybrid-score interval, Agresti-Caffo test (statsmodels)",
            "revenue": "Welch interval and t test (statsmodels)",
            "all": "actions stratified, weighted by treated customers, normal interval",
            "mde": "80% power, two-sided 5%, control retention",
        },
        "stages": _records(stages),
        "seconds": round(time.perf_counter() - started, 3),
    }
    result = OutcomesResult(out, result_table, stages, manifest, customers=customers)
    html = None
    if report is not None or track:  # before anything is written: a failure writes nothing
        from churnlens.outcomes_report import build_outcomes_report

        html = build_outcomes_report(result, settings.report.currency)
    with owned_output(out):  # one job on out; what a killed one left is finished first
        _, result.manifest = replace_with_manifest(
            out, lambda tmp: _write_table(result_table, tmp, out), manifest
        )
    if report is not None:
        with atomic_path(Path(report), publish_mode(out)) as tmp:
            tmp.write_text(html or "", encoding="utf-8")
        result.report = Path(report)
    if track:
        _track(result, settings, html or "")
    return result


def scoring_day(scores: pd.DataFrame, source: str) -> date:
    """The one scoring day of a scores file; :class:`InputError` when it holds several."""
    days = pd.Series(scores["as_of"].astype(str).unique())
    if len(days) != 1:
        shown = ", ".join(days.head(3))
        raise InputError(
            source,
            [Problem("as_of", f"{len(days)} scoring days ({shown})", fix="give one scoring run")],
        )
    return parse_as_of(str(days.iloc[0])[:10])


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(frame.to_json(orient="records"))


def _write_table(table: pd.DataFrame, tmp: Path, out: Path) -> None:
    if out.suffix.lower() == ".json":
        tmp.write_text(json.dumps(_records(table), indent=2) + "\n", encoding="utf-8")
    else:
        table.to_csv(tmp, index=False)


def _track(result: OutcomesResult, settings: Settings, html: str) -> None:
    """An MLflow run ``outcomes-<as-of>``: per-action metrics, the tables and the report."""
    from churnlens.tracking import RunContent, record_run

    m = result.manifest
    metrics: dict[str, float] = {}
    for row in result.table.to_dict(orient="records"):
        for column in (*OUTCOME_COLUMNS[1:], "mde", "cost_per_incremental_customer"):
            value = row.get(column)
            if value is not None and value == value:
                metrics[f"{row['action']}.{column}"] = float(value)
    params = {"as_of": m["as_of"], "horizon_days": m["horizon_days"], "scores": m["scores"]}
    params["experiment"] = (m.get("experiment") or {}).get("name")
    tags = {"kind": "outcomes", "data_fingerprint": m["input_fingerprint"]}
    content = RunContent(
        metrics=metrics,
        tables={"outcomes/actions.json": result.table, "outcomes/stages.json": result.stages},
        dicts={"outcomes/manifest.json": m},
        texts={"outcomes/report.html": html},
    )
    kept = f"the outcomes were written to {result.path}"
    record_run(
        settings, f"outcomes-{m['as_of']}", params, tags, content, kept=kept, stage="scoring"
    )


__all__ = [
    "DETAIL_COLUMNS",
    "OUTCOME_COLUMNS",
    "OutcomesResult",
    "experiment_rows",
    "outcomes_job",
    "scoring_day",
]
