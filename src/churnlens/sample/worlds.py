"""Two worlds in lockstep after the scoring day: untreated (row 0) and treated (row 1).

Both worlds continue the same final state of the history, week by week as
:mod:`churnlens.sample.weeks` does, and share every random number: candidate events are
drawn once per customer from rates that do not depend on the world (or from the larger
of the two worlds' rates) and each world keeps them or not by its own state, with the
same uniform numbers. A customer whose treatment changes nothing therefore lives the very
same window in both worlds, and one who is treated differs only by the treatment.

The window's last week may be cut short by its end (as the log's last week is by
``days``): its events are drawn for the whole week, so the random stream does not depend
on where the window ends, but only those before the end count in the state, and the
week's decision to leave is taken at the end. The state of the world that happened at
that moment is what a next window continues (:func:`next_history`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from churnlens.sample.customers import EventLog, State, pick_channel, reshuffle_targeting
from churnlens.sample.effects import Plan, over_contact
from churnlens.sample.output import (
    pre_purchase_visits,
    sort_order,
    text_column,
    time_of_day,
    without_double_sends,
)
from churnlens.sample.params import (
    CHANNELS,
    COMPLAINT,
    EVENT_TYPES,
    MARKETING,
    PURCHASE,
    SECONDS_PER_DAY,
    SUPPORT,
    VISIT,
    P,
)
from churnlens.sample.weeks import (
    History,
    call_lengths,
    fade_factor,
    poisson_times,
    season_factor,
)


@dataclass
class Window:
    """Raw events of the world that happened (customer index, time in days, ...) and, once
    the window is run, that world's state at the window's end."""

    parts: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {
            k: [] for k in ("customer", "time", "kind", "channel", "duration", "amount")
        }
    )
    state: State | None = None

    def add(self, **columns: np.ndarray) -> None:
        for key, value in columns.items():
            self.parts[key].append(value)

    def arrays(self) -> dict[str, np.ndarray]:
        dtypes = {"customer": np.int64, "time": np.float64, "kind": np.int8, "channel": np.int8}
        return {
            k: np.concatenate(v).astype(dtypes.get(k, np.float64))
            if v
            else np.empty(0, dtypes.get(k, np.float64))
            for k, v in self.parts.items()
        }


@dataclass
class Outcome:
    """Per world (rows) and customer: a purchase in the window, and the spend."""

    retained: np.ndarray
    spend: np.ndarray


def _counts(idx: np.ndarray, keep: np.ndarray, n: int) -> np.ndarray:
    return np.stack([np.bincount(idx[k], minlength=n) for k in keep])


def continue_worlds(
    h: History,
    plan: Plan,
    rng: np.random.Generator,
    horizon_days: int,
    chosen: np.ndarray | None = None,
) -> tuple[Outcome, Window]:
    """Run both worlds for ``horizon_days`` days (whole weeks) after the history.

    ``plan`` is :meth:`Plan.stacked`. When ``chosen`` (0 or 1 per customer) is given, the
    window's events of each customer's chosen world are collected, and its state at the
    window's end (else the window stays empty)."""
    tr, st, n = h.traits, h.state, h.traits.join.size
    t0 = float(h.days)
    end = t0 + horizon_days
    weeks = -(-horizon_days // 7)
    shared = type(st)(**{k: np.copy(v) for k, v in vars(st).items()})
    onset, churn = np.stack([st.onset, st.onset]), np.stack([st.churn, st.churn])
    trouble = np.stack([st.trouble, st.trouble])
    touches = np.stack([st.touches] * 2).astype(np.float64)
    engagement = np.stack([st.engagement] * 2)
    retained = np.zeros((2, n), dtype=bool)
    spend = np.zeros((2, n))
    window = Window()
    pending = np.full(n, np.inf)  # each customer's first purchase candidate at or after end

    def keep_chosen(idx: np.ndarray, t: np.ndarray, keep: np.ndarray) -> np.ndarray:
        return keep[chosen[idx], np.arange(idx.size)] & (t < end)

    def record(
        kind: int,
        idx: np.ndarray,
        t: np.ndarray,
        channel: np.ndarray,
        keep: np.ndarray,
        duration: np.ndarray | None = None,
        amount: np.ndarray | None = None,
    ) -> None:
        """Collect the kept events of each customer's chosen world within the window."""
        if chosen is None:
            return
        sel = keep_chosen(idx, t, keep)
        if duration is not None and duration.ndim == 2:
            duration = duration[chosen[idx], np.arange(idx.size)]
        if amount is not None:
            amount = amount[chosen[idx], np.arange(idx.size)]
        window.add(
            customer=idx[sel],
            time=t[sel],
            kind=np.full(int(sel.sum()), kind, dtype=np.int8),
            channel=channel[sel],
            duration=np.full(int(sel.sum()), np.nan) if duration is None else duration[sel],
            amount=np.zeros(int(sel.sum())) if amount is None else amount[sel],
        )

    # The campaign start: decisions to leave reverted, the contact's own touches.
    revert = np.isfinite(onset) & (rng.random(n) < plan.revive)
    onset[revert], churn[revert] = np.inf, np.inf
    restart = np.isinf(shared.next_purchase) & np.isfinite(tr.cycle)
    shared.next_purchase = np.where(
        restart, t0 + rng.random(n) * np.where(restart, tr.cycle, 0.0), shared.next_purchase
    )
    idx = np.flatnonzero(plan.touch[1] > 0)
    channel = pick_channel(rng, tr.channel_cum[MARKETING], idx, MARKETING)
    treated_only = np.stack([np.zeros(idx.size, dtype=bool), np.ones(idx.size, dtype=bool)])
    record(MARKETING, idx, np.full(idx.size, t0), channel, treated_only)
    boost = np.where(rng.random(weeks) < P.campaign_share, P.campaign_boost, 1.0)

    for j in range(weeks):
        w0 = t0 + 7.0 * j
        lo, hi = np.full(n, w0), np.full(n, w0 + 7.0)
        w1 = min(w0 + 7.0, end)  # the state counts the week up to the window's end
        reshuffle_targeting(rng, tr, shared)

        idx, t = poisson_times(rng, shared.targeting * boost[j], lo, hi)
        held = rng.random(idx.size) < plan.rest[:, idx]
        channel = pick_channel(rng, tr.channel_cum[MARKETING], idx, MARKETING)
        keep = (t < np.where(tr.unsubscribes[idx], churn[:, idx], np.inf)) & ~held
        record(MARKETING, idx, t, channel, keep)
        sent = _counts(idx, keep & (t < w1), n) + (plan.touch if j == 0 else 0.0)

        rate = tr.visit_rate * season_factor(w0 + 3.5, h.offset)
        idx, t = poisson_times(rng, rate, lo, hi)
        u = rng.random(idx.size)
        keep = (t < churn[:, idx]) & (u < fade_factor(t, onset[:, idx], tr.fade[idx]))
        record(VISIT, idx, t, pick_channel(rng, tr.channel_cum[VISIT], idx, VISIT), keep)
        active = _counts(idx, keep & (t < w1), n)

        while (idx := np.flatnonzero(shared.next_purchase < hi)).size:
            t = shared.next_purchase[idx]
            u, z = rng.random(idx.size), rng.standard_normal(idx.size)
            sign = np.where(rng.random(idx.size) < P.refund_share, -1.0, 1.0)
            channel = pick_channel(rng, tr.channel_cum[PURCHASE], idx, PURCHASE)
            keep = (t < churn[:, idx]) & (u < fade_factor(t, onset[:, idx], tr.fade[idx]))
            value = tr.aov[idx] * np.exp(P.order_sigma * z - P.order_sigma**2 / 2)
            amount = sign * np.maximum(
                np.round(np.maximum(value, 0.5) * plan.price[:, idx], 2), 0.01
            )
            record(PURCHASE, idx, t, channel, keep, amount=amount)
            counted = keep & (t < end)
            active += _counts(idx, counted, n)
            retained |= _counts(idx, counted, n) > 0
            for w in range(2):
                spend[w] += np.bincount(idx[counted[w]], amount[w, counted[w]], minlength=n)
            shape = tr.cycle_shape[idx]
            gap = rng.gamma(shape, tr.cycle[idx] / shape) / season_factor(t, h.offset)
            shared.next_purchase[idx] = t + np.maximum(gap, 1e-3)
            first = (t >= end) & np.isinf(pending[idx])
            pending[idx[first]] = t[first]

        idx, t = poisson_times(rng, tr.complaint_rate, lo, hi)
        channel = pick_channel(rng, tr.channel_cum[COMPLAINT], idx, COMPLAINT)
        z = rng.standard_normal(idx.size)
        duration = np.stack(
            [call_lengths(z, channel, COMPLAINT, trouble[w, idx]) for w in range(2)]
        )
        keep = t < churn[:, idx]
        record(COMPLAINT, idx, t, channel, keep, duration)
        complaints = _counts(idx, keep & (t < w1), n)

        rate = tr.support_rate * (1.0 + P.support_trouble_boost * trouble)
        top = rate.max(axis=0)
        idx, t = poisson_times(rng, top, lo, hi)
        thin, stray = rng.random(idx.size), rng.random(idx.size) < P.stray_support
        channel = pick_channel(rng, tr.channel_cum[SUPPORT], idx, SUPPORT)
        z = rng.standard_normal(idx.size)
        duration = np.stack([call_lengths(z, channel, SUPPORT, trouble[w, idx]) for w in range(2)])
        keep = (thin * top[idx] < rate[:, idx]) & ((t < churn[:, idx]) | stray)
        record(SUPPORT, idx, t, channel, keep, duration)
        long_calls = _counts(idx, keep & (duration > P.long_call_s) & (t < w1), n)

        week = h.weeks + j
        trouble = P.trouble_decay * trouble + complaints + 0.5 * long_calls
        touches[:, week % 4] = sent
        engagement[:, week % 8] = active
        u, v = rng.random(n), rng.random(n)
        tenure_weeks = (w1 - tr.join) / 7.0
        eta = (
            P.beta_over * np.stack([over_contact(tr, touches[w]) for w in range(2)])
            + P.beta_trouble * trouble
            + P.beta_idle / (1.0 + engagement.sum(axis=1))
            + P.beta_new * np.exp(-tenure_weeks / P.new_weeks)
            + tr.frailty
            - plan.care
        )
        leave = np.isinf(onset) & (u < -np.expm1(-P.base_hazard * np.exp(eta)))
        onset = np.where(leave, w1 + 7.0 * v, onset)
        churn = np.where(leave, onset + tr.fade, churn)
    if chosen is not None:
        happened = chosen.astype(bool)
        churned = np.where(happened, churn[1], churn[0])
        upcoming = np.where(np.isfinite(pending), pending, shared.next_purchase)
        window.state = State(
            next_purchase=np.where(churned <= end, np.inf, upcoming),  # gone: stopped buying
            targeting=shared.targeting,
            onset=np.where(happened, onset[1], onset[0]),
            churn=churned,
            trouble=np.where(happened, trouble[1], trouble[0]),
            touches=np.where(happened, touches[1], touches[0]),
            engagement=np.where(happened, engagement[1], engagement[0]),
        )
    return Outcome(retained, spend), window


def next_history(h: History, window: Window, horizon_days: int) -> History:
    """The history a next window continues: ``h`` extended by a window of ``horizon_days``
    days run by :func:`continue_worlds` with ``chosen`` (the world that happened, at the
    window's end). Its raw log is left empty: the window's events are in its frame."""
    if window.state is None:
        raise ValueError("the window was run without chosen worlds: it has no final state")
    weeks = h.weeks + -(-horizon_days // 7)
    return replace(h, log=EventLog(), state=window.state, days=h.days + horizon_days, weeks=weeks)


def window_frame(
    rng: np.random.Generator, window: Window, ids: np.ndarray, start: dt.date
) -> pd.DataFrame:
    """The window's raw events as the canonical event frame (see ``output.to_frame``)."""
    raw = window.arrays()
    kind, channel = raw["kind"], raw["channel"]
    cols = {
        "customer": raw["customer"],
        "day": np.floor(raw["time"]).astype(np.int64),
        "second": time_of_day(rng, kind, channel),
        "kind": kind,
        "channel": channel,
        "amount": raw["amount"],
        "duration": raw["duration"],
    }
    cols = pre_purchase_visits(rng, cols)
    seconds = cols["day"] * SECONDS_PER_DAY + cols["second"]
    order = sort_order(seconds, cols["customer"], cols["channel"], cols["kind"])
    order = without_double_sends(order, seconds, cols)
    kinds = cols["kind"][order]
    return pd.DataFrame(
        {
            "customer_id": text_column(cols["customer"][order], ids),
            "timestamp": np.datetime64(start, "us")
            + (seconds[order] * 1_000_000).astype("timedelta64[us]"),
            "channel": text_column(cols["channel"][order], CHANNELS),
            "event_type": text_column(kinds, EVENT_TYPES),
            "amount": cols["amount"][order].astype(np.float64),
            "direction": text_column((kinds == MARKETING).astype(np.int8), ("inbound", "outbound")),
            "duration_s": cols["duration"][order].astype(np.float64),
        }
    )
