"""From the simulation's raw events to the canonical event frame: times of day, order
values, browsing before online purchases, sorting, ids."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
from pandas.api.extensions import ExtensionArray

from churnlens.sample.customers import EventLog, Traits
from churnlens.sample.params import (
    CHANNELS,
    CHAT,
    COMPLAINT,
    EMAIL,
    EVENT_TYPES,
    HOUR,
    MARKETING,
    PHONE,
    PURCHASE,
    SECONDS_PER_DAY,
    STORE,
    SUPPORT,
    VISIT,
    P,
)


def time_of_day(rng: np.random.Generator, kind: np.ndarray, channel: np.ndarray) -> np.ndarray:
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
    return np.clip(np.floor(hours * HOUR), 0, SECONDS_PER_DAY - 1).astype(np.int64)


def amounts(rng: np.random.Generator, kind: np.ndarray, aov: np.ndarray) -> np.ndarray:
    """Lognormal order values around each buyer's average order value; a few refunds."""
    buy = np.flatnonzero(kind == PURCHASE)
    sigma = P.order_sigma
    value = aov[buy] * np.exp(sigma * rng.standard_normal(buy.size) - sigma**2 / 2)
    value = np.round(np.maximum(value, 0.5), 2)
    value[rng.random(buy.size) < P.refund_share] *= -1.0
    amount = np.zeros(kind.size)
    amount[buy] = value
    return amount


def sort_order(
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


def without_double_sends(
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


def pre_purchase_visits(
    rng: np.random.Generator, cols: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """A browsing visit on the same channel shortly before many web and app purchases."""
    online = (cols["kind"] == PURCHASE) & (cols["channel"] != STORE)
    pick = np.flatnonzero(online & (rng.random(online.size) < P.pre_visit_share))
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


def text_column(codes: np.ndarray, labels: np.ndarray | tuple[str, ...]) -> ExtensionArray:
    """A pandas ``str`` column from integer codes into labels, built through Arrow."""
    dictionary = pa.array(np.asarray(labels), pa.string())
    values = pa.DictionaryArray.from_arrays(pa.array(codes), dictionary).cast(pa.string())
    return pd.array(values, dtype="str")


def customer_ids(customers: int) -> np.ndarray:
    """``C0000001`` ... zero-padded to 7 digits (more when there are more customers)."""
    width = max(7, len(str(customers)))
    digits = np.arange(1, customers + 1).astype(f"U{width}")
    if customers == 0:
        return np.strings.add("C", digits)
    return np.strings.add("C", np.strings.zfill(digits, width))


def to_frame(
    rng: np.random.Generator,
    log: EventLog,
    tr: Traits,
    ids: np.ndarray,
    days: int,
    start: dt.date,
) -> pd.DataFrame:
    customer, time, kind, channel, duration = log.arrays()
    day = np.minimum(np.floor(time).astype(np.int64), days - 1)
    cols = {
        "customer": customer,
        "day": day,
        "second": time_of_day(rng, kind, channel),
        "kind": kind,
        "channel": channel,
        "amount": amounts(rng, kind, tr.aov[customer]),
        "duration": duration,
    }
    cols = pre_purchase_visits(rng, cols)
    seconds = cols["day"] * SECONDS_PER_DAY + cols["second"]
    order = sort_order(seconds, cols["customer"].astype(np.int64), cols["channel"], cols["kind"])
    order = without_double_sends(order, seconds, cols)
    origin = np.datetime64(start, "us")
    kinds = cols["kind"][order]
    return pd.DataFrame(
        {
            "customer_id": text_column(cols["customer"][order], ids),
            "timestamp": origin + (seconds[order] * 1_000_000).astype("timedelta64[us]"),
            "channel": text_column(cols["channel"][order], CHANNELS),
            "event_type": text_column(kinds, EVENT_TYPES),
            "amount": cols["amount"][order].astype(np.float64),
            "direction": text_column((kinds == MARKETING).astype(np.int8), ("inbound", "outbound")),
            "duration_s": cols["duration"][order].astype(np.float64),
        }
    )
