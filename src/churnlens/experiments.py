"""Randomised control groups: every campaign keeps customers who would have been contacted.

Every customer whose action is a contact action is assigned ``group`` = ``treatment`` or
``control``; every other customer gets ``none``. The draw is a hash, never a random number
drawn at run time: a customer's uniform number is a 64-bit SipHash of their id keyed by
the experiment's name and the campaign (:func:`campaign_key`), so partitions, Spark
buckets, row order and reruns of one campaign all agree.

Each campaign draws its groups afresh: by default a campaign is a scoring day, and
``experiment.campaign`` names one that spans several days (customers keep their groups
while it is unchanged). Groups kept from one campaign to the next would no longer be
random: who reaches a contact action in the next campaign depends on the contacts of the
last (the fatigue rules, the touches in the features), so the next campaign's treated
customers of an action would be the ones the last contacts left eligible, and its
controls everyone.

- ``experiment.control_share`` (0.10) of each contact action's customers are controls;
  ``experiment.control_shares`` overrides it per action;
- ``experiment.global_control_share`` (0 by default) holds a campaign-wide holdout out of
  every action: a second hash (keyed by the campaign key plus ":global") below that share
  puts the customer in ``control`` whatever their contact action;
- the contact budget (``--max-contacts``) is counted on treated customers only and cuts
  both groups at the same priority rank (see :func:`churnlens.ranking.rank_sql`), so the
  controls are exactly the customers who would have been contacted;
- ``contact`` is true for treated customers of a contact action within the budget: who
  is to be contacted now.

The scores manifest records the design (name, shares, counts per action and group) and a
balance check: per action, the mean churn probability, value if retained and days since
purchase of each group with their standardised differences.
"""

from __future__ import annotations

import hashlib
import math
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from churnlens.config import ExperimentSettings

GROUPS: tuple[str, ...] = ("treatment", "control", "none")
BALANCE_COLUMNS: tuple[str, ...] = ("churn_probability", "value_if_retained", "days_since_purchase")


def uniform(ids: pd.Index | np.ndarray, name: str) -> np.ndarray:
    """A number in [0, 1) per id: SipHash-2-4 of the id keyed by ``name`` (stable across
    runs, machines and pandas versions)."""
    key = hashlib.sha256(name.encode("utf-8")).hexdigest()[:16]
    hashed = pd.util.hash_array(np.asarray(ids, dtype=object), hash_key=key, categorize=False)
    return (hashed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def campaign_of(settings: ExperimentSettings, as_of: date | str) -> str:
    """The campaign scored as of ``as_of``: ``experiment.campaign``, or the scoring day
    when no campaign is named."""
    return settings.campaign or str(as_of)[:10]


def campaign_key(settings: ExperimentSettings, as_of: date | str) -> str:
    """What the groups of that campaign are drawn with: the experiment name and it."""
    return f"{settings.name}:{campaign_of(settings, as_of)}"


def assign_groups(
    ids: pd.Index | np.ndarray,
    actions: np.ndarray,
    contact_actions: list[str],
    settings: ExperimentSettings,
    as_of: date | str,
) -> np.ndarray:
    """``treatment`` / ``control`` for customers of a contact action, ``none`` otherwise,
    for the campaign scored as of ``as_of`` (see the module docstring)."""
    key = campaign_key(settings, as_of)
    actions = np.asarray(actions, dtype=object)
    share = np.full(len(actions), settings.control_share)  # per action, never per customer
    for action, value in settings.control_shares.items():
        share[actions == action] = value
    held = uniform(ids, key + ":global") < settings.global_control_share
    control = (uniform(ids, key) < share) | held
    contacting = np.isin(actions, contact_actions)
    return np.where(contacting, np.where(control, "control", "treatment"), "none").astype(object)


def standardised_difference(mean_a: float, var_a: float, mean_b: float, var_b: float) -> float:
    """(mean a - mean b) / sqrt((var a + var b) / 2); NaN when a group is empty or both
    are constant."""
    pooled = math.sqrt((var_a + var_b) / 2) if var_a == var_a and var_b == var_b else 0.0
    return (mean_a - mean_b) / pooled if pooled > 0 else float("nan")


def design_sql(relation: str) -> str:
    """DuckDB SQL over ranked scores: per action and group (``none`` left out) the
    customers, the contacted ones, and the mean and sample variance of each of
    :data:`BALANCE_COLUMNS` (NULLs left out)."""
    stats = ", ".join(
        f"avg({c}) AS mean_{c}, coalesce(var_samp({c}), 0) AS var_{c}" for c in BALANCE_COLUMNS
    )
    return f"""
        SELECT action, "group", count(*) AS n, sum(CAST(contact AS INTEGER)) AS contacted,
               {stats}
        FROM {relation} WHERE "group" <> 'none' GROUP BY 1, 2 ORDER BY 1, 2
    """


def design(stats: pd.DataFrame, settings: ExperimentSettings, as_of: date | str) -> dict[str, Any]:
    """The design and balance check of the campaign scored as of ``as_of`` for the
    manifest, from the statistics of :func:`design_sql` (one row per action and group)."""
    counts: dict[str, dict[str, int]] = {}
    balance: dict[str, dict[str, Any]] = {}
    for action, rows in stats.groupby("action", sort=True):
        by = rows.set_index("group")
        n = {g: int(by["n"].get(g, 0)) for g in ("treatment", "control")}
        counts[str(action)] = {**n, "contacted": int(by["contacted"].sum())}
        balance[str(action)] = {}
        for c in BALANCE_COLUMNS:
            means = {g: _plain(by[f"mean_{c}"].get(g, float("nan"))) for g in n}
            var = {g: float(by[f"var_{c}"].get(g, float("nan"))) for g in n}
            diff = float("nan")
            if all(v is not None for v in means.values()):
                args = (means["treatment"], var["treatment"], means["control"], var["control"])
                diff = standardised_difference(*args)  # type: ignore[arg-type]
            balance[str(action)][c] = {**means, "standardised_difference": _plain(diff)}
    return {
        "name": settings.name,
        "campaign": campaign_of(settings, as_of),
        "control_share": settings.control_share,
        "control_shares": dict(settings.control_shares),
        "global_control_share": settings.global_control_share,
        "assignment": "SipHash-2-4 of customer_id keyed by the experiment name and campaign",
        "groups": counts,
        "balance": balance,
    }


def _plain(value: Any) -> float | None:
    value = float(value) if value is not None else float("nan")
    return None if value != value else round(value, 6)
