"""Reason codes in plain words: what pushes a customer's churn risk up.

The churn model's per-feature contributions (LightGBM ``pred_contrib``) say which
features raise a customer's log-odds of churning most; each feature name has a phrase
that states the customer's own value, e.g. "no purchase for 2.4x the usual cycle" or
"12 marketing touches in 30 days".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

Phrase = Callable[[float, re.Match[str]], str]


def _n(v: float) -> str:
    return f"{v:,.0f}"


PHRASES: list[tuple[str, Phrase]] = [
    (r"rfm_recency_days", lambda v, m: f"no purchase for {_n(v)} days"),
    (r"cycle_overdue_ratio", lambda v, m: f"no purchase for {v:.1f}x the usual cycle"),
    (r"cycle_days", lambda v, m: f"usual repurchase cycle of {_n(v)} days"),
    (r"cycle_own_days", lambda v, m: f"buys every {_n(v)} days on average"),
    (r"cycle_n_intervals", lambda v, m: f"{_n(v)} repeat purchases"),
    (r"rfm_has_purchase", lambda v, m: "has never purchased" if v == 0 else "has purchased"),
    (r"rfm_frequency", lambda v, m: f"{_n(v)} purchases in total"),
    (r"rfm_monetary_total", lambda v, m: f"{_n(v)} spent in total"),
    (r"rfm_monetary_mean", lambda v, m: f"average order of {v:,.2f}"),
    (r"rfm_tenure_days", lambda v, m: f"first purchase {_n(v)} days ago"),
    (r"rfm_([rfm])_score", lambda v, m: f"RFM {m.group(1).upper()} score {_n(v)} of 5"),
    (r"rfm_cell", lambda v, m: f"RFM cell {_n(v)}"),
    (r"fatigue_touches_(\d+)d", lambda v, m: f"{_n(v)} marketing touches in {m.group(1)} days"),
    (
        r"fatigue_response_rate_(\d+)d",
        lambda v, m: f"{v:.2f} contacts per marketing touch in {m.group(1)} days",
    ),
    (r"fatigue_touches_since_contact", lambda v, m: f"{_n(v)} touches since the last contact"),
    (r"fatigue_days_since_touch", lambda v, m: f"last marketing touch {_n(v)} days ago"),
    (r"freq_contacts_(\d+)d", lambda v, m: f"{_n(v)} contacts in {m.group(1)} days"),
    (r"freq_purchases_(\d+)d", lambda v, m: f"{_n(v)} purchases in {m.group(1)} days"),
    (
        r"freq_contacts_trend",
        lambda v, m: (
            "contacts falling off"
            if v < 0
            else ("contacts picking up" if v > 0 else "contacts flat")
        ),
    ),
    (r"freq_active_days_(\d+)d", lambda v, m: f"active on {_n(v)} of the last {m.group(1)} days"),
    (r"freq_tenure_days", lambda v, m: f"known for {_n(v)} days"),
    (r"gap_days_since_contact", lambda v, m: f"no contact for {_n(v)} days"),
    (r"gap_(mean|median)", lambda v, m: f"{_n(v)} days between contacts ({m.group(1)})"),
    (r"gap_max", lambda v, m: f"longest silence of {_n(v)} days"),
    (r"gap_last", lambda v, m: f"last gap between contacts {_n(v)} days"),
    (r"gap_(std|cv)", lambda v, m: "irregular contact rhythm"),
    (r"chan_n_channels", lambda v, m: f"uses {_n(v)} channel{'s' if v != 1 else ''}"),
    (r"chan_share_(\w+)", lambda v, m: f"{v:.0%} of contacts via {m.group(1)}"),
    (r"chan_switch_rate", lambda v, m: f"switches channel on {v:.0%} of contacts"),
    (r"chan_(entropy|top_share|hhi)", lambda v, m: "channel mix"),
]
_COMPILED = [(re.compile(f"^{pattern}$"), phrase) for pattern, phrase in PHRASES]
_MISSING = {
    "rfm_recency_days": "no purchase yet",
    "cycle_overdue_ratio": "no purchase yet",
    "gap_days_since_contact": "never contacted the company",
    "fatigue_days_since_touch": "no marketing touch yet",
}


def _maker(feature: str) -> Callable[[float], str]:
    for pattern, make in _COMPILED:
        match = pattern.match(feature)
        if match:
            return lambda v, make=make, match=match: make(v, match)
    return lambda v: f"{feature} = {v:.3g}"


def _missing(feature: str) -> str:
    return _MISSING.get(feature, f"no {feature.split('_', 1)[-1].replace('_', ' ')} yet")


def phrase(feature: str, value: float) -> str:
    """The plain-words reason for ``feature`` at the customer's ``value``."""
    if value is None or math.isnan(value):
        return _missing(feature)
    return _maker(feature)(float(value))


