"""How each customer can be reached: preferred inbound channel and contact fatigue.

Actions go out on the channel the customer uses most, never on one the company has
worn out: a channel is *fatigued* for a customer when it carried at least
``channel_max_touches`` outbound touches in the last ``window_days`` days and the
customer made no contact on it in that time. A customer is *over-contacted* when the
company sent at least ``max_touches`` touches in the window and got at most
``max_response_rate`` contacts back per touch.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from churnlens.events import EventSource, EventTable


class FatigueRules(BaseModel):
    """When a customer, or one of their channels, has had enough."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_days: int = Field(30, gt=0, description="touches and responses counted over this")
    max_touches: int = Field(8, gt=0, description="over-contacted from this many touches ...")
    max_response_rate: float = Field(
        0.25, ge=0, description="... when at most this many contacts came back per touch"
    )
    channel_max_touches: int = Field(
        4, gt=0, description="a channel is fatigued after this many unanswered touches on it"
    )


CONTACT_COLUMNS: tuple[str, ...] = (
    "touches",
    "responses",
    "over_contacted",
    "preferred_channel",
    "fatigued_channels",
)
# the raw aggregates behind them, computed in the one partitioned pass
RAW_COLUMNS: tuple[str, ...] = tuple(
    f"_contact_{c}" for c in CONTACT_COLUMNS if c != "over_contacted"
)


def contact_stats_sql(events: str, rules: FatigueRules) -> str:
    """The SELECT of every customer's raw contact profile from a compact event table
    (``customer_id, timestamp, age, channel, role``; see
    :func:`churnlens.events.staged.compact_columns`): per customer, the touches and
    responses in the window, the preferred non-fatigued inbound channel and the fatigued
    channels (:data:`RAW_COLUMNS`). :func:`finish_contacts` turns them into the profile.
    """
    window = f"age < {int(rules.window_days)}"
    return f"""
        WITH per_channel AS (
            SELECT customer_id, channel,
                   count(*) FILTER (WHERE role <> 'outbound') AS contacts,
                   max(timestamp) FILTER (WHERE role <> 'outbound') AS last_contact,
                   count(*) FILTER (WHERE role = 'outbound' AND {window}) AS touches,
                   count(*) FILTER (WHERE role <> 'outbound' AND {window}) AS responses
            FROM {events} GROUP BY customer_id, channel
        ), marked AS (
            SELECT *, touches >= {int(rules.channel_max_touches)} AND responses = 0 AS fatigued
            FROM per_channel
        )
        SELECT customer_id,
               CAST(sum(touches) AS BIGINT) AS _contact_touches,
               CAST(sum(responses) AS BIGINT) AS _contact_responses,
               CAST(arg_max(channel, struct_pack(contacts, last_contact, lowest := -rank_by_name))
                   FILTER (WHERE contacts > 0 AND NOT fatigued) AS VARCHAR)
                   AS _contact_preferred_channel,
               coalesce(string_agg(CAST(channel AS VARCHAR), ',' ORDER BY channel)
                   FILTER (WHERE fatigued), '') AS _contact_fatigued_channels
        FROM marked JOIN (SELECT channel, row_number() OVER (ORDER BY channel) AS rank_by_name
                          FROM (SELECT DISTINCT channel FROM marked)) USING (channel)
        GROUP BY customer_id
    """


def finish_contacts(raw: pd.DataFrame, rules: FatigueRules) -> pd.DataFrame:
    """The contact profile (:data:`CONTACT_COLUMNS`) from the raw columns of
    :func:`contact_stats_sql`, on ``raw``'s index (customers without a row get zero
    counts, no preferred channel and no fatigued channel)."""
    touches = raw["_contact_touches"].fillna(0).to_numpy(dtype="int64")
    responses = raw["_contact_responses"].fillna(0).to_numpy(dtype="int64")
    preferred = raw["_contact_preferred_channel"].to_numpy(dtype=object, copy=True)
    preferred[pd.isna(preferred)] = None
    frame = pd.DataFrame(
        {
            "touches": touches,
            "responses": responses,
            "over_contacted": (touches >= rules.max_touches)
            & (responses <= rules.max_response_rate * np.maximum(touches, 1)),
            "preferred_channel": pd.Series(preferred, index=raw.index, dtype=object),
            "fatigued_channels": raw["_contact_fatigued_channels"].fillna("").to_numpy(),
        },
        index=raw.index,
    )
    return frame[list(CONTACT_COLUMNS)]


def contact_profile(
    events: EventSource | EventTable,
    as_of: date,
    rules: FatigueRules,
    customers: pd.Index | None = None,
) -> pd.DataFrame:
    """Per customer: touches and responses in the window, whether over-contacted, the
    preferred non-fatigued inbound channel (None when there is none) and the fatigued
    channels (a sorted, comma-separated string; empty when none).

    The preferred channel is the one with the most contacts, then the most recent
    contact, then the first by name. Indexed by ``customer_id``; ``customers`` (when
    given) fixes the index, customers without events getting zero counts. Computed by
    the one partitioned pass (:func:`churnlens.features.aggregation.aggregate_log`).
    """
    from churnlens.features.aggregation import aggregate_log

    with aggregate_log(events, as_of, partitions=1, contacts=rules) as log:
        raw = log.raw(0)
    if customers is not None:
        raw = raw.reindex(customers)
    return finish_contacts(raw, rules)
