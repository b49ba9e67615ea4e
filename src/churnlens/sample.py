"""A seeded synthetic multichannel customer event log with an honest churn mechanism.

:func:`generate_events` simulates a retail business with web, app, store, phone, chat and
email channels and returns the canonical event frame. Everything is vectorised with numpy:
the simulation steps through time one **week** at a time over all customers at once
(about 105 steps for two years), so 100,000 customers over 730 days (about five million
events) take well under ten seconds.
The same arguments always give the same frame.

Customers
---------
* **Acquisition.** 20% of customers already exist on ``start`` (their history begins on
  day 0); the others join during the period with a growing acquisition rate (density
  proportional to ``1 + u`` for ``u`` the fraction of the period elapsed, so the last
  months acquire twice as fast as the first). A joining customer's first event is at the
  join time: a first purchase (45% of buyers) or a sign-up visit.
* **Activity** ``a`` is lognormal (sigma 1.0, mean 1): a few customers are very active.
  Visit rate = 0.075 sessions a day times ``a``, with a yearly season (+-20%, peak in
  early December).
* **Repurchase cycle.** 88% of customers buy. Each buyer has a mean interval
  ``c`` = lognormal with median 35 days (sd 0.75 on the log scale, shorter for active
  customers, clipped to 3..300 days: from weekly shoppers to every ~80 days and longer)
  and a regularity ``k`` uniform in 1.3..4. Intervals are gamma(shape ``k``, mean ``c``),
  shortened in the high season. Order values are lognormal around a per-customer average
  order value (median 45, log-sd 0.6; order log-sd 0.5); 1.5% of purchases are refunds
  (negative amounts). Web and app purchases are preceded by a browsing visit 60% of the
  time.
* **Channels.** Each customer has a Dirichlet preference over the six channels; every
  event type draws its channel from the preferences restricted to the channels it can
  use: visits on web/app, purchases on web/app/store, support on phone/chat/email,
  complaints on phone/chat/email/store, marketing on email/app (outbound).
* **Service.** Support contacts arrive at a per-customer gamma rate (mean 0.04 a week),
  raised by current trouble; complaints at a rarer, very skewed gamma rate (mean 0.008 a
  week, shape 0.35). Phone and chat contacts carry a lognormal ``duration_s`` (support
  median 5 / 9 minutes, complaints 15 / 20 minutes), longer for customers in trouble.
* **Marketing** is sent by the company, independently of the customer's behaviour: a
  per-customer targeting rate (gamma, shape 0.6, mean 0.3 a week, so a minority is
  targeted heavily; 8% opted out) that is redrawn when the customer moves to another
  campaign segment (on average every 13 weeks), times 2.5 in campaign weeks (one week in
  five). It keeps coming after the customer has gone quiet or left, except for the 35% of
  leavers who unsubscribe when they leave.

Churn
-----
At the end of every week each customer who has joined and not yet decided to leave
decides to leave with probability ``1 - exp(-h)``, where

``h = 0.004 * exp(0.5 * over + 1.5 * trouble + 1.5 / (1 + engagement) + new + e)``

* ``over`` = marketing touches in the last 28 days above the customer's own tolerance
  (1 + gamma(3, 0.5) touches), capped at 10: **over-contact**;
* ``trouble`` = complaints plus half the support calls longer than 20 minutes, decaying
  by 0.92 a week (half-life about eight weeks): **service trouble**;
* ``engagement`` = visits and purchases in the last 8 weeks: **low engagement** raises
  the hazard;
* ``new`` = ``exp(-tenure_weeks / 8)``: new customers are more fragile;
* ``e`` ~ normal(0, 0.5) is per-customer noise no feature can see.

A customer who decides to leave at time ``o`` (drawn uniformly in the following week)
fades out: visit and purchase rates are thinned by ``exp(-3 (t - o) / L)`` over a fade
of ``L`` = 7 + gamma(2, 7) days (about three weeks), after which the customer has
churned: no more visits, purchases or complaints, only a rare stray support contact (3%
of the usual rate), while marketing continues unless they unsubscribed. Customers whose
hazard stays low never churn within the period.

At the defaults (730 days) about half of the customers churn within the period, and an
average customer has about 50 events (visits 46%, marketing 33%, purchases 17%, support
3%, complaints 0.5%). Rates are per day, so counts scale with each customer's time in
the period: generate ``N / 50`` customers for about ``N`` events over two years.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.extensions import ExtensionArray

__all__ = ["CHANNELS", "COLUMNS", "EVENT_TYPES", "generate_events"]

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
_KIND_CHANNELS: dict[int, tuple[tuple[int, float], ...]] = {
    VISIT: ((WEB, 1.0), (APP, 1.0)),
    PURCHASE: ((WEB, 1.0), (APP, 1.0), (STORE, 1.0)),
    SUPPORT: ((PHONE, 1.0), (CHAT, 1.0), (EMAIL, 1.0)),
    COMPLAINT: ((PHONE, 1.0), (CHAT, 1.0), (EMAIL, 1.0), (STORE, 0.5)),
    MARKETING: ((EMAIL, 2.0), (APP, 1.0)),
}

_SECONDS_PER_DAY = 86_400
_HOUR = 3_600.0


@dataclass(frozen=True)
class _Params:
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


_P = _Params()


@dataclass
class _Traits:
    """Fixed per-customer traits (one array entry per customer)."""

    join: np.ndarray
    visit_rate: np.ndarray
    cycle: np.ndarray
    cycle_shape: np.ndarray
    aov: np.ndarray
    channel_cum: dict[int, np.ndarray]
    support_rate: np.ndarray
    complaint_rate: np.ndarray
    opted_in: np.ndarray
    tolerance: np.ndarray
    frailty: np.ndarray
    fade: np.ndarray
    unsubscribes: np.ndarray


@dataclass
class _State:
    """What changes week by week."""

    next_purchase: np.ndarray
    targeting: np.ndarray  # marketing touches a day the company currently aims at
    onset: np.ndarray
    churn: np.ndarray
    trouble: np.ndarray
    touches: np.ndarray  # (4, n) marketing touches of the last four weeks
    engagement: np.ndarray  # (8, n) visits and purchases of the last eight weeks


@dataclass
class _Log:
    """Events collected in chunks: customer index, time in days, type, channel, duration."""

    customer: list[np.ndarray] = field(default_factory=list)
    time: list[np.ndarray] = field(default_factory=list)
    kind: list[np.ndarray] = field(default_factory=list)
    channel: list[np.ndarray] = field(default_factory=list)
    duration: list[np.ndarray] = field(default_factory=list)

    def add(
        self,
        customer: np.ndarray,
        time: np.ndarray,
        kind: int,
        channel: np.ndarray,
        duration: np.ndarray | None = None,
    ) -> None:
        self.customer.append(customer.astype(np.int32))
        self.time.append(time)
        self.kind.append(np.full(customer.size, kind, dtype=np.int8))
        self.channel.append(channel.astype(np.int8))
        self.duration.append(np.full(customer.size, np.nan) if duration is None else duration)

    def arrays(self) -> tuple[np.ndarray, ...]:
        parts = (self.customer, self.time, self.kind, self.channel, self.duration)
        dtypes = (np.int32, np.float64, np.int8, np.int8, np.float64)
        return tuple(
            np.concatenate(p) if p else np.empty(0, d) for p, d in zip(parts, dtypes, strict=True)
        )


def generate_events(
    customers: int = 5000,
    days: int = 730,
    seed: int = 7,
    start: dt.date = dt.date(2024, 1, 1),
) -> pd.DataFrame:
    """Simulate ``customers`` customers over ``days`` days from ``start``.

    Returns the canonical event frame sorted by ``(timestamp, customer_id)`` (ties by
    ``channel`` then ``event_type``) with a fresh RangeIndex and the columns
    ``customer_id``, ``timestamp`` (naive UTC, microseconds), ``channel``, ``event_type``,
    ``amount`` (0 except purchases), ``direction`` and ``duration_s`` (NaN except phone
    and chat service contacts). Deterministic for given arguments; about 50 events per
    customer at ``days=730``. See the module docstring for the mechanism.
    """
    customers, days = int(customers), int(days)
    if customers < 0:
        raise ValueError(f"customers must be >= 0, got {customers}")
    if days < 1:
        raise ValueError(f"days must be >= 1, got {days}")
    return _generate(customers, days, seed, start)[0]


def write_sample(
    out: str | Path,
    customers: int = 5000,
    days: int = 730,
    seed: int = 7,
    start: dt.date = dt.date(2024, 1, 1),
) -> pd.DataFrame:
    """``churnlens sample``: :func:`generate_events` written to ``out`` (Parquet or CSV,
    atomically; the path is checked first). Returns the events."""
    from churnlens.outputs import check_output_path, write_table

    out = check_output_path(out)
    events = generate_events(customers, days, seed, start)
    write_table(events, out)
    return events


def _generate(
    customers: int, days: int, seed: int, start: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The event frame and the hidden truth: per customer join, leave decision and churn.

    The truth frame (indexed by ``customer_id``) has ``join_day``, ``onset_day`` (the
    decision to leave) and ``churn_day`` (end of the fade), in days from ``start`` as
    floats, ``inf`` when it does not happen within the period.
    """
    if isinstance(start, dt.datetime):
        start = start.date()
    rng = np.random.default_rng(seed)
    traits = _draw_traits(rng, customers, days)
    log, state = _simulate(rng, traits, days, _season_offset(start))
    ids = _customer_ids(customers)
    events = _to_frame(rng, log, traits, ids, days, start)
    late = (
        np.where(state.onset < days, state.onset, np.inf),
        np.where(state.churn < days, state.churn, np.inf),
    )
    truth = pd.DataFrame(
        {"join_day": traits.join, "onset_day": late[0], "churn_day": late[1]},
        index=pd.Index(ids, dtype="str", name="customer_id"),
    )
    return events, truth


