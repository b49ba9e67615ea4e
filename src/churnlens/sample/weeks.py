"""The simulation, one week at a time over all customers at once: marketing, visits,
purchases, service contacts, and the weekly decision to leave."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from churnlens.sample.customers import (
    EventLog,
    State,
    Traits,
    draw_traits,
    initial_state,
    pick_channel,
    reshuffle_targeting,
    signup_visits,
)
from churnlens.sample.params import (
    CHAT,
    COMPLAINT,
    MARKETING,
    PHONE,
    PURCHASE,
    SUPPORT,
    VISIT,
    P,
)


@dataclass
class History:
    """A finished run: the generator (positioned where the event frame's draws begin), the
    traits, the raw log and the final state."""

    rng: np.random.Generator
    traits: Traits
    log: EventLog
    state: State
    days: int
    offset: float
    weeks: int


def run_history(customers: int, days: int, seed: int, start: dt.date) -> History:
    """Traits and the weekly simulation of ``days`` days, exactly as
    :func:`churnlens.sample.simulate_log` draws them (the campaign continues this state)."""
    if isinstance(start, dt.datetime):
        start = start.date()
    rng = np.random.default_rng(seed)
    traits = draw_traits(rng, customers, days)
    offset = season_offset(start)
    log, state = simulate(rng, traits, days, offset)
    return History(rng, traits, log, state, days, offset, -(-days // 7))


def season_offset(start: dt.date) -> float:
    return float(start.timetuple().tm_yday - 1)


def season_factor(t: np.ndarray | float, offset: float) -> np.ndarray:
    phase = 2 * np.pi * (np.asarray(t) + offset - P.season_peak_doy) / 365.25
    return 1.0 + P.season_amplitude * np.cos(phase)


def fade_factor(t: np.ndarray, onset: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Engagement multiplier: 1 before the decision to leave, then decaying."""
    return np.exp(-P.fade_rate * np.clip(t - onset, 0.0, None) / length)


def poisson_times(
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


def simulate(
    rng: np.random.Generator, tr: Traits, days: int, offset: float
) -> tuple[EventLog, State]:
    st = initial_state(rng, tr)
    log = EventLog()
    signup_visits(rng, tr, st, log)
    n_weeks = -(-days // 7)
    campaign = np.where(rng.random(n_weeks) < P.campaign_share, P.campaign_boost, 1.0)
    for week in range(n_weeks):
        w0, w1 = 7.0 * week, float(min(7 * week + 7, days))
        lo = np.maximum(tr.join, w0)
        reshuffle_targeting(rng, tr, st)
        touches = week_marketing(rng, tr, st, log, lo, w1, days, campaign[week])
        visits = week_visits(rng, tr, st, log, lo, w1, season_factor((w0 + w1) / 2, offset))
        purchases = week_purchases(rng, tr, st, log, w1, offset)
        complaints = week_complaints(rng, tr, st, log, lo, w1)
        long_calls = week_support(rng, tr, st, log, lo, w1, days)
        st.trouble = P.trouble_decay * st.trouble + complaints + 0.5 * long_calls
        st.touches[week % 4] = touches
        st.engagement[week % 8] = visits + purchases
        decide_churn(rng, tr, st, w1)
    return log, st


def week_marketing(
    rng: np.random.Generator,
    tr: Traits,
    st: State,
    log: EventLog,
    lo: np.ndarray,
    w1: float,
    days: int,
    boost: float,
) -> np.ndarray:
    hi = np.minimum(w1, np.where(tr.unsubscribes, st.churn, days))
    idx, t = poisson_times(rng, st.targeting * boost, lo, hi)
    log.add(idx, t, MARKETING, pick_channel(rng, tr.channel_cum[MARKETING], idx, MARKETING))
    return np.bincount(idx, minlength=tr.join.size)


def week_visits(
    rng: np.random.Generator,
    tr: Traits,
    st: State,
    log: EventLog,
    lo: np.ndarray,
    w1: float,
    season: np.ndarray,
) -> np.ndarray:
    idx, t = poisson_times(rng, tr.visit_rate * season, lo, np.minimum(w1, st.churn))
    keep = rng.random(idx.size) < fade_factor(t, st.onset[idx], tr.fade[idx])
    idx, t = idx[keep], t[keep]
    log.add(idx, t, VISIT, pick_channel(rng, tr.channel_cum[VISIT], idx, VISIT))
    return np.bincount(idx, minlength=tr.join.size)


def week_purchases(
    rng: np.random.Generator, tr: Traits, st: State, log: EventLog, w1: float, offset: float
) -> np.ndarray:
    """Renewal process: emit every purchase due before ``w1`` and draw the next interval."""
    count = np.zeros(tr.join.size, dtype=np.int32)
    while True:
        idx = np.flatnonzero(st.next_purchase < w1)
        if idx.size == 0:
            return count
        t = st.next_purchase[idx]
        alive = t < st.churn[idx]
        keep = alive & (rng.random(idx.size) < fade_factor(t, st.onset[idx], tr.fade[idx]))
        got = idx[keep]
        log.add(got, t[keep], PURCHASE, pick_channel(rng, tr.channel_cum[PURCHASE], got, PURCHASE))
        count[got] += 1
        shape = tr.cycle_shape[idx]
        gap = rng.gamma(shape, tr.cycle[idx] / shape) / season_factor(t, offset)
        st.next_purchase[idx] = np.where(alive, t + np.maximum(gap, 1e-3), np.inf)


def durations(
    rng: np.random.Generator, channel: np.ndarray, kind: int, trouble: np.ndarray
) -> np.ndarray:
    """Lognormal call lengths for phone and chat contacts, longer in trouble; NaN else."""
    return call_lengths(rng.standard_normal(channel.size), channel, kind, trouble)


def call_lengths(z: np.ndarray, channel: np.ndarray, kind: int, trouble: np.ndarray) -> np.ndarray:
    """:func:`durations` from given standard normal draws ``z`` (one per contact)."""
    phone, chat = (0, 1) if kind == SUPPORT else (2, 3)
    median = np.where(
        channel == PHONE, P.duration_medians[phone], P.duration_medians[chat]
    ) * np.sqrt(1.0 + trouble)
    seconds = np.round(median * np.exp(P.duration_sigma * z))
    return np.where((channel == PHONE) | (channel == CHAT), np.maximum(seconds, 10.0), np.nan)


def week_complaints(
    rng: np.random.Generator, tr: Traits, st: State, log: EventLog, lo: np.ndarray, w1: float
) -> np.ndarray:
    idx, t = poisson_times(rng, tr.complaint_rate, lo, np.minimum(w1, st.churn))
    channel = pick_channel(rng, tr.channel_cum[COMPLAINT], idx, COMPLAINT)
    log.add(idx, t, COMPLAINT, channel, durations(rng, channel, COMPLAINT, st.trouble[idx]))
    return np.bincount(idx, minlength=tr.join.size)


def week_support(
    rng: np.random.Generator,
    tr: Traits,
    st: State,
    log: EventLog,
    lo: np.ndarray,
    w1: float,
    days: int,
) -> np.ndarray:
    """Support contacts (rarely after churn); returns the number of long calls."""
    rate = tr.support_rate * (1.0 + P.support_trouble_boost * st.trouble)
    idx, t = poisson_times(rng, rate, lo, np.full(lo.size, w1))
    keep = (t < st.churn[idx]) | (rng.random(idx.size) < P.stray_support)
    idx, t = idx[keep], t[keep]
    channel = pick_channel(rng, tr.channel_cum[SUPPORT], idx, SUPPORT)
    duration = durations(rng, channel, SUPPORT, st.trouble[idx])
    log.add(idx, t, SUPPORT, channel, duration)
    return np.bincount(idx[duration > P.long_call_s], minlength=tr.join.size)


def decide_churn(rng: np.random.Generator, tr: Traits, st: State, w1: float) -> None:
    """Weekly hazard of deciding to leave; leavers fade out over the following weeks."""
    at_risk = np.flatnonzero(np.isinf(st.onset) & (tr.join < w1))
    over = np.clip(st.touches[:, at_risk].sum(axis=0) - tr.tolerance[at_risk], 0, P.over_cap)
    engagement = st.engagement[:, at_risk].sum(axis=0)
    tenure_weeks = (w1 - tr.join[at_risk]) / 7.0
    eta = (
        P.beta_over * over
        + P.beta_trouble * st.trouble[at_risk]
        + P.beta_idle / (1.0 + engagement)
        + P.beta_new * np.exp(-tenure_weeks / P.new_weeks)
        + tr.frailty[at_risk]
    )
    p = -np.expm1(-P.base_hazard * np.exp(eta))
    leave = at_risk[rng.random(at_risk.size) < p]
    st.onset[leave] = w1 + 7.0 * rng.random(leave.size)
    st.churn[leave] = st.onset[leave] + tr.fade[leave]
