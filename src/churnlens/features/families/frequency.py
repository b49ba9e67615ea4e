"""freq_*: contact and purchase counts over trailing windows, trend, active days, tenure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnlens.config import Settings
from churnlens.features.base import FeatureContext, FeatureFamily, count, counts


def feature_names(settings: Settings) -> list[str]:
    f = settings.features
    return (
        [f"freq_contacts_{w}d" for w in f.windows_days]
        + [f"freq_purchases_{w}d" for w in f.windows_days]
        + ["freq_contacts_trend", f"freq_active_days_{f.active_days_window}d", "freq_tenure_days"]
    )


def contacts_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    f = settings.features
    t = f.trend_days
    return [
        *(f"count(*) FILTER (WHERE age < {w}) AS freq_contacts_{w}d" for w in f.windows_days),
        f"count(*) FILTER (WHERE age < {t}) AS _freq_trend_now",
        f"count(*) FILTER (WHERE age >= {t} AND age < {2 * t}) AS _freq_trend_before",
        "max(age) AS _freq_first_contact_age",
    ]


def purchase_days_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    return [
        f"CAST(sum(n) FILTER (WHERE age < {w}) AS BIGINT) AS freq_purchases_{w}d"
        for w in settings.features.windows_days
    ]


def sequence_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    window = settings.features.active_days_window
    return [f"count(*) FILTER (WHERE new_day AND age < {window}) AS freq_active_days_{window}d"]


def outbound_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    return ["max(age) AS _freq_first_touch_age"]


def finish(raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    names = feature_names(ctx.settings)
    out = pd.DataFrame({n: counts(raw, n) for n in names[:-3]}, index=raw.index)
    now, before = counts(raw, "_freq_trend_now"), counts(raw, "_freq_trend_before")
    total = now + before
    out["freq_contacts_trend"] = ((now - before) / total.where(total > 0)).fillna(0.0)
    active = f"freq_active_days_{ctx.settings.features.active_days_window}d"
    out[active] = counts(raw, active)
    out["freq_tenure_days"] = np.fmax(
        raw["_freq_first_contact_age"].astype(float), raw["_freq_first_touch_age"].astype(float)
    )
    return out[names]


def _n(v: float) -> str:
    return f"{v:,.0f}"


def _trend(v: float, m: object) -> str:
    if v < 0:
        return "contacts falling off"
    return "contacts picking up" if v > 0 else "contacts flat"


FAMILY = FeatureFamily(
    name="freq",
    order=10,
    doc="freq_*: contact frequency",
    names=feature_names,
    finish=finish,
    aggregates={
        "contacts": contacts_aggregates,
        "purchase_days": purchase_days_aggregates,
        "sequence": sequence_aggregates,
        "outbound": outbound_aggregates,
    },
    phrases=(
        (
            r"freq_contacts_(\d+)d",
            lambda v, m: f"{count(v, 'contact')} in {count(m.group(1), 'day')}",
        ),
        (
            r"freq_purchases_(\d+)d",
            lambda v, m: f"{count(v, 'purchase')} in {count(m.group(1), 'day')}",
        ),
        (r"freq_contacts_trend", _trend),
        (
            r"freq_active_days_(\d+)d",
            lambda v, m: f"active on {_n(v)} of the last {count(m.group(1), 'day')}",
        ),
        (r"freq_tenure_days", lambda v, m: f"known for {count(v, 'day')}"),
    ),
)
