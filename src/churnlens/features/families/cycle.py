"""cycle_*: each customer's own repurchase cycle, shrunk toward the population.

A customer's mean interval between purchase days is a noisy estimate when they have
few intervals, so it is combined with the population's median cycle as if the customer
had also shown ``cycle_prior_intervals`` intervals of that length (the posterior mean of
a gamma prior on the purchase rate): with n intervals spanning S days, P the population
median and k the prior weight, cycle = (k P + S) / (k + n). A customer with one interval
is judged mostly by the population, one with twenty mostly by themselves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnlens.config import Settings
from churnlens.features.base import FeatureContext, FeatureFamily, count, counts


def feature_names(settings: Settings) -> list[str]:
    return ["cycle_n_intervals", "cycle_own_days", "cycle_days", "cycle_overdue_ratio"]


def purchase_days_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    # one row per customer and purchase day, with that day's age
    return [
        "count(*) AS _cycle_purchase_days",
        "max(age) - min(age) AS _cycle_span_days",
    ]


def _own(raw: pd.DataFrame) -> tuple[pd.Series, pd.Series, pd.Series]:
    n = (counts(raw, "_cycle_purchase_days") - 1).clip(lower=0)
    span = raw["_cycle_span_days"].astype(float).fillna(0.0)
    return n, span, span / n.where(n > 0)


def population_median(raw: pd.DataFrame) -> float:
    """Median of the customers' own mean intervals (NaN when nobody bought twice)."""
    own = _own(raw)[2].dropna()
    return float(own.median()) if len(own) else float("nan")


def prior_days(settings: Settings, median: float) -> float:
    """The population median cycle, or the configured default when there is none."""
    if np.isnan(median):
        return settings.features.cycle_default_days
    return median


def finish(raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    k = ctx.settings.features.cycle_prior_intervals
    prior = prior_days(ctx.settings, ctx.population.median_interval_days)
    n, span, own = _own(raw)
    out = pd.DataFrame(index=raw.index)
    out["cycle_n_intervals"] = n
    out["cycle_own_days"] = own
    # k = 0 and n = 0 leave nothing to average: fall back on the population.
    shrunk = (k * prior + span) / (k + n).where(k + n > 0)
    out["cycle_days"] = shrunk.fillna(prior)
    out["cycle_overdue_ratio"] = raw["rfm_recency_days"].astype(float) / out["cycle_days"]
    return out[feature_names(ctx.settings)]


FAMILY = FeatureFamily(
    name="cycle",
    order=50,
    doc="cycle_*: the customer's own repurchase cycle",
    names=feature_names,
    finish=finish,
    aggregates={"purchase_days": purchase_days_aggregates},
    phrases=(
        (r"cycle_overdue_ratio", lambda v, m: f"no purchase for {v:.1f}x the usual cycle"),
        (r"cycle_days", lambda v, m: f"usual repurchase cycle of {count(v, 'day')}"),
        (r"cycle_own_days", lambda v, m: f"buys every {count(v, 'day')} on average"),
        (r"cycle_n_intervals", lambda v, m: count(v, "repeat purchase")),
    ),
    missing={"cycle_overdue_ratio": "no purchase yet"},
)