def top_reasons(contributions: pd.DataFrame, values: pd.DataFrame, top: int = 3) -> pd.Series:
    """Up to ``top`` distinct reasons per row: the features that raise churn risk most.

    Only positive contributions count (features that lower the risk are not reasons to
    act); rows where nothing raises the risk get an empty list. Phrases are formatted
    once per feature and distinct value, and the lists are assembled without a Python
    loop over rows: the result is an Arrow-backed column of string lists.
    """
    columns = list(contributions.columns)
    contrib = contributions.to_numpy(dtype=float)
    vals = values[columns].to_numpy(dtype=float)
    depth = min(len(columns), top + 2)  # a few spares for phrases that repeat
    rows = np.arange(len(contrib))[:, None]
    # the ``depth`` largest per row, then in decreasing order (ties: the first column)
    if depth < len(columns):
        top_k = np.argpartition(-contrib, depth - 1, axis=1)[:, :depth]
        top_k.sort(axis=1)  # column order, so the stable sort below breaks ties by column
        order = top_k[rows, np.argsort(-contrib[rows, top_k], axis=1, kind="stable")]
    else:
        order = np.argsort(-contrib, axis=1, kind="stable")[:, :depth]
    positive = contrib[rows, order] > 0
    text = np.empty(order.shape, dtype=object)
    for j in np.unique(order):
        where = order == j
        feature = columns[j]
        make = _maker(feature)
        # many customers share a value (counts, days): format each distinct value once
        distinct, inverse = np.unique(vals[:, j][np.nonzero(where)[0]], return_inverse=True)
        phrases = np.array(
            [_missing(feature) if math.isnan(v) else make(v) for v in distinct], dtype=object
        )
        text[where] = phrases[inverse]
    # a phrase already given by a stronger feature of the same row is not repeated
    keep = positive.copy()
    for k in range(1, depth):
        for j in range(k):
            keep[:, k] &= ~(positive[:, j] & (text[:, j] == text[:, k]))
    keep &= np.cumsum(keep, axis=1) <= top
    offsets = np.concatenate([[0], np.cumsum(keep.sum(axis=1))]).astype(np.int32)
    lists = pa.ListArray.from_arrays(pa.array(offsets), pa.array(text[keep], type=pa.string()))
    return pd.Series(
        pd.arrays.ArrowExtensionArray(lists), index=contributions.index, name="reasons"
    )


def append_reason(reasons: pd.Series, extra: np.ndarray) -> pd.Series:
    """Each row's list of reasons with one more reason (``extra[i]``) at its end."""
    if isinstance(reasons.array, pd.arrays.ArrowExtensionArray):
        lists = reasons.array.__arrow_array__().combine_chunks()
    else:
        lists = pa.array(reasons.tolist(), type=pa.list_(pa.string()))
    offsets = lists.offsets.to_numpy()
    n = len(lists)
    flat = lists.flatten().to_numpy(zero_copy_only=False)
    new_offsets = offsets + np.arange(n + 1)
    out = np.empty(len(flat) + n, dtype=object)
    last = new_offsets[1:] - 1
    mask = np.ones(len(out), dtype=bool)
    mask[last] = False
    out[mask] = flat
    out[last] = extra
    combined = pa.ListArray.from_arrays(
        pa.array(new_offsets.astype(np.int32)), pa.array(out, type=pa.string())
    )
    return pd.Series(pd.arrays.ArrowExtensionArray(combined), index=reasons.index, name="reasons")
