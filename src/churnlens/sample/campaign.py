"""A campaign on the synthetic log: the same customers after the scoring day, the
contacted ones receiving their action, with known true effects.

:func:`simulate_campaign` re-runs :func:`churnlens.sample.generate_events` for the same
arguments (same random stream, so the history up to the scoring day ``as_of = start +
days - 1`` is exactly that log), keeps the final state of every customer and continues
the weekly simulation of :mod:`churnlens.sample` for ``horizon_days`` more days. It
returns the events of the window ``(as_of, as_of + horizon_days]`` and the truth per
customer.

Two worlds
----------
Every customer lives the window twice, in lockstep and with the same random numbers
(common random numbers, see :mod:`churnlens.sample.worlds`): **untreated** (nothing
happens) and **treated** (the customer gets their action). Customers do not interact, so
the world that happened is, per customer, the treated world when they were treated and
the untreated world otherwise. A customer is *treated* when

* their action is a contact action and ``contact`` is true (without a ``contact``
  column: every customer whose action is one of ``nurture``, ``onboarding_guide``,
  ``reactivation_discount``, ``vip_care``, ``vip_winback_offer``; an action of another
  name counts as a contact when ``contact`` says so);
* their action is ``do_not_disturb`` (not a contact: nobody is reached) and, when the
  scores have a ``group`` column, ``group == "treatment"``; without it, all of them.

A customer missing from ``scores`` has ``no_action``. ``seasonal_winback``, ``let_go``
and ``no_action`` do nothing: both worlds are identical for those customers.

Effects (:class:`Effects`, defaults)
-----------------------------------
The effects act through the churn mechanism of :mod:`churnlens.sample` (the weekly
hazard ``h``, the decision to leave and the fade-out, the marketing touches). They are
heterogeneous through three hidden traits, drawn from a random stream of their own
(``seed`` with a separate spawn key, so :func:`generate_events` is unchanged and the
traits do not depend on ``campaign_seed``):

* ``price_sensitivity`` ~ Beta(0.5, 0.8): near 0 for many customers, high for some;
* ``receptiveness`` ~ gamma(2, 0.5), mean 1: how much caring content helps;
* ``value`` = the customer's spend rate (average order value / repurchase cycle) over the
  median buyer's (0 for non-buyers); the VIP actions use ``min(value, 3)``;

and two facts of the history at the campaign start: ``over`` (touches of the last 28
days above the tolerance, as in ``h``) and ``new = exp(-tenure_weeks / 8)``.

* **Every contact** is itself one more outbound touch: a marketing event (email or app,
  by the customer's preferences) on the first day of the window, which counts
  ``contact_weight = 2`` touches in ``over`` for four weeks (a one-to-one contact weighs
  as two mass sends). A customer already over, or within two touches of, their
  tolerance gets a higher hazard from it (``exp(0.5 x 2)`` = 2.7 times when already
  over): the *sleeping dogs*, hurt by being contacted.
* **reactivation_discount** brings back customers who have decided to leave (fading or
  gone): at the campaign start the decision is reverted with probability ``winback =
  0.8`` x ``price_sensitivity`` x ``exp(-days_since_decision / memory_days)``
  (``memory_days = 120``); a reverted customer is active again (a gone buyer's next
  purchase falls uniformly within one repurchase cycle) and may decide to leave again
  later. All of the action's customers pay ``1 - discount = 0.85`` of their order values
  in the window, so the discount costs spend for the customers who were not leaving.
* **nurture**, **vip_care**, **onboarding_guide**, **vip_winback_offer** help a little:
  the weekly hazard of the window is multiplied by ``exp(-cut x receptiveness / (1 +
  over))`` with ``cut`` = ``nurture_cut = 0.8``; ``onboarding_cut = 2.5`` x ``new`` (so
  almost only for customers of the last two or three months); ``vip_cut = 0.5`` x
  ``min(value, 3)`` for both VIP actions. The ``1 + over`` means an over-contacted
  customer hardly reads it, so the touch wins. ``vip_winback_offer`` also reverts a
  decision to leave with probability ``vip_winback = 0.3`` x ``min(value, 3) / 3`` x
  ``exp(-days_since_decision / 120)``.
* **do_not_disturb** holds back ``rest = 1.0`` (all) of the company's marketing touches
  for the window, so ``over`` falls week by week: it helps over-contacted customers who
  have not decided to leave yet.

``Effects.none()`` sets everything to 0 (the contact's own touch included): then both
worlds are identical for everyone and every effect is exactly 0.

At the defaults (20,000 customers, 730 days, seed 7, a 90-day window, the actions given
at random) the mean effects on P(purchase in the window) are about: reactivation_discount
+5 points among the customers who have decided to leave (+20 for a decision of the last
month, 0 after a year; from 0 to +10 by price sensitivity quartile) and -0.3 among the
others (whose spend falls by the discount); vip_winback_offer +6 among decided high
spenders (value > 2), +1 among the other decided; onboarding_guide +1.4 among customers
of the last eight weeks who are not over-contacted; nurture and vip_care +0.2 to +0.4
among customers neither leaving nor over-contacted (more in spend); every contact -1 to
-2 among over-contacted customers who have not decided; do_not_disturb +1.3 among those.
Effects stay small because most customers buy in the window whatever happens (or have
long gone); they concentrate on the customers at risk.

True effects
------------
``replicates`` pairs of worlds are simulated; replicate ``r`` draws from the stream of
``(seed, campaign_seed, r)`` (in a second cycle, see below, ``(seed, campaign_seed, r,
cycle)``). ``p_treated`` and ``p_untreated`` are the shares of
replicates with a purchase event in the window in each world, ``effect`` their difference
(the expected change in P(any purchase in the window) if treated with the action);
``spend_*`` and ``revenue_effect`` likewise for the window's spend (refunds negative).
Replicate 0 is the world that happened: ``events`` and the realised ``retained``,
``retained_if_treated``, ``retained_if_untreated`` and ``spend`` come from it (a refund
is a purchase event too). The window is simulated in whole weeks; events after ``as_of
+ horizon_days`` are dropped. Nobody joins during the window: it follows the customers
of the log. The campaign weeks of the company's marketing (one in five, x2.5) and the
targeting reshuffles are drawn anew for the window, the same in both worlds.

Second cycle
------------
``simulate_campaign(..., after=first)`` runs the next campaign on the same customers
(``customers``, ``days``, ``seed`` and ``start`` must be those of ``first``: ValueError
otherwise). It continues the world that happened in ``first``'s window (replicate 0: each
customer in the treated world if treated, else in the untreated one): the purchases due,
the marketing targeting and touches, the engagement, the service trouble, the decisions
to leave, the churn and the hidden traits go on from there; the log is not re-run. Its
scoring day is ``first.as_of + first.horizon_days`` (score on the log extended by
``first.events``), its window the ``horizon_days`` days after it, with events after
``first``'s, and its truth is computed the same way, two worlds in ``replicates`` pairs
from that state. The last week of a window that is not whole weeks counts up to the
window's end (its later events are drawn, not kept) and its decision to leave is taken
at the end, as for the log's last week. A customer gone by then has stopped buying:
only a win-back of the next cycle can bring them back. The streams of cycle ``c > 1``
have ``c`` appended to their spawn keys, so the same ``campaign_seed`` draws anew in
each cycle; ``after`` can itself be a second cycle (``Campaign.cycle`` counts). The
state travels in ``Campaign.continuation`` (not in its repr or equality): the traits and
the happened world's state at the window's end.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from churnlens.sample.effects import (
    CONTACT_ACTIONS,
    NON_CONTACT_ACTIONS,
    Effects,
    draw_receptivity,
    make_plan,
    over_contact,
)
from churnlens.sample.output import customer_ids
from churnlens.sample.weeks import History, run_history
from churnlens.sample.worlds import Outcome, Window, continue_worlds, next_history, window_frame

__all__ = ["CONTACT_ACTIONS", "Campaign", "Effects", "random_stream", "simulate_campaign"]

CAMPAIGN_STREAM = 0xCA58  # spawn keys: (CAMPAIGN_STREAM, campaign_seed, replicate[, cycle])
FORMAT_STREAM = 0xCA59  # times of day and browsing visits of the window's event frame
DEFAULT_EFFECTS = Effects()


@dataclass(frozen=True)
class Continuation:
    """What a campaign leaves for the next cycle: the log it continues and the world that
    happened, at the end of its window."""

    log: tuple[int, int, int, dt.date]  # customers, days, seed, start
    cycle: int  # 1 for the campaign on the log, 2 for the one after it, ...
    history: History  # traits and the state at the window's end (``days``: its end)


@dataclass
class Campaign:
    """The window after the scoring day and the truth per customer."""

    events: pd.DataFrame  # canonical event frame of (as_of, as_of + horizon_days]
    truth: pd.DataFrame  # indexed by customer_id, every customer of the log
    as_of: dt.date
    horizon_days: int
    continuation: Continuation | None = field(default=None, repr=False, compare=False)

    @property
    def cycle(self) -> int:
        """1 for a campaign on the log, 2 for one continuing it (``after``), ..."""
        return 1 if self.continuation is None else self.continuation.cycle


def random_stream(seed: int, stream: int, campaign_seed: int, *key: int) -> np.random.Generator:
    """A generator of its own: ``(stream, campaign_seed, *key)`` spawned from ``seed``."""
    seq = np.random.SeedSequence(seed, spawn_key=(stream, campaign_seed, *key))
    return np.random.default_rng(seq)


def _continued(after: Campaign, log: tuple[int, int, int, dt.date]) -> Continuation:
    """``after``'s continuation, checked to continue the same log."""
    if not isinstance(after, Campaign) or after.continuation is None:
        raise ValueError("after has no simulator state: pass a Campaign from simulate_campaign")
    names = ("customers", "days", "seed", "start")
    given = zip(names, log, after.continuation.log, strict=True)
    wrong = [
        f"{name}={mine!r} (after: {theirs!r})" for name, mine, theirs in given if mine != theirs
    ]
    if wrong:
        raise ValueError(f"after was made on another log: {', '.join(wrong)}")
    return after.continuation


