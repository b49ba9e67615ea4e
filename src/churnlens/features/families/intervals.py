"""gap_*: statistics of the gaps between a customer's contact days."""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnlens.config import Settings
from churnlens.features.base import FeatureContext, FeatureFamily, count, ratio


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
    # gaps are whole days (integers: cheaper to collect for the median than doubles), so
    # these sums are exact in any order: the mean and standard deviation come out the
    # same run after run (avg and stddev_pop over doubles merge in parallel order)
    return [
        "quantile_cont(gap, 0.5) AS gap_median",
        "CAST(sum(CAST(gap AS BIGINT) * gap) AS DOUBLE) AS _gap_sum_sq",
        "CAST(sum(gap) AS DOUBLE) AS _gap_sum",
        "count(gap) AS _gap_n",
        "max(gap) AS gap_max",
        # one gap per contact day: the latest day's is the one of least age
        "arg_min(gap, age) FILTER (WHERE gap IS NOT NULL) AS gap_last",
        "min(age) AS gap_days_since_contact",
    ]


def finish(raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    out = pd.DataFrame(index=raw.index)
    for name in feature_names(ctx.settings):
        if name not in ("gap_mean", "gap_cv", "gap_std"):
            out[name] = raw[name].astype(float)
    n = raw["_gap_n"].astype(float).where(raw["_gap_n"] > 0)
    out["gap_mean"] = mean = raw["_gap_sum"].astype(float) / n
    variance = (raw["_gap_sum_sq"].astype(float) / n - mean * mean).clip(lower=0.0)
    out["gap_std"] = np.sqrt(variance)
    out["gap_cv"] = ratio(out["gap_std"], out["gap_mean"])
    return out[feature_names(ctx.settings)]


FAMILY = FeatureFamily(
    name="gap",
    order=30,
    doc="gap_*: inter-contact intervals",
    names=feature_names,
    finish=finish,
    aggregates={"sequence": sequence_aggregates},
    phrases=(
        (r"gap_days_since_contact", lambda v, m: f"no contact for {count(v, 'day')}"),
        (r"gap_(mean|median)", lambda v, m: f"{count(v, 'day')} between contacts ({m.group(1)})"),
        (r"gap_max", lambda v, m: f"longest silence of {count(v, 'day')}"),
        (r"gap_last", lambda v, m: f"last gap between contacts {count(v, 'day')}"),
        (r"gap_(std|cv)", lambda v, m: "irregular contact rhythm"),
    ),
    missing={"gap_days_since_contact": "never contacted the company"},
)
