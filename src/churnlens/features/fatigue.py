"""fatigue_*: how hard the company has been pushing, and whether the customer answers."""

from __future__ import annotations

import pandas as pd

from churnlens.config import Settings
from churnlens.features.base import CONTACT, OUTBOUND, FeatureContext, counts, ratio


def feature_names(settings: Settings) -> list[str]:
    windows = settings.features.fatigue_windows_days
    return [
        *(f"fatigue_touches_{w}d" for w in windows),
        f"fatigue_response_rate_{windows[-1]}d",
        "fatigue_touches_since_contact",
        "fatigue_days_since_touch",
    ]


def sql(settings: Settings) -> str:
    windows = settings.features.fatigue_windows_days
    wide = windows[-1]
    touches = [
        f"count(*) FILTER (WHERE {OUTBOUND} AND age < {w}) AS fatigue_touches_{w}d" for w in windows
    ]
    return f"""
        WITH per_customer AS (
            SELECT customer_id,
                   {", ".join(touches)},
                   count(*) FILTER (WHERE {CONTACT} AND age < {wide}) AS _fatigue_responses,
                   max(timestamp) FILTER (WHERE {CONTACT}) AS _last_contact,
                   min(age) FILTER (WHERE {OUTBOUND}) AS fatigue_days_since_touch
            FROM ev GROUP BY customer_id
        ), since_contact AS (
            SELECT ev.customer_id, count(*) AS fatigue_touches_since_contact
            FROM ev JOIN per_customer USING (customer_id)
            WHERE {OUTBOUND}
              AND (_last_contact IS NULL OR ev.timestamp > _last_contact)
            GROUP BY ev.customer_id
        )
        SELECT * EXCLUDE (_last_contact)
        FROM per_customer LEFT JOIN since_contact USING (customer_id)
    """


def finish(raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    windows = ctx.settings.features.fatigue_windows_days
    out = pd.DataFrame(index=raw.index)
    for w in windows:
        out[f"fatigue_touches_{w}d"] = counts(raw, f"fatigue_touches_{w}d")
    out[f"fatigue_response_rate_{windows[-1]}d"] = ratio(
        counts(raw, "_fatigue_responses"), out[f"fatigue_touches_{windows[-1]}d"]
    )
    out["fatigue_touches_since_contact"] = counts(raw, "fatigue_touches_since_contact")
    out["fatigue_days_since_touch"] = raw["fatigue_days_since_touch"].astype(float)
    return out[feature_names(ctx.settings)]
