"""freq_*: contact and purchase counts over trailing windows, trend, active days, tenure."""

from __future__ import annotations

import pandas as pd

from churnlens.config import Settings
from churnlens.features.base import CONTACT, PURCHASE, FeatureContext, counts


def feature_names(settings: Settings) -> list[str]:
    f = settings.features
    return (
        [f"freq_contacts_{w}d" for w in f.windows_days]
        + [f"freq_purchases_{w}d" for w in f.windows_days]
        + ["freq_contacts_trend", f"freq_active_days_{f.active_days_window}d", "freq_tenure_days"]
    )


def sql(settings: Settings) -> str:
    f = settings.features
    t = f.trend_days
    cols = [
        f"count(*) FILTER (WHERE {CONTACT} AND age < {w}) AS freq_contacts_{w}d"
        for w in f.windows_days
    ]
    cols += [
        f"count(*) FILTER (WHERE {PURCHASE} AND age < {w}) AS freq_purchases_{w}d"
        for w in f.windows_days
    ]
    cols += [
        f"count(*) FILTER (WHERE {CONTACT} AND age < {t}) AS _freq_trend_now",
        f"count(*) FILTER (WHERE {CONTACT} AND age >= {t} AND age < {2 * t}) AS _freq_trend_before",
        f"count(DISTINCT day) FILTER (WHERE {CONTACT} AND age < {f.active_days_window}) "
        f"AS freq_active_days_{f.active_days_window}d",
        "max(age) AS freq_tenure_days",
    ]
    return f"SELECT customer_id, {', '.join(cols)} FROM ev GROUP BY customer_id"


def finish(raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    names = feature_names(ctx.settings)
    out = pd.DataFrame({n: counts(raw, n) for n in names if n != "freq_contacts_trend"})
    now, before = counts(raw, "_freq_trend_now"), counts(raw, "_freq_trend_before")
    total = now + before
    out["freq_contacts_trend"] = ((now - before) / total.where(total > 0)).fillna(0.0)
    out["freq_tenure_days"] = raw["freq_tenure_days"].astype(float)
    return out[names]