def _assignments(
    scores: pd.DataFrame, ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer of the log: action, contactable (the action reaches out), treated."""
    missing = {"customer_id", "action"} - set(scores.columns)
    if missing:
        raise ValueError(f"scores need the columns {sorted(missing)}")
    cid = scores["customer_id"].astype(str)
    if cid.duplicated().any():
        raise ValueError("scores has duplicate customer_id values")
    pos = pd.Index(ids).get_indexer(cid)
    if (pos < 0).any():
        raise ValueError(f"scores has {int((pos < 0).sum())} customer ids not in the log")
    given = scores["action"].astype(object).where(scores["action"].notna(), "no_action")
    action = np.full(ids.size, "no_action", dtype=object)
    action[pos] = given.astype(str).to_numpy()
    if "contact" in scores.columns:
        flag = np.zeros(ids.size, dtype=bool)
        flag[pos] = scores["contact"].fillna(False).astype(bool).to_numpy()
    else:
        flag = np.isin(action, CONTACT_ACTIONS)
    contactable = np.isin(action, CONTACT_ACTIONS) | (flag & ~np.isin(action, NON_CONTACT_ACTIONS))
    rested = action == "do_not_disturb"
    if "group" in scores.columns:
        arm = np.zeros(ids.size, dtype=bool)
        arm[pos] = (scores["group"].astype(object) == "treatment").to_numpy(dtype=bool)
        rested &= arm
    return action, contactable, (contactable & flag) | rested


def simulate_campaign(
    customers: int,
    days: int,
    seed: int,
    start: dt.date,
    scores: pd.DataFrame,
    horizon_days: int,
    effects: Effects = DEFAULT_EFFECTS,
    replicates: int = 20,
    campaign_seed: int = 0,
    *,
    after: Campaign | None = None,
) -> Campaign:
    """Continue ``generate_events(customers, days, seed, start)`` for ``horizon_days``
    days after the scoring day, the treated customers of ``scores`` receiving their
    action (see the module docstring).

    With ``after`` (a campaign made by this function on the same ``customers``, ``days``,
    ``seed`` and ``start``, else ValueError), continue instead the world that happened in
    ``after``'s window: the scoring day is ``after.as_of + after.horizon_days`` (the
    second cycle, see the module docstring).

    ``scores`` needs ``customer_id`` and ``action``; ``contact`` (bool) and ``group`` are
    used when present. The truth frame has ``action``, ``treated``, ``effect``,
    ``p_treated``, ``p_untreated``, ``revenue_effect``, ``spend_treated``,
    ``spend_untreated``, ``retained``, ``retained_if_treated``, ``retained_if_untreated``,
    ``spend`` (realised), and the hidden state at the campaign start: ``join_day``,
    ``onset_day`` (the decision to leave, in days from ``start``; inf if none, after the
    scoring day for a decision of the last week whose fade starts in the window),
    ``churn_day``, ``decided_to_leave``, ``over``, ``over_contacted`` (``over > 0``),
    ``price_sensitivity``, ``receptiveness``, ``value``.
    """
    customers, days, horizon_days = int(customers), int(days), int(horizon_days)
    replicates, campaign_seed = int(replicates), int(campaign_seed)
    if customers < 0:
        raise ValueError(f"customers must be >= 0, got {customers}")
    if days < 1 or horizon_days < 1:
        raise ValueError(f"days and horizon_days must be >= 1, got {days}, {horizon_days}")
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    if campaign_seed < 0:
        raise ValueError(f"campaign_seed must be >= 0, got {campaign_seed}")
    if isinstance(start, dt.datetime):
        start = start.date()
    log = (customers, days, seed, start)
    if after is None:
        history, cycle = run_history(customers, days, seed, start), 1
    else:
        previous = _continued(after, log)
        history, cycle = previous.history, previous.cycle + 1
    key = () if cycle == 1 else (cycle,)  # the first cycle's streams are those of before
    tr, st = history.traits, history.state
    ids = customer_ids(customers)
    action, contactable, treated = _assignments(scores, ids)
    rec = draw_receptivity(seed, tr)
    over = over_contact(tr, st.touches)
    plan = make_plan(action, contactable, effects, rec, tr, st.onset, over, float(history.days))
    stacked = plan.stacked()
    chosen = treated.astype(np.intp)

    def replicate(r: int, chosen: np.ndarray | None = None) -> tuple[Outcome, Window]:
        rng = random_stream(seed, CAMPAIGN_STREAM, campaign_seed, r, *key)
        return continue_worlds(history, stacked, rng, horizon_days, chosen)

    first, window = replicate(0, chosen)  # the world that happened
    hits, spend = first.retained.astype(np.float64), first.spend.copy()
    for r in range(1, replicates):
        outcome, _ = replicate(r)
        hits += outcome.retained
        spend += outcome.spend
    fmt = random_stream(seed, FORMAT_STREAM, campaign_seed, *key)
    events = window_frame(fmt, window, ids, start)

    p, mean_spend = hits / replicates, spend / replicates
    realised = first.retained[chosen, np.arange(customers)]
    truth = pd.DataFrame(
        {
            "action": pd.array(action.astype(str), dtype="str"),
            "treated": treated,
            "effect": p[1] - p[0],
            "p_treated": p[1],
            "p_untreated": p[0],
            "revenue_effect": mean_spend[1] - mean_spend[0],
            "spend_treated": mean_spend[1],
            "spend_untreated": mean_spend[0],
            "retained": realised,
            "retained_if_treated": first.retained[1],
            "retained_if_untreated": first.retained[0],
            "spend": first.spend[chosen, np.arange(customers)],
            "join_day": tr.join,
            "onset_day": st.onset,
            "churn_day": st.churn,
            "decided_to_leave": np.isfinite(st.onset),
            "over": over,
            "over_contacted": over > 0,
            "price_sensitivity": rec.price_sensitivity,
            "receptiveness": rec.receptiveness,
            "value": rec.value,
        },
        index=pd.Index(ids, dtype="str", name="customer_id"),
    )
    as_of = start + dt.timedelta(days=history.days - 1)
    carry = Continuation(log, cycle, next_history(history, window, horizon_days))
    return Campaign(events, truth, as_of, horizon_days, carry)
