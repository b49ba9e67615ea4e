"""Measured outcomes of a campaign: each action's treatment group against its control group.

After a scoring run has assigned groups (:mod:`churnlens.experiments`) and the horizon has
passed, every customer of a contact action is in ``treatment`` (contacted) or ``control``
(would have been contacted, was not). Within an action the two groups differ only by a
hash of the customer id, so the difference of their outcomes estimates the action's
average effect on its customers. Outcomes are measured on purchases in the window
``(T, T + H]`` after the scoring day ``T``:

- **retention**: the share of customers with a purchase event in the window (the
  complement of churn as churnlens labels it; a refund is a purchase event too);
- **repeat purchase rate**: the share with at least two orders (purchases of a positive
  amount) in the window;
- **revenue per customer**: the window's spend net of refunds, zeros included;
- **average order value**: revenue over orders, per group.

Statistics (statsmodels 0.14+, scipy):

- a lift in retention or repeat purchase rate is ``p_treatment - p_control`` with
  Newcombe's hybrid-score 95% interval (``confint_proportions_2indep(method="newcomb")``)
  and the Agresti-Caffo test's two-sided p-value (``test_proportions_2indep``): both keep
  their level with groups of a few dozen customers and rates near 0 or 1;
- a revenue lift is a difference of means with Welch's interval and t test
  (``CompareMeans``, ``usevar="unequal"``);
- the **minimum detectable effect** is the smallest retention lift the groups detect with
  80% power at a two-sided 5% level: ``(z_0.975 + z_0.8) * sqrt(p (1 - p) (1/n_t +
  1/n_c))`` with ``p`` the control retention, a property of the design; an action whose
  lift the test does not tell from 0 (``p >= 0.05``, its interval holds 0) is flagged
  (``detectable`` false) and shown with it (comparing the measured lift with the MDE
  instead, post-hoc power, listed a quarter of significant lifts as "too small to tell");
- **incremental customers / revenue** are the lift times the treated customers, with the
  lift's interval scaled the same way; with ``experiment.costs`` (cost per contact) the
  **cost per incremental customer** is the campaign's cost over the incremental customers;
- the **all** row combines the actions stratified by action, weighted by treated
  customers (the average effect on the contacted customers, right however the control
  shares differ between actions), with a normal interval from the strata's variances.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

OUTCOME_COLUMNS: tuple[str, ...] = (
    "action", "n_treatment", "n_control", "retention_treatment", "retention_control",
    "lift", "lift_low", "lift_high", "p_value", "revenue_per_customer_treatment",
    "revenue_per_customer_control", "revenue_lift", "revenue_lift_low", "revenue_lift_high",
    "incremental_customers", "incremental_revenue",
)  # fmt: skip
DETAIL_COLUMNS: tuple[str, ...] = (
    "incremental_customers_low", "incremental_customers_high", "incremental_revenue_low",
    "incremental_revenue_high", "revenue_p_value", "repeat_rate_treatment",
    "repeat_rate_control", "repeat_lift", "repeat_lift_low", "repeat_lift_high",
    "aov_treatment", "aov_control", "mde", "detectable", "cost", "cost_per_incremental_customer",
)  # fmt: skip
ALL = "all"
Z = float(stats.norm.ppf(0.975))
Z_POWER = float(stats.norm.ppf(0.80))


def compare(treatment: pd.DataFrame, control: pd.DataFrame, cost: float | None = None) -> dict:
    """One comparison of two groups of customer outcomes (``retained``, ``repeat``,
    ``revenue``, ``orders``): every column of :data:`OUTCOME_COLUMNS` and
    :data:`DETAIL_COLUMNS` but ``action``, plus the lifts' standard errors (``_se``)."""
    nt, nc = len(treatment), len(control)
    row: dict[str, Any] = {"n_treatment": nt, "n_control": nc}
    rt, rc = _rate(treatment, "retained"), _rate(control, "retained")
    row |= {"retention_treatment": rt, "retention_control": rc}
    row |= _proportions(treatment["retained"].sum(), nt, control["retained"].sum(), nc, "lift")
    row |= {"repeat_rate_treatment": _rate(treatment, "repeat")}
    row |= {"repeat_rate_control": _rate(control, "repeat")}
    repeat = _proportions(treatment["repeat"].sum(), nt, control["repeat"].sum(), nc, "repeat_lift")
    row |= {k: v for k, v in repeat.items() if k != "repeat_lift_p"}
    row |= _means(treatment["revenue"].to_numpy(float), control["revenue"].to_numpy(float))
    row |= {"aov_treatment": _ratio(treatment), "aov_control": _ratio(control)}
    row["mde"] = mde(rc, nt, nc)
    # told apart from 0 by the test itself; the MDE is a property of the design only
    row["detectable"] = bool(row["p_value"] < 0.05) if row["p_value"] == row["p_value"] else False
    return _incremental(row, cost)


