"""fatigue_*: how hard the company has been pushing, and whether the customer answers."""

from __future__ import annotations

import pandas as pd

from churnlens.config import Settings
from churnlens.features.base import FeatureContext, FeatureFamily, count, counts, ratio


def feature_names(settings: Settings) -> list[str]:
    windows = settings.features.fatigue_windows_days
    return [
        *(f"fatigue_touches_{w}d" for w in windows),
        f"fatigue_response_rate_{windows[-1]}d",
        "fatigue_touches_since_contact",
        "fatigue_days_since_touch",
    ]


def contacts_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    wide = settings.features.fatigue_windows_days[-1]
    return [f"count(*) FILTER (WHERE age < {wide}) AS _fatigue_responses"]


def outbound_aggregates(settings: Settings, seen_channels: tuple[str, ...]) -> list[str]:
    windows = settings.features.fatigue_windows_days
    return [
        *(f"count(*) FILTER (WHERE age < {w}) AS fatigue_touches_{w}d" for w in windows),
        "min(age) AS fatigue_days_since_touch",
        "count(*) FILTER (WHERE last_contact IS NULL OR timestamp > last_contact)"
        " AS fatigue_touches_since_contact",
    ]


def finish(raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame:
    windows = ctx.settings.features.fatigue_windows_days
    out = pd.DataFrame(index=raw.index)
    for w in windows:
        out[f"fatigue_touches_{w}d"] = counts(raw, f"fatigue_touches_{w}d")
    out[f"fatigue_response_rate_{windows[-1]}d"] = ratio(
        counts(raw, "_fatigue_responses"), out[f"fatigue_touches_{windows[-1]}d"]
    )
    # computed by the engine: touches later than the customer's last contact
    out["fatigue_touches_since_contact"] = counts(raw, "fatigue_touches_since_contact")
    out["fatigue_days_since_touch"] = raw["fatigue_days_since_touch"].astype(float)
    return out[feature_names(ctx.settings)]


FAMILY = FeatureFamily(
    name="fatigue",
    order=60,
    doc="fatigue_*: contact fatigue",
    names=feature_names,
    finish=finish,
    aggregates={"contacts": contacts_aggregates, "outbound": outbound_aggregates},
    phrases=(
        (
            r"fatigue_touches_(\d+)d",
            lambda v, m: (
                f"{count(v, 'marketing touch', 'marketing touches')} in {count(m.group(1), 'day')}"
            ),
        ),
        (
            r"fatigue_response_rate_(\d+)d",
            lambda v, m: f"{v:.2f} contacts per marketing touch in {count(m.group(1), 'day')}",
        ),
        (
            r"fatigue_touches_since_contact",
            lambda v, m: f"{count(v, 'touch', 'touches')} since the last contact",
        ),
        (r"fatigue_days_since_touch", lambda v, m: f"last marketing touch {count(v, 'day')} ago"),
    ),
    missing={"fatigue_days_since_touch": "no marketing touch yet"},
)