# --------------------------------------------------------------------------- traits


def _join_times(rng: np.random.Generator, n: int, days: int) -> np.ndarray:
    """Join time in days: existing customers at 0, the rest with a growing density."""
    g = _P.acquisition_growth
    u = rng.random(n)
    frac = (np.sqrt(1.0 + g * (2.0 + g) * u) - 1.0) / g  # inverse CDF of density 1 + g x
    join = frac * days
    join[rng.random(n) < _P.existing_share] = 0.0
    return np.minimum(join, np.nextafter(days, 0))


def _channel_cums(rng: np.random.Generator, n: int) -> dict[int, np.ndarray]:
    """Per event type, cumulative channel probabilities of each customer (n, k)."""
    prefs = rng.dirichlet(np.asarray(_P.channel_alpha), size=n)
    out = {}
    for kind, options in _KIND_CHANNELS.items():
        cols = [c for c, _ in options]
        weights = np.array([w for _, w in options])
        p = prefs[:, cols] * weights + 1e-3
        out[kind] = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    return out


def _draw_traits(rng: np.random.Generator, n: int, days: int) -> _Traits:
    z = rng.standard_normal(n)
    activity = np.exp(_P.activity_sigma * z - _P.activity_sigma**2 / 2)
    log_cycle = (
        np.log(_P.cycle_median)
        - _P.cycle_activity_slope * z
        + _P.cycle_sigma * rng.standard_normal(n)
    )
    cycle = np.clip(np.exp(log_cycle), *_P.cycle_bounds)
    cycle[rng.random(n) >= _P.buyer_share] = np.inf
    return _Traits(
        join=_join_times(rng, n, days),
        visit_rate=_P.visit_rate * activity,
        cycle=cycle,
        cycle_shape=rng.uniform(*_P.cycle_shape_bounds, n),
        aov=_P.aov_median * np.exp(_P.aov_sigma * rng.standard_normal(n)),
        channel_cum=_channel_cums(rng, n),
        support_rate=rng.gamma(_P.support_shape, _P.support_rate / _P.support_shape, n) / 7,
        complaint_rate=rng.gamma(_P.complaint_shape, _P.complaint_rate / _P.complaint_shape, n) / 7,
        opted_in=rng.random(n) >= _P.marketing_optout,
        tolerance=_P.tolerance_base + rng.gamma(_P.tolerance_shape, _P.tolerance_scale, n),
        frailty=_P.frailty_sigma * rng.standard_normal(n),
        fade=_P.fade_min + rng.gamma(_P.fade_shape, _P.fade_scale, n),
        unsubscribes=rng.random(n) < _P.unsubscribe_share,
    )