def mde(p_control: float, n_treatment: int, n_control: int) -> float:
    """The smallest retention lift detected with 80% power at a two-sided 5% level."""
    if n_treatment == 0 or n_control == 0 or p_control != p_control:
        return float("nan")
    p = min(max(p_control, 1.0 / (n_control + 1)), 1 - 1.0 / (n_control + 1))
    return (Z + Z_POWER) * math.sqrt(p * (1 - p) * (1 / n_treatment + 1 / n_control))


def measure(
    customers: pd.DataFrame, costs: dict[str, float] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The outcomes table (one row per action, then ``all``) and the same per action and
    lifecycle stage, from one row per customer of a contact action: ``action``,
    ``lifecycle_stage``, ``group`` (``treatment`` / ``control``) and the outcomes."""
    costs = costs or {}
    rows, staged = [], []
    for action, part in customers.groupby("action", sort=True):
        rows.append({"action": action, **_pair(part, costs.get(str(action)))})
        for stage, sub in part.groupby("lifecycle_stage", sort=True):
            staged.append({"action": action, "stage": stage, **_pair(sub, None)})
    rows.append({"action": ALL, **pool(rows, costs)})
    columns = [*OUTCOME_COLUMNS, *DETAIL_COLUMNS]
    table = pd.DataFrame(rows).reindex(columns=columns)
    stages = pd.DataFrame(staged).reindex(columns=["action", "stage", *columns[1:]])
    return table, stages


def pool(rows: list[dict], costs: dict[str, float]) -> dict:
    """The ``all`` row: the actions' lifts weighted by their treated customers, over the
    actions measured against a control group (the counts too: an action without one has
    no lift to credit its customers with)."""
    usable = [r for r in rows if r["n_treatment"] > 0 and r["n_control"] > 0]
    nt = sum(r["n_treatment"] for r in usable)
    nc = sum(r["n_control"] for r in usable)
    out: dict[str, Any] = {"n_treatment": nt, "n_control": nc}
    for key, prefix in (("lift", "lift"), ("revenue_lift", "revenue_lift")):
        if not nt:
            out |= {key: np.nan, f"{prefix}_low": np.nan, f"{prefix}_high": np.nan}
            continue
        w = np.array([r["n_treatment"] / nt for r in usable])
        est = float(np.dot(w, [r[key] for r in usable]))
        se = float(np.sqrt(np.dot(w**2, [r[f"{key}_se"] ** 2 for r in usable])))
        out |= {key: est, f"{prefix}_low": est - Z * se, f"{prefix}_high": est + Z * se}
        p = float(2 * stats.norm.sf(abs(est) / se)) if se > 0 else np.nan
        out["p_value" if key == "lift" else "revenue_p_value"] = p
    for column in ("retention", "revenue_per_customer", "repeat_rate"):
        for group, n in (("treatment", "n_treatment"), ("control", "n_control")):
            total = sum(r[n] for r in usable)
            values = [r[f"{column}_{group}"] * r[n] for r in usable]
            out[f"{column}_{group}"] = float(np.nansum(values) / total) if total else np.nan
    out["aov_treatment"] = out["aov_control"] = np.nan  # a ratio: per action only
    out["mde"], out["detectable"] = np.nan, False
    priced = [r for r in usable if str(r["action"]) in costs]
    spent = [costs[str(r["action"])] * r["n_treatment"] for r in priced]
    out["cost"] = float(sum(spent)) if spent else np.nan
    incremental = _incremental(dict(out), None)
    out |= {k: v for k, v in incremental.items() if k.startswith("incremental")}
    if spent and out["incremental_customers"] > 0:
        out["cost_per_incremental_customer"] = out["cost"] / out["incremental_customers"]
    else:
        out["cost_per_incremental_customer"] = np.nan
    return out


def _pair(part: pd.DataFrame, cost: float | None) -> dict:
    treatment = part[part["group"] == "treatment"]
    control = part[part["group"] == "control"]
    return compare(treatment, control, cost)


def _rate(group: pd.DataFrame, column: str) -> float:
    return float(group[column].mean()) if len(group) else float("nan")


def _ratio(group: pd.DataFrame) -> float:
    orders = float(group["orders"].sum())
    return float(group["revenue"].sum()) / orders if orders > 0 else float("nan")


def _proportions(ct: float, nt: int, cc: float, nc: int, key: str) -> dict:
    """Difference of two proportions: Newcombe's interval, Agresti-Caffo's p-value."""
    from statsmodels.stats.proportion import (
        confint_proportions_2indep,
        test_proportions_2indep,
    )

    nan = float("nan")
    p_name = "p_value" if key == "lift" else f"{key}_p"
    if nt == 0 or nc == 0:
        return {key: nan, f"{key}_low": nan, f"{key}_high": nan, f"{key}_se": nan, p_name: nan}
    pt, pc = ct / nt, cc / nc
    with np.errstate(divide="ignore", invalid="ignore"):  # its ratios, unused, at p = 0
        low, high = confint_proportions_2indep(ct, nt, cc, nc, method="newcomb", compare="diff")
        test = test_proportions_2indep(ct, nt, cc, nc, method="agresti-caffo", compare="diff")
    se = math.sqrt(pt * (1 - pt) / nt + pc * (1 - pc) / nc)
    return {
        key: pt - pc,
        f"{key}_low": float(low),
        f"{key}_high": float(high),
        f"{key}_se": se,
        p_name: float(test.pvalue),
    }


def _means(t: np.ndarray, c: np.ndarray) -> dict:
    """Difference of mean revenue: Welch's interval and t test."""
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    nan = float("nan")
    out = {
        "revenue_per_customer_treatment": float(t.mean()) if len(t) else nan,
        "revenue_per_customer_control": float(c.mean()) if len(c) else nan,
    }
    keys = ("revenue_lift", "revenue_lift_low", "revenue_lift_high", "revenue_lift_se")
    if len(t) < 2 or len(c) < 2:
        return out | dict.fromkeys((*keys, "revenue_p_value"), nan)
    diff = float(t.mean() - c.mean())
    se = math.sqrt(t.var(ddof=1) / len(t) + c.var(ddof=1) / len(c))
    if se == 0:  # both groups constant: the difference is known exactly
        return (
            out
            | dict(zip(keys, (diff, diff, diff, 0.0), strict=True))
            | {"revenue_p_value": 1.0 if diff == 0 else 0.0}
        )
    compared = CompareMeans(DescrStatsW(t), DescrStatsW(c))
    low, high = compared.tconfint_diff(alpha=0.05, usevar="unequal")
    _, p, _ = compared.ttest_ind(usevar="unequal")
    return (
        out
        | dict(zip(keys, (diff, float(low), float(high), se), strict=True))
        | {"revenue_p_value": float(p)}
    )


def _incremental(row: dict, cost: float | None) -> dict:
    nt = row["n_treatment"]
    for name, key in (("incremental_customers", "lift"), ("incremental_revenue", "revenue_lift")):
        row[name] = row[key] * nt
        row[f"{name}_low"] = row[f"{key}_low"] * nt
        row[f"{name}_high"] = row[f"{key}_high"] * nt
    if cost is not None:
        row["cost"] = cost * nt
        gained = row["incremental_customers"]
        row["cost_per_incremental_customer"] = row["cost"] / gained if gained > 0 else np.nan
    else:
        row.setdefault("cost", np.nan)
        row.setdefault("cost_per_incremental_customer", np.nan)
    return row


__all__ = ["ALL", "DETAIL_COLUMNS", "OUTCOME_COLUMNS", "compare", "mde", "measure", "pool"]
