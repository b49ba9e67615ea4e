"""The whole log's stage thresholds and value tiers for a slice scored with ``--population``.

A slice of customers scored against the whole log's population statistics gets exactly
the features and churn probabilities it gets within the whole log
(:mod:`churnlens.features.population`). Two more things are cut on the population at
scoring time: the day counts that end the one-time buyers' stages (percentiles of the
repeat buyers' own cycles, :func:`~churnlens.lifecycle.stage_thresholds`) and where the
medium and high value tiers start (quantiles of the value if retained,
:func:`~churnlens.actions.value_cuts`). Cut on a slice of 200 customers they differ from
the whole log's, and so do the tiers, stages and actions of many of them.

A scores manifest records both (``stage_thresholds_days``, ``value_tier_cuts``), so when
``--population`` is the manifest of a ``score`` run of the whole log, the slice takes them
from it, provided they mean the same thing here: the stage thresholds when the lifecycle
percentiles are the same, the value cuts when the value model version and the policy's
tier quantiles are. Otherwise (a ``features`` manifest, another value model) the slice's
own are used and a note says which and why.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from churnlens.actions import Policy
from churnlens.config import Settings
from churnlens.lifecycle import StageThresholds

FIX = "give the manifest of a scores file of the whole log as of the same day"


def shared_cuts(
    source: str | None,
    thresholds: StageThresholds,
    value_cuts: tuple[float, float],
    value_version: str | None,
    policy: Policy,
    settings: Settings,
) -> tuple[StageThresholds, tuple[float, float], tuple[str, ...], tuple[str, ...]]:
    """``(thresholds, value_cuts, shared, notes)``: the population manifest's stage
    thresholds and value cuts where they apply (see the module docstring), else the ones
    given (the slice's own); ``shared`` names what was taken from the manifest, ``notes``
    what was not and why. Without a population manifest (``source`` not a file), all is
    returned as given."""
    if not source or not Path(source).is_file():
        return thresholds, value_cuts, (), ()
    try:
        data = json.loads(Path(source).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = None  # load_population has read it already: it changed since
    data = data if isinstance(data, dict) else {}
    shared: list[str] = []
    notes: list[str] = []
    percentiles = list(settings.lifecycle.one_time_percentiles)
    days = data.get("stage_thresholds_days")
    if _numbers(days, 3) and data.get("stage_threshold_percentiles") == percentiles:
        thresholds = StageThresholds(
            days=tuple(float(d) for d in days),  # type: ignore[arg-type]
            percentiles=tuple(percentiles),  # type: ignore[arg-type]
            buyers=int(data.get("stage_threshold_buyers") or 0),
        )
        shared.append("stage_thresholds")
    else:
        why = (
            "it records none (a features manifest, or a scores file of an earlier churnlens)"
            if days is None
            else "its lifecycle percentiles differ from this run's"
        )
        notes.append(
            f"the one-time buyers' stage thresholds are cut on the scored customers, not "
            f"taken from the population {source}: {why}; {FIX}"
        )
    cuts = data.get("value_tier_cuts")
    tiers = policy.value_tiers.model_dump(mode="json")
    same_model = data.get("value_version") == value_version
    same_tiers = (data.get("policy") or {}).get("value_tiers") == tiers
    if value_version is None:
        pass  # no value model: every customer is in the low tier, wherever the cuts are
    elif _numbers(cuts, 2, none_ok=True) and same_model and same_tiers:
        value_cuts = tuple(math.inf if v is None else float(v) for v in cuts)  # type: ignore[assignment]
        shared.append("value_tier_cuts")
    else:
        why = (
            "it records none (a features manifest)"
            if cuts is None
            else "it was scored with another value model or other value-tier quantiles"
        )
        notes.append(
            f"the value tiers are cut on the scored customers, not taken from the population "
            f"{source}: {why}; {FIX} and the same models and policy"
        )
    return thresholds, value_cuts, tuple(shared), tuple(notes)


def _numbers(values: Any, count: int, none_ok: bool = False) -> bool:
    """``values`` is a list of ``count`` finite numbers (or nulls, with ``none_ok``)."""
    if not isinstance(values, list) or len(values) != count:
        return False
    return all(
        (v is None and none_ok)
        or (isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v))
        for v in values
    )