# ------------------------------------------------------------------------ simulation


def _season_offset(start: dt.date) -> float:
    return float(start.timetuple().tm_yday - 1)


def _season(t: np.ndarray | float, offset: float) -> np.ndarray:
    phase = 2 * np.pi * (np.asarray(t) + offset - _P.season_peak_doy) / 365.25
    return 1.0 + _P.season_amplitude * np.cos(phase)


def _fade(t: np.ndarray, onset: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Engagement multiplier: 1 before the decision to leave, then decaying."""
    return np.exp(-_P.fade_rate * np.clip(t - onset, 0.0, None) / length)


def _pick_channel(
    rng: np.random.Generator, cum: np.ndarray, idx: np.ndarray, kind: int
) -> np.ndarray:
    local = (rng.random(idx.size)[:, None] > cum[idx]).sum(axis=1)
    codes = np.array([c for c, _ in _KIND_CHANNELS[kind]], dtype=np.int8)
    return codes[np.minimum(local, codes.size - 1)]


def _poisson_times(
    rng: np.random.Generator, rate: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Events of a Poisson process with per-customer ``rate`` (a day) on ``[lo, hi)``."""
    span = np.broadcast_to(hi, lo.shape) - lo
    open_ = np.flatnonzero((span > 0) & (rate > 0))
    span = span[open_]
    counts = rng.poisson(rate[open_] * span)
    pos = np.repeat(np.arange(open_.size), counts)
    t = lo[open_][pos] + rng.random(pos.size) * span[pos]
    return open_[pos], np.minimum(t, np.nextafter(lo[open_][pos] + span[pos], -np.inf))


def _initial_state(rng: np.random.Generator, tr: _Traits) -> _State:
    n = tr.join.size
    existing = tr.join == 0.0
    first_buy = rng.random(n) < _P.first_purchase_share
    residual = np.where(existing, rng.random(n), np.where(first_buy, 0.0, rng.exponential(0.5, n)))
    buyer = np.isfinite(tr.cycle)
    next_purchase = np.where(buyer, tr.join + residual * np.where(buyer, tr.cycle, 0.0), np.inf)
    return _State(
        next_purchase=next_purchase,
        targeting=_targeting(rng, n) * tr.opted_in,
        onset=np.full(n, np.inf),
        churn=np.full(n, np.inf),
        trouble=np.zeros(n),
        touches=np.zeros((4, n), dtype=np.int32),
        engagement=np.zeros((8, n), dtype=np.int32),
    )


def _signup_visits(rng: np.random.Generator, tr: _Traits, st: _State, log: _Log) -> None:
    """New customers who do not join with a purchase join with a sign-up visit."""
    idx = np.flatnonzero((tr.join > 0) & (st.next_purchase != tr.join))
    log.add(idx, tr.join[idx], VISIT, _pick_channel(rng, tr.channel_cum[VISIT], idx, VISIT))


def _simulate(
    rng: np.random.Generator, tr: _Traits, days: int, offset: float
) -> tuple[_Log, _State]:
    st = _initial_state(rng, tr)
    log = _Log()
    _signup_visits(rng, tr, st, log)
    n_weeks = -(-days // 7)
    campaign = np.where(rng.random(n_weeks) < _P.campaign_share, _P.campaign_boost, 1.0)
    for week in range(n_weeks):
        w0, w1 = 7.0 * week, float(min(7 * week + 7, days))
        lo = np.maximum(tr.join, w0)
        _reshuffle_targeting(rng, tr, st)
        touches = _week_marketing(rng, tr, st, log, lo, w1, days, campaign[week])
        visits = _week_visits(rng, tr, st, log, lo, w1, _season((w0 + w1) / 2, offset))
        purchases = _week_purchases(rng, tr, st, log, w1, offset)
        complaints = _week_complaints(rng, tr, st, log, lo, w1)
        long_calls = _week_support(rng, tr, st, log, lo, w1, days)
        st.trouble = _P.trouble_decay * st.trouble + complaints + 0.5 * long_calls
        st.touches[week % 4] = touches
        st.engagement[week % 8] = visits + purchases
        _decide_churn(rng, tr, st, w1)
    return log, st


def _targeting(rng: np.random.Generator, n: int) -> np.ndarray:
    """Marketing touches a day: gamma, so a minority of customers is targeted heavily."""
    shape = _P.marketing_shape
    return rng.gamma(shape, _P.marketing_rate / shape, n) / 7


def _reshuffle_targeting(rng: np.random.Generator, tr: _Traits, st: _State) -> None:
    """Campaign segments change: each week some customers get a new targeting rate."""
    moved = np.flatnonzero(rng.random(st.targeting.size) < 1.0 / _P.segment_weeks)
    st.targeting[moved] = _targeting(rng, moved.size) * tr.opted_in[moved]


def _week_marketing(
    rng: np.random.Generator,
    tr: _Traits,
    st: _State,
    log: _Log,
    lo: np.ndarray,
    w1: float,
    days: int,
    boost: float,
) -> np.ndarray:
    hi = np.minimum(w1, np.where(tr.unsubscribes, st.churn, days))
    idx, t = _poisson_times(rng, st.targeting * boost, lo, hi)
    log.add(idx, t, MARKETING, _pick_channel(rng, tr.channel_cum[MARKETING], idx, MARKETING))
    return np.bincount(idx, minlength=tr.join.size)


def _week_visits(
    rng: np.random.Generator,
    tr: _Traits,
    st: _State,
    log: _Log,
    lo: np.ndarray,
    w1: float,
    season: np.ndarray,
) -> np.ndarray:
    idx, t = _poisson_times(rng, tr.visit_rate * season, lo, np.minimum(w1, st.churn))
    keep = rng.random(idx.size) < _fade(t, st.onset[idx], tr.fade[idx])
    idx, t = idx[keep], t[keep]
    log.add(idx, t, VISIT, _pick_channel(rng, tr.channel_cum[VISIT], idx, VISIT))
    return np.bincount(idx, minlength=tr.join.size)


def _week_purchases(
    rng: np.random.Generator, tr: _Traits, st: _State, log: _Log, w1: float, offset: float
) -> np.ndarray:
    """Renewal process: emit every purchase due before ``w1`` and draw the next interval."""
    count = np.zeros(tr.join.size, dtype=np.int32)
    while True:
        idx = np.flatnonzero(st.next_purchase < w1)
        if idx.size == 0:
            return count
        t = st.next_purchase[idx]
        alive = t < st.churn[idx]
        keep = alive & (rng.random(idx.size) < _fade(t, st.onset[idx], tr.fade[idx]))
        got = idx[keep]
        log.add(got, t[keep], PURCHASE, _pick_channel(rng, tr.channel_cum[PURCHASE], got, PURCHASE))
        count[got] += 1
        shape = tr.cycle_shape[idx]
        gap = rng.gamma(shape, tr.cycle[idx] / shape) / _season(t, offset)
        st.next_purchase[idx] = np.where(alive, t + np.maximum(gap, 1e-3), np.inf)


def _durations(
    rng: np.random.Generator, channel: np.ndarray, kind: int, trouble: np.ndarray
) -> np.ndarray:
    """Lognormal call lengths for phone and chat contacts, longer in trouble; NaN else."""
    phone, chat = (0, 1) if kind == SUPPORT else (2, 3)
    median = np.where(
        channel == PHONE, _P.duration_medians[phone], _P.duration_medians[chat]
    ) * np.sqrt(1.0 + trouble)
    seconds = np.round(median * np.exp(_P.duration_sigma * rng.standard_normal(channel.size)))
    return np.where((channel == PHONE) | (channel == CHAT), np.maximum(seconds, 10.0), np.nan)


def _week_complaints(
    rng: np.random.Generator, tr: _Traits, st: _State, log: _Log, lo: np.ndarray, w1: float
) -> np.ndarray:
    idx, t = _poisson_times(rng, tr.complaint_rate, lo, np.minimum(w1, st.churn))
    channel = _pick_channel(rng, tr.channel_cum[COMPLAINT], idx, COMPLAINT)
    log.add(idx, t, COMPLAINT, channel, _durations(rng, channel, COMPLAINT, st.trouble[idx]))
    return np.bincount(idx, minlength=tr.join.size)


def _week_support(
    rng: np.random.Generator,
    tr: _Traits,
    st: _State,
    log: _Log,
    lo: np.ndarray,
    w1: float,
    days: int,
) -> np.ndarray:
    """Support contacts (rarely after churn); returns the number of long calls."""
    rate = tr.support_rate * (1.0 + _P.support_trouble_boost * st.trouble)
    idx, t = _poisson_times(rng, rate, lo, np.full(lo.size, w1))
    keep = (t < st.churn[idx]) | (rng.random(idx.size) < _P.stray_support)
    idx, t = idx[keep], t[keep]
    channel = _pick_channel(rng, tr.channel_cum[SUPPORT], idx, SUPPORT)
    duration = _durations(rng, channel, SUPPORT, st.trouble[idx])
    log.add(idx, t, SUPPORT, channel, duration)
    return np.bincount(idx[duration > _P.long_call_s], minlength=tr.join.size)


def _decide_churn(rng: np.random.Generator, tr: _Traits, st: _State, w1: float) -> None:
    """Weekly hazard of deciding to leave; leavers fade out over the following weeks."""
    at_risk = np.flatnonzero(np.isinf(st.onset) & (tr.join < w1))
    over = np.clip(st.touches[:, at_risk].sum(axis=0) - tr.tolerance[at_risk], 0, _P.over_cap)
    engagement = st.engagement[:, at_risk].sum(axis=0)
    tenure_weeks = (w1 - tr.join[at_risk]) / 7.0
    eta = (
        _P.beta_over * over
        + _P.beta_trouble * st.trouble[at_risk]
        + _P.beta_idle / (1.0 + engagement)
        + _P.beta_new * np.exp(-tenure_weeks / _P.new_weeks)
        + tr.frailty[at_risk]
    )
    p = -np.expm1(-_P.base_hazard * np.exp(eta))
    leave = at_risk[rng.random(at_risk.size) < p]
    st.onset[leave] = w1 + 7.0 * rng.random(leave.size)
    st.churn[leave] = st.onset[leave] + tr.fade[leave]


# ---------------------------------------------------------------------------- output


def _time_of_day(rng: np.random.Generator, kind: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """Seconds after midnight: evening-heavy browsing, shop hours, office hours, sends."""
    hours = np.empty(kind.size)
    send = kind == MARKETING
    shop = ~send & (channel == STORE)
    office = (
        ~send & ((kind == SUPPORT) | (kind == COMPLAINT)) & ((channel == PHONE) | (channel == CHAT))
    )
    leisure = ~(send | shop | office)
    n = int(send.sum())
    hours[send] = np.where(channel[send] == EMAIL, 9.0, 18.0) + rng.exponential(0.33, n)
    hours[shop] = np.clip(rng.normal(15.0, 2.5, int(shop.sum())), 9.0, 20.99)
    hours[office] = np.clip(rng.normal(13.5, 3.0, int(office.sum())), 8.0, 19.99)
    n = int(leisure.sum())
    evening = rng.random(n) < 0.7
    hours[leisure] = np.where(evening, rng.normal(20.0, 2.5, n), rng.normal(12.5, 2.0, n)) % 24
    return np.clip(np.floor(hours * _HOUR), 0, _SECONDS_PER_DAY - 1).astype(np.int64)


def _amounts(rng: np.random.Generator, kind: np.ndarray, aov: np.ndarray) -> np.ndarray:
    """Lognormal order values around each buyer's average order value; a few refunds."""
    buy = np.flatnonzero(kind == PURCHASE)
    sigma = _P.order_sigma
    value = aov[buy] * np.exp(sigma * rng.standard_normal(buy.size) - sigma**2 / 2)
    value = np.round(np.maximum(value, 0.5), 2)
    value[rng.random(buy.size) < _P.refund_share] *= -1.0
    amount = np.zeros(kind.size)
    amount[buy] = value
    return amount


def _sort_order(
    seconds: np.ndarray, customer: np.ndarray, channel: np.ndarray, kind: np.ndarray
) -> np.ndarray:
    """Order by (timestamp, customer_id, channel name, event_type name), stable."""
    channel_rank = np.argsort(np.argsort(CHANNELS))[channel].astype(np.int64)
    kind_rank = np.argsort(np.argsort(EVENT_TYPES))[kind].astype(np.int64)
    n_customers = int(customer.max(initial=0)) + 1
    span = int(seconds.max(initial=0)) + 1
    if span * n_customers * 64 < 2**62:  # one packed int64 key sorts much faster
        key = ((seconds * n_customers + customer) * 8 + channel_rank) * 8 + kind_rank
        return np.argsort(key, kind="stable")
    return np.lexsort((kind_rank, channel_rank, customer, seconds))


def _without_double_sends(
    order: np.ndarray, seconds: np.ndarray, cols: dict[str, np.ndarray]
) -> np.ndarray:
    """Drop an event that repeats the one before it exactly (same second, customer,
    channel, kind, amount and duration): a double send, which the event-log contract
    would remove as an exact duplicate row anyway."""
    if order.size < 2:
        return order
    same = np.ones(order.size - 1, dtype=bool)
    for key in (seconds, cols["customer"], cols["channel"], cols["kind"], cols["amount"]):
        k = key[order]
        same &= k[1:] == k[:-1]
    d = cols["duration"][order]
    same &= (d[1:] == d[:-1]) | (np.isnan(d[1:]) & np.isnan(d[:-1]))
    return order[~np.concatenate([[False], same])]


def _pre_purchase_visits(
    rng: np.random.Generator, cols: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """A browsing visit on the same channel shortly before many web and app purchases."""
    online = (cols["kind"] == PURCHASE) & (cols["channel"] != STORE)
    pick = np.flatnonzero(online & (rng.random(online.size) < _P.pre_visit_share))
    lead = rng.integers(120, 2400, pick.size)
    visit = {
        "customer": cols["customer"][pick],
        "day": cols["day"][pick],
        "second": np.maximum(cols["second"][pick] - lead, 0),
        "kind": np.full(pick.size, VISIT, dtype=np.int8),
        "channel": cols["channel"][pick],
        "amount": np.zeros(pick.size),
        "duration": np.full(pick.size, np.nan),
    }
    return {k: np.concatenate([cols[k], visit[k]]) for k in cols}


def _text(codes: np.ndarray, labels: np.ndarray | tuple[str, ...]) -> ExtensionArray:
    """A pandas ``str`` column from integer codes into labels, built through Arrow."""
    dictionary = pa.array(np.asarray(labels), pa.string())
    values = pa.DictionaryArray.from_arrays(pa.array(codes), dictionary).cast(pa.string())
    return pd.array(values, dtype="str")


def _customer_ids(customers: int) -> np.ndarray:
    """``C0000001`` ... zero-padded to 7 digits (more when there are more customers)."""
    width = max(7, len(str(customers)))
    digits = np.arange(1, customers + 1).astype(f"U{width}")
    if customers == 0:
        return np.strings.add("C", digits)
    return np.strings.add("C", np.strings.zfill(digits, width))


def _to_frame(
    rng: np.random.Generator,
    log: _Log,
    tr: _Traits,
    ids: np.ndarray,
    days: int,
    start: dt.date,
) -> pd.DataFrame:
    customer, time, kind, channel, duration = log.arrays()
    day = np.minimum(np.floor(time).astype(np.int64), days - 1)
    cols = {
        "customer": customer,
        "day": day,
        "second": _time_of_day(rng, kind, channel),
        "kind": kind,
        "channel": channel,
        "amount": _amounts(rng, kind, tr.aov[customer]),
        "duration": duration,
    }
    cols = _pre_purchase_visits(rng, cols)
    seconds = cols["day"] * _SECONDS_PER_DAY + cols["second"]
    order = _sort_order(seconds, cols["customer"].astype(np.int64), cols["channel"], cols["kind"])
    order = _without_double_sends(order, seconds, cols)
    origin = np.datetime64(start, "us")
    kinds = cols["kind"][order]
    return pd.DataFrame(
        {
            "customer_id": _text(cols["customer"][order], ids),
            "timestamp": origin + (seconds[order] * 1_000_000).astype("timedelta64[us]"),
            "channel": _text(cols["channel"][order], CHANNELS),
            "event_type": _text(kinds, EVENT_TYPES),
            "amount": cols["amount"][order].astype(np.float64),
            "direction": _text((kinds == MARKETING).astype(np.int8), ("inbound", "outbound")),
            "duration_s": cols["duration"][order].astype(np.float64),
        }
    )
