"""The scores manifest: what a scoring run wrote, with what, and what it found.

:func:`manifest_of` describes a run from its ranked scores (DuckDB's ``_ranked``): the
models and their versions, the input's fingerprint, customers per stage and action, the
value at risk, the experiment design, the population and the policy used, and the
sections the run adds (``drift`` against training, ``history`` since the last run).
"""

from __future__ import annotations

import datetime as dt
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnlens import __version__
from churnlens.actions import Policy
from churnlens.experiments import design, design_sql
from churnlens.lifecycle import STAGES
from churnlens.model_source import ScoringModels

if TYPE_CHECKING:
    from churnlens.scoring import ScoringPlan


def counts(con: Any, relation: str, column: str) -> dict[str, int]:
    rows = con.execute(f"SELECT {column}, count(*) FROM {relation} GROUP BY 1").fetchall()
    return {str(k): int(v) for k, v in sorted(rows, key=lambda r: str(r[0]))}


def manifest_of(
    con: Any,
    plan: ScoringPlan,
    models: ScoringModels,
    policy: Policy,
    out: Path,
    max_contacts: int | None,
    partitions: int,
    started: float,
    sections: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The scores manifest of a run, from its ranked scores (the relation ``_ranked``),
    with the run's further ``sections`` (``drift``, ``history``)."""
    (rows, value_at_risk, winback) = con.execute(
        "SELECT count(*), sum(value_at_risk), sum(winback_value) FROM _ranked"
    ).fetchone()
    stages = counts(con, "_ranked", "lifecycle_stage")
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
        "value_version": models.value_version,
        "value_method": None if models.value is None else models.value.method_,
        "uplift_version": models.uplift_version,
        "models_signed": models.signed,
        "rank_by": policy.rank_by,
        "input_fingerprint": plan.fingerprint,
        "events_scored": plan.events,
        "events_after_as_of_ignored": plan.events_after,
        "partitions": partitions,
        "max_contacts": max_contacts,
        "notes": [
            *models.notes,
            *plan.notes,
            *policy.notes(models.settings.features.channels, models.segments),
        ],
        "experiment": design(
            con.execute(design_sql("_ranked")).df(), models.settings.experiment, plan.as_of
        ),
        "horizon_days": models.settings.training.horizon_days,
        "stages": {s: stages.get(s, 0) for s in STAGES},
        "actions": counts(con, "_ranked", "action"),
        "value_at_risk": float(value_at_risk or 0.0),
        "winback_value": float(winback or 0.0),
        "value_tier_cuts": [v if math.isfinite(v) else None for v in plan.value_cuts],
        "population": {
            "source": plan.population_source,
            "statistics": plan.population.to_dict(),
            "shared": list(plan.shared),  # cuts taken from its scores manifest
        },
        "stage_thresholds_days": list(plan.thresholds.days),
        "stage_threshold_percentiles": list(plan.thresholds.percentiles),
        "stage_threshold_buyers": plan.thresholds.buyers,
        "policy": policy.model_dump(mode="json"),
        **(sections or {}),
        "seconds": round(time.perf_counter() - started, 3),
    }
