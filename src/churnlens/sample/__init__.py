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

:func:`churnlens.sample.campaign.simulate_campaign` continues the same customers after the
last day, the scored customers receiving their actions, with known true effects.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

from churnlens.sample.output import customer_ids, to_frame
from churnlens.sample.params import CHANNELS, COLUMNS, EVENT_TYPES
from churnlens.sample.weeks import run_history

__all__ = ["CHANNELS", "COLUMNS", "EVENT_TYPES", "generate_events", "simulate_log", "write_sample"]


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
    return simulate_log(customers, days, seed, start)[0]


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


def simulate_log(
    customers: int, days: int, seed: int, start: dt.date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The event frame and the hidden truth: per customer join, leave decision and churn.

    The truth frame (indexed by ``customer_id``) has ``join_day``, ``onset_day`` (the
    decision to leave) and ``churn_day`` (end of the fade), in days from ``start`` as
    floats, ``inf`` when it does not happen within the period.
    """
    if isinstance(start, dt.datetime):
        start = start.date()
    run = run_history(customers, days, seed, start)
    state = run.state
    ids = customer_ids(customers)
    events = to_frame(run.rng, run.log, run.traits, ids, days, start)
    late = (
        np.where(state.onset < days, state.onset, np.inf),
        np.where(state.churn < days, state.churn, np.inf),
    )
    truth = pd.DataFrame(
        {"join_day": run.traits.join, "onset_day": late[0], "churn_day": late[1]},
        index=pd.Index(ids, dtype="str", name="customer_id"),
    )
    return events, truth
