"""The sample generator's numbers: channels, event types and every simulation parameter
(their meaning is in :mod:`churnlens.sample`'s docstring)."""

from __future__ import annotations

from dataclasses import dataclass

CHANNELS: tuple[str, ...] = ("web", "app", "store", "phone", "chat", "email")
EVENT_TYPES: tuple[str, ...] = ("visit", "purchase", "support", "complaint", "marketing")
COLUMNS: tuple[str, ...] = (
    "customer_id",
    "timestamp",
    "channel",
    "event_type",
    "amount",
    "direction",
    "duration_s",
)

WEB, APP, STORE, PHONE, CHAT, EMAIL = range(6)
VISIT, PURCHASE, SUPPORT, COMPLAINT, MARKETING = range(5)

# Channels each event type can use, and a per-type weight multiplying the preferences.
KIND_CHANNELS: dict[int, tuple[tuple[int, float], ...]] = {
    VISIT: ((WEB, 1.0), (APP, 1.0)),
    PURCHASE: ((WEB, 1.0), (APP, 1.0), (STORE, 1.0)),
    SUPPORT: ((PHONE, 1.0), (CHAT, 1.0), (EMAIL, 1.0)),
    COMPLAINT: ((PHONE, 1.0), (CHAT, 1.0), (EMAIL, 1.0), (STORE, 0.5)),
    MARKETING: ((EMAIL, 2.0), (APP, 1.0)),
}

SECONDS_PER_DAY = 86_400
HOUR = 3_600.0


@dataclass(frozen=True)
class Params:
    """Every number of the simulation (see the module docstring)."""

    existing_share: float = 0.20
    acquisition_growth: float = 1.0
    activity_sigma: float = 1.0
    visit_rate: float = 0.075  # sessions a day at activity 1
    season_amplitude: float = 0.20
    season_peak_doy: float = 340.0
    buyer_share: float = 0.88
    cycle_median: float = 35.0
    cycle_activity_slope: float = 0.45
    cycle_sigma: float = 0.6
    cycle_bounds: tuple[float, float] = (3.0, 300.0)
    cycle_shape_bounds: tuple[float, float] = (1.3, 4.0)
    first_purchase_share: float = 0.45
    aov_median: float = 45.0
    aov_sigma: float = 0.6
    order_sigma: float = 0.5
    refund_share: float = 0.015
    pre_visit_share: float = 0.6
    channel_alpha: tuple[float, ...] = (1.2, 1.0, 0.8, 0.6, 0.6, 0.8)
    support_rate: float = 0.04  # a week
    support_shape: float = 0.7
    support_trouble_boost: float = 1.5
    complaint_rate: float = 0.008  # a week
    complaint_shape: float = 0.35
    duration_medians: tuple[float, float, float, float] = (300.0, 540.0, 900.0, 1200.0)
    duration_sigma: float = 0.6
    long_call_s: float = 1200.0
    trouble_decay: float = 0.92
    marketing_rate: float = 0.30  # a week
    marketing_shape: float = 0.6
    marketing_optout: float = 0.08
    segment_weeks: float = 13.0  # mean time between targeting reshuffles
    campaign_share: float = 0.20
    campaign_boost: float = 2.5
    tolerance_base: float = 1.0
    tolerance_shape: float = 3.0
    tolerance_scale: float = 0.5
    base_hazard: float = 0.004  # a week
    beta_over: float = 0.5
    over_cap: float = 10.0
    beta_trouble: float = 1.5
    beta_idle: float = 1.5
    beta_new: float = 1.0
    new_weeks: float = 8.0
    frailty_sigma: float = 0.5
    fade_min: float = 7.0
    fade_shape: float = 2.0
    fade_scale: float = 7.0
    fade_rate: float = 3.0
    unsubscribe_share: float = 0.35
    stray_support: float = 0.03


P = Params()
