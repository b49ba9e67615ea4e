"""gap_*: statistics of the gaps between a customer's contact days."""

from __future__ import annotations

import pandas as pd

from churnlens.config import Settings
from churnlens.features.base import FeatureContext, ratio


def feature_names(settings: Settings) -> list[str]:
    return [
        "gap_mean",
        "gap_median",
        "gap_std",
        "gap_cv",
        "gap_max",
        "gap_last",
        "gap_days_since_contact",
    ]


def sequence_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    return [
        "avg(gap) AS gap_mean",
        "quantile_cont(gap, 0.5) AS gap_median",
        "stddev_pop(gap) AS gap_std",
        "max(gap) AS gap_max",
        "arg_max(gap, timestamp) FILTER (WHERE gap IS NOT NULL) AS gap_last",
        "min(age) AS gap_days_since_contact",
    ]


def finish(raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    out = pd.DataFrame(index=raw.index)
    for name in feature_names(ctx.settings):
        if name != "gap_cv":
            out[name] = raw[name].astype(float)
    out["gap_cv"] = ratio(out["gap_std"], out["gap_mean"])
    return out[feature_names(ctx.settings)]
