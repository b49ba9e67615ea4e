"""chan_*: how many channels a customer uses, how evenly, how often they switch."""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnlens.config import Settings
from churnlens.events.sql import literal as sql_literal
from churnlens.features.base import FeatureContext, FeatureFamily, count, counts, ratio


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


# Up to this many distinct channels in the log, the per-channel counts are FILTER
# aggregates of the contacts pass; beyond it, one extra (customer, channel) aggregation.
MAX_INLINE_CHANNELS = 32


def _counts(seen_channels: tuple[str, ...]) -> list[str]:
    return [f"count(*) FILTER (WHERE channel = {sql_literal(c)})" for c in seen_channels]


def contacts_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    out = ["count(*) AS _chan_total"]
    if len(seen_channels) > MAX_INLINE_CHANNELS:
        return out
    # n_c for every channel c of the log, from the same pass: S, max, sum n^2, sum n ln n.
    n = _counts(seen_channels)
    listed = ", ".join(sql_literal(c) for c in settings.features.channels) or "NULL"
    return [
        *out,
        " + ".join(f"CAST({x} > 0 AS BIGINT)" for x in n) + " AS chan_n_channels",
        f"greatest({', '.join(n)}) AS _chan_top",
        " + ".join(f"{x} * {x}" for x in n) + " AS _chan_sum_sq",
        " + ".join(f"CASE WHEN {x} > 0 THEN {x} * ln({x}) ELSE 0 END" for x in n)
        + " AS _chan_n_log_n",
        *(
            f"count(*) FILTER (WHERE channel = {sql_literal(c)}) AS _chan_n_{c}"
            for c in settings.features.channels
        ),
        f"count(*) FILTER (WHERE channel NOT IN ({listed})) AS _chan_n_other",
    ]


def sequence_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    return ["count(*) FILTER (WHERE channel <> prev_channel) AS _chan_switches"]


def channels_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    if len(seen_channels) <= MAX_INLINE_CHANNELS:
        return []  # computed by contacts_aggregates
    channels = settings.features.channels
    listed = ", ".join(sql_literal(c) for c in channels) or "NULL"
    return [
        "count(*) AS chan_n_channels",
        "max(n) AS _chan_top",
        "sum(n * n) AS _chan_sum_sq",
        # rounded per term, then summed exactly: the same result in any order
        "CAST(sum(CAST(n * ln(n) AS DECIMAL(38, 12))) AS DOUBLE) AS _chan_n_log_n",
        *(f"sum(n) FILTER (WHERE channel = {sql_literal(c)}) AS _chan_n_{c}" for c in channels),
        f"sum(n) FILTER (WHERE channel NOT IN ({listed})) AS _chan_n_other",
    ]


def finish(raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    total = raw["_chan_total"].astype(float).where(raw["_chan_total"] > 0)
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


FAMILY = FeatureFamily(
    name="chan",
    order=20,
    doc="chan_*: channel diversity",
    names=feature_names,
    finish=finish,
    aggregates={
        "contacts": contacts_aggregates,
        "sequence": sequence_aggregates,
        "channels": channels_aggregates,
    },
    phrases=(
        (r"chan_n_channels", lambda v, m: f"uses {count(v, 'channel')}"),
        (r"chan_share_(\w+)", lambda v, m: f"{v:.0%} of contacts via {m.group(1)}"),
        (r"chan_switch_rate", lambda v, m: f"switches channel on {v:.0%} of contacts"),
        (r"chan_(entropy|top_share|hhi)", lambda v, m: "channel mix"),
    ),
)
