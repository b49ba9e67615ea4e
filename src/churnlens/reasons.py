"""Reason codes in plain words: what pushes a customer's churn risk up.

The churn model's per-feature contributions (LightGBM ``pred_contrib``) say which
features raise a customer's log-odds of churning most; each feature name has a phrase
that states the customer's own value, e.g. "no purchase for 2.4x the usual cycle" or
"12 marketing touches in 30 days" (counted nouns agree in number: "1 day", "2 days", by
:func:`churnlens.features.base.count`). The phrases are declared by the feature families
(:mod:`churnlens.features.families`), beside the features they describe.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from churnlens.features.base import Phrase
from churnlens.features.families import FAMILIES

PHRASES: list[tuple[str, Phrase]] = [p for family in FAMILIES for p in family.phrases]
_COMPILED = [(re.compile(f"^{pattern}$"), phrase) for pattern, phrase in PHRASES]
_MISSING = {name: text for family in FAMILIES for name, text in family.missing.items()}


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
