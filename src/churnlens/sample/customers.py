"""The simulated customers: fixed traits drawn once, the state that changes week by week,
and the log the simulation writes events into."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from churnlens.sample.params import KIND_CHANNELS, VISIT, P


@dataclass
class Traits:
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
class State:
    """What changes week by week."""

    next_purchase: np.ndarray
    targeting: np.ndarray  # marketing touches a day the company currently aims at
    onset: np.ndarray
    churn: np.ndarray
    trouble: np.ndarray
    touches: np.ndarray  # (4, n) marketing touches of the last four weeks
    engagement: np.ndarray  # (8, n) visits and purchases of the last eight weeks


@dataclass
class EventLog:
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


def join_times(rng: np.random.Generator, n: int, days: int) -> np.ndarray:
    """Join time in days: existing customers at 0, the rest with a growing density."""
    g = P.acquisition_growth
    u = rng.random(n)
    frac = (np.sqrt(1.0 + g * (2.0 + g) * u) - 1.0) / g  # inverse CDF of density 1 + g x
    join = frac * days
    join[rng.random(n) < P.existing_share] = 0.0
    return np.minimum(join, np.nextafter(days, 0))


def channel_cums(rng: np.random.Generator, n: int) -> dict[int, np.ndarray]:
    """Per event type, cumulative channel probabilities of each customer (n, k)."""
    prefs = rng.dirichlet(np.asarray(P.channel_alpha), size=n)
    out = {}
    for kind, options in KIND_CHANNELS.items():
        cols = [c for c, _ in options]
        weights = np.array([w for _, w in options])
        p = prefs[:, cols] * weights + 1e-3
        out[kind] = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    return out


def draw_traits(rng: np.random.Generator, n: int, days: int) -> Traits:
    z = rng.standard_normal(n)
    activity = np.exp(P.activity_sigma * z - P.activity_sigma**2 / 2)
    log_cycle = (
        np.log(P.cycle_median) - P.cycle_activity_slope * z + P.cycle_sigma * rng.standard_normal(n)
    )
    cycle = np.clip(np.exp(log_cycle), *P.cycle_bounds)
    cycle[rng.random(n) >= P.buyer_share] = np.inf
    return Traits(
        join=join_times(rng, n, days),
        visit_rate=P.visit_rate * activity,
        cycle=cycle,
        cycle_shape=rng.uniform(*P.cycle_shape_bounds, n),
        aov=P.aov_median * np.exp(P.aov_sigma * rng.standard_normal(n)),
        channel_cum=channel_cums(rng, n),
        support_rate=rng.gamma(P.support_shape, P.support_rate / P.support_shape, n) / 7,
        complaint_rate=rng.gamma(P.complaint_shape, P.complaint_rate / P.complaint_shape, n) / 7,
        opted_in=rng.random(n) >= P.marketing_optout,
        tolerance=P.tolerance_base + rng.gamma(P.tolerance_shape, P.tolerance_scale, n),
        frailty=P.frailty_sigma * rng.standard_normal(n),
        fade=P.fade_min + rng.gamma(P.fade_shape, P.fade_scale, n),
        unsubscribes=rng.random(n) < P.unsubscribe_share,
    )


def initial_state(rng: np.random.Generator, tr: Traits) -> State:
    n = tr.join.size
    existing = tr.join == 0.0
    first_buy = rng.random(n) < P.first_purchase_share
    residual = np.where(existing, rng.random(n), np.where(first_buy, 0.0, rng.exponential(0.5, n)))
    buyer = np.isfinite(tr.cycle)
    next_purchase = np.where(buyer, tr.join + residual * np.where(buyer, tr.cycle, 0.0), np.inf)
    return State(
        next_purchase=next_purchase,
        targeting=targeting(rng, n) * tr.opted_in,
        onset=np.full(n, np.inf),
        churn=np.full(n, np.inf),
        trouble=np.zeros(n),
        touches=np.zeros((4, n), dtype=np.int32),
        engagement=np.zeros((8, n), dtype=np.int32),
    )


def targeting(rng: np.random.Generator, n: int) -> np.ndarray:
    """Marketing touches a day: gamma, so a minority of customers is targeted heavily."""
    shape = P.marketing_shape
    return rng.gamma(shape, P.marketing_rate / shape, n) / 7


def reshuffle_targeting(rng: np.random.Generator, tr: Traits, st: State) -> None:
    """Campaign segments change: each week some customers get a new targeting rate."""
    moved = np.flatnonzero(rng.random(st.targeting.size) < 1.0 / P.segment_weeks)
    st.targeting[moved] = targeting(rng, moved.size) * tr.opted_in[moved]


def signup_visits(rng: np.random.Generator, tr: Traits, st: State, log: EventLog) -> None:
    """New customers who do not join with a purchase join with a sign-up visit."""
    idx = np.flatnonzero((tr.join > 0) & (st.next_purchase != tr.join))
    log.add(idx, tr.join[idx], VISIT, pick_channel(rng, tr.channel_cum[VISIT], idx, VISIT))


def pick_channel(
    rng: np.random.Generator, cum: np.ndarray, idx: np.ndarray, kind: int
) -> np.ndarray:
    local = (rng.random(idx.size)[:, None] > cum[idx]).sum(axis=1)
    codes = np.array([c for c, _ in KIND_CHANNELS[kind]], dtype=np.int8)
    return codes[np.minimum(local, codes.size - 1)]
