"""rfm_*: recency, frequency and monetary value, with 1-5 quintile scores."""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnlens.config import Settings
from churnlens.features.base import FeatureContext, FeatureFamily, count, counts, ratio
from churnlens.features.population import quintile_score


def feature_names(settings: Settings) -> list[str]:
    return [
        "rfm_has_purchase",
        "rfm_recency_days",
        "rfm_frequency",
        "rfm_monetary_total",
        "rfm_monetary_mean",
        "rfm_tenure_days",
        "rfm_r_score",
        "rfm_f_score",
        "rfm_m_score",
        "rfm_cell",
    ]


def purchase_days_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    return [
        "min(age) AS rfm_recency_days",
        "CAST(sum(n) AS BIGINT) AS rfm_frequency",
        # summed as decimals (exact, the same in any order), handed on as a double
        "CAST(sum(amount) AS DOUBLE) AS rfm_monetary_total",
        "max(age) AS rfm_tenure_days",
    ]


def finish(raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    pop = ctx.population
    out = pd.DataFrame(index=raw.index)
    frequency = counts(raw, "rfm_frequency")
    buyer = frequency > 0
    out["rfm_has_purchase"] = buyer.astype(float)
    out["rfm_recency_days"] = raw["rfm_recency_days"].astype(float)
    out["rfm_frequency"] = frequency
    out["rfm_monetary_total"] = counts(raw, "rfm_monetary_total")
    out["rfm_monetary_mean"] = ratio(out["rfm_monetary_total"], frequency)
    out["rfm_tenure_days"] = raw["rfm_tenure_days"].astype(float)
    r = quintile_score(out["rfm_recency_days"].to_numpy(), pop.recency_cuts, reverse=True)
    f = quintile_score(frequency.to_numpy(), pop.frequency_cuts)
    m = quintile_score(out["rfm_monetary_total"].to_numpy(), pop.monetary_cuts)
    out["rfm_r_score"] = r
    out["rfm_f_score"] = np.where(buyer, f, np.nan)
    out["rfm_m_score"] = np.where(buyer, m, np.nan)
    out["rfm_cell"] = 100 * out["rfm_r_score"] + 10 * out["rfm_f_score"] + out["rfm_m_score"]
    return out[feature_names(ctx.settings)]


FAMILY = FeatureFamily(
    name="rfm",
    order=40,
    doc="rfm_*: recency, frequency, monetary",
    names=feature_names,
    finish=finish,
    aggregates={"purchase_days": purchase_days_aggregates},
    phrases=(
        (r"rfm_recency_days", lambda v, m: f"no purchase for {count(v, 'day')}"),
        (r"rfm_has_purchase", lambda v, m: "has never purchased" if v == 0 else "has purchased"),
        (r"rfm_frequency", lambda v, m: f"{count(v, 'purchase')} in total"),
        (r"rfm_monetary_total", lambda v, m: f"{v:,.0f} spent in total"),
        (r"rfm_monetary_mean", lambda v, m: f"average order of {v:,.2f}"),
        (r"rfm_tenure_days", lambda v, m: f"first purchase {count(v, 'day')} ago"),
        (r"rfm_([rfm])_score", lambda v, m: f"RFM {m.group(1).upper()} score {v:,.0f} of 5"),
        (r"rfm_cell", lambda v, m: f"RFM cell {v:,.0f}"),
    ),
    missing={"rfm_recency_days": "no purchase yet"},
)
