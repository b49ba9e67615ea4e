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

from churnlens.events import EventTable


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


def contact_profile(
    events: EventTable, as_of: date, rules: FatigueRules, customers: pd.Index | None = None
) -> pd.DataFrame:
    """Per customer: touches and responses in the window, whether over-contacted, the
    preferred non-fatigued inbound channel (None when there is none) and the fatigued
    channels (a sorted, comma-separated string; empty when none).

    The preferred channel is the one with the most contacts, then the most recent
    contact, then the first by name. Indexed by ``customer_id``; ``customers`` (when
    given) fixes the index, customers without events getting zero counts.
    """
    day = f"DATE '{as_of.isoformat()}'"
    window = f"day > {day} - INTERVAL {int(rules.window_days)} DAY"
    frame = events.con.execute(f"""
        WITH per_channel AS (
            SELECT customer_id, channel,
                   count(*) FILTER (WHERE role <> 'outbound') AS contacts,
                   max(timestamp) FILTER (WHERE role <> 'outbound') AS last_contact,
                   count(*) FILTER (WHERE role = 'outbound' AND {window}) AS touches,
                   count(*) FILTER (WHERE role <> 'outbound' AND {window}) AS responses
            FROM {events.name} WHERE day <= {day}
            GROUP BY customer_id, channel
        ), marked AS (
            SELECT *, touches >= {int(rules.channel_max_touches)} AND responses = 0 AS fatigued
            FROM per_channel
        )
        SELECT customer_id,
               CAST(sum(touches) AS BIGINT) AS touches,
               CAST(sum(responses) AS BIGINT) AS responses,
               arg_max(channel, struct_pack(contacts, last_contact, lowest := -rank_by_name))
                   FILTER (WHERE contacts > 0 AND NOT fatigued) AS preferred_channel,
               coalesce(string_agg(channel, ',' ORDER BY channel) FILTER (WHERE fatigued), '')
                   AS fatigued_channels
        FROM marked JOIN (SELECT channel, row_number() OVER (ORDER BY channel) AS rank_by_name
                          FROM (SELECT DISTINCT channel FROM marked)) USING (channel)
        GROUP BY customer_id
    """).df()
    frame.index = pd.Index(frame.pop("customer_id").astype(str), name="customer_id")
    touches = frame["touches"].to_numpy()
    frame["over_contacted"] = (touches >= rules.max_touches) & (
        frame["responses"].to_numpy() <= rules.max_response_rate * np.maximum(touches, 1)
    )
    if customers is not None:
        frame = frame.reindex(customers)
        frame[["touches", "responses"]] = frame[["touches", "responses"]].fillna(0).astype("int64")
        frame["over_contacted"] = frame["over_contacted"].fillna(False).astype(bool)
        frame["fatigued_channels"] = frame["fatigued_channels"].fillna("")
    frame["preferred_channel"] = frame["preferred_channel"].astype(object)
    frame["preferred_channel"] = frame["preferred_channel"].where(
        frame["preferred_channel"].notna(), None
    )
    return frame[list(CONTACT_COLUMNS)]
