"""cycle_*: each customer's own repurchase cycle, shrunk toward the population.

A customer's typical interval between purchase days is averaged in log space (intervals
are skewed) and pulled toward the population median interval with the weight of
``cycle_prior_intervals`` intervals, so a customer with one interval is judged mostly by
the population and a customer with twenty mostly by themselves. On CDNOW the raw ratio
days-since-purchase / own-interval ranks churners worse than plain recency; the shrunk
ratio does not (see tests/test_features_cdnow.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnlens.config import Settings
from churnlens.features.base import PURCHASE, FeatureContext, counts

PURCHASE_INTERVALS = f"""
    WITH purchase_days AS (
        SELECT DISTINCT customer_id, day FROM ev WHERE {PURCHASE}
    )
    SELECT customer_id,
           day - lag(day) OVER (PARTITION BY customer_id ORDER BY day) AS interval_days
    FROM purchase_days
"""


def feature_names(settings: Settings) -> list[str]:
    return ["cycle_n_intervals", "cycle_own_days", "cycle_days", "cycle_overdue_ratio"]


def sql(settings: Settings) -> str:
    return f"""
        SELECT customer_id,
               count(interval_days) AS cycle_n_intervals,
               avg(ln(interval_days)) AS _cycle_mean_log
        FROM ({PURCHASE_INTERVALS}) GROUP BY customer_id
    """


def prior_days(settings: Settings, median: float) -> float:
    """The population median interval, or the configured default when there is none."""
    if np.isnan(median):
        return settings.features.cycle_default_days
    return median


def finish(raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    k = ctx.settings.features.cycle_prior_intervals
    prior = np.log(prior_days(ctx.settings, ctx.population.median_interval_days))
    n = counts(raw, "cycle_n_intervals")
    mean_log = raw["_cycle_mean_log"].astype(float)
    shrunk = (n * mean_log.fillna(0.0) + k * prior) / (n + k)
    out = pd.DataFrame(index=raw.index)
    out["cycle_n_intervals"] = n
    out["cycle_own_days"] = np.exp(mean_log)
    # k = 0 and n = 0 leave nothing to average: fall back on the population.
    out["cycle_days"] = np.exp(shrunk.where(n + k > 0, prior))
    out["cycle_overdue_ratio"] = raw["rfm_recency_days"].astype(float) / out["cycle_days"]
    return out[feature_names(ctx.settings)]
