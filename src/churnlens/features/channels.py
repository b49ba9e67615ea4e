"""chan_*: how many channels a customer uses, how evenly, how often they switch."""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnlens.config import Settings
from churnlens.features.base import CONTACT, FeatureContext, counts, ratio


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def feature_names(settings: Settings) -> list[str]:
    shares = [f"chan_share_{c}" for c in settings.features.channels] + ["chan_share_other"]
    return [
        "chan_n_channels",
        "chan_entropy",
        "chan_top_share",
        "chan_hhi",
        "chan_switch_rate",
        *shares,
    ]


def sql(settings: Settings) -> str:
    channels = settings.features.channels
    shares = [f"sum(n) FILTER (WHERE channel = {_lit(c)}) AS _chan_n_{c}" for c in channels]
    listed = ", ".join(_lit(c) for c in channels) or "NULL"
    shares.append(f"sum(n) FILTER (WHERE channel NOT IN ({listed})) AS _chan_n_other")
    return f"""
        WITH per_channel AS (
            SELECT customer_id, channel, count(*) AS n
            FROM ev WHERE {CONTACT} GROUP BY customer_id, channel
        ), diversity AS (
            SELECT customer_id,
                   count(*) AS chan_n_channels,
                   sum(n) AS _chan_total,
                   max(n) AS _chan_top,
                   sum(n * n) AS _chan_sum_sq,
                   sum(n * ln(n)) AS _chan_n_log_n,
                   {", ".join(shares)}
            FROM per_channel GROUP BY customer_id
        ), sequence AS (
            SELECT customer_id, channel,
                   lag(channel) OVER (PARTITION BY customer_id
                                      ORDER BY timestamp, channel, event_type) AS previous
            FROM ev WHERE {CONTACT}
        ), switches AS (
            SELECT customer_id,
                   count(*) FILTER (WHERE channel <> previous) AS _chan_switches
            FROM sequence GROUP BY customer_id
        )
        SELECT * FROM diversity LEFT JOIN switches USING (customer_id)
    """


def finish(raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    total = raw["_chan_total"].astype(float)
    n_channels = counts(raw, "chan_n_channels")
    # Shannon entropy from counts: H = ln N - sum(n ln n) / N.
    entropy = np.log(total) - raw["_chan_n_log_n"].astype(float) / total
    evenness = entropy / np.log(n_channels.where(n_channels >= 2))
    out = pd.DataFrame(index=raw.index)
    out["chan_n_channels"] = n_channels
    out["chan_entropy"] = evenness.where(n_channels >= 2, np.where(n_channels == 1, 0.0, np.nan))
    out["chan_top_share"] = ratio(raw["_chan_top"], total)
    out["chan_hhi"] = raw["_chan_sum_sq"].astype(float) / total**2
    out["chan_switch_rate"] = ratio(raw["_chan_switches"], total - 1)
    for c in [*ctx.settings.features.channels, "other"]:
        out[f"chan_share_{c}"] = raw[f"_chan_n_{c}"].astype(float).fillna(0.0) / total
    return out[feature_names(ctx.settings)]
