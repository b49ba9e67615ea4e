"""What is at stake with each customer: value at risk, the win-back value and CLV.

From the churn model's probability and the value model's ``value_if_retained``:

- ``value_at_risk`` = churn probability x value if retained, for customers who are not
  ``lost``; 0 for ``lost`` customers, whose value if retained is reported instead as
  ``winback_value`` (empty for the others): the lists ranked by value at risk point at
  customers who can still be kept;
- ``clv`` = GC / (1 + d - r), the CRM textbook's customer lifetime value: GC the yearly
  gross contribution if retained (``value.margin`` x the value if retained, annualised:
  x 365 / ``value.horizon_days``), d the yearly discount rate (``value.discount_rate``)
  and r the yearly retention probability from the churn model. The churn probability p
  is over the churn horizon h (``training.horizon_days``), so the chance of staying a
  year is (1 - p) ^ (365 / h): a customer who stays through each horizon independently.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from churnlens.config import Settings

YEAR_DAYS = 365.0


def yearly_retention(churn_probability: np.ndarray, horizon_days: float) -> np.ndarray:
    """The chance of staying a year, from the churn probability over ``horizon_days``."""
    stay = np.clip(1.0 - np.asarray(churn_probability, dtype=float), 0.0, 1.0)
    return stay ** (YEAR_DAYS / horizon_days)


def clv(
    value_if_retained: np.ndarray,
    value_horizon_days: float,
    retention: np.ndarray,
    margin: float,
    discount_rate: float,
) -> np.ndarray:
    """GC / (1 + d - r) (see the module docstring)."""
    yearly = margin * np.asarray(value_if_retained, dtype=float) * YEAR_DAYS / value_horizon_days
    return yearly / (1.0 + discount_rate - np.asarray(retention, dtype=float))


def add_stakes(frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """``value_at_risk``, ``winback_value`` and ``clv`` for a frame with
    ``lifecycle_stage``, ``churn_probability`` and ``value_if_retained``; ``settings``
    are the churn model's (its horizon) with the value settings."""
    lost = (frame["lifecycle_stage"].astype(object) == "lost").to_numpy()
    p = frame["churn_probability"].to_numpy(dtype=float)
    retained = frame["value_if_retained"].to_numpy(dtype=float)
    v = settings.value
    out = frame.assign(
        value_at_risk=np.where(lost, 0.0, p * retained),
        winback_value=np.where(lost, retained, np.nan),
        clv=clv(
            retained,
            v.horizon_days,
            yearly_retention(p, settings.training.horizon_days),
            v.margin,
            v.discount_rate,
        ),
    )
    return out


IMPLAUSIBLE = 100_000  # a mean order this many times the buyers' median: not money


def implausible_amounts(mean_orders: pd.Series) -> tuple[str, ...]:
    """A note when some buyers' mean order (``rfm_monetary_mean``) is over
    :data:`IMPLAUSIBLE` times the median buyer's: an order number or a wrong unit pasted
    into ``amount`` passes the contract (below 1e18) yet moves value tiers, value at risk
    and the budget's ranking for everyone."""
    mean = mean_orders.astype(float).abs()
    median = float(mean[mean > 0].median()) if (mean > 0).any() else float("nan")
    if not median > 0:
        return ()
    wild = mean[mean > IMPLAUSIBLE * median].sort_values(ascending=False)
    if wild.empty:
        return ()
    shown = ", ".join(f"{value:,.4g}" for value in wild.head(3))
    return (
        f"{len(wild):,} customer(s)' mean order is over {IMPLAUSIBLE:,} times the median "
        f"customer's ({median:,.4g}): {shown}; an id or a wrong unit in `amount`? Their "
        "values, and the value tiers and value at risk of everyone, follow them",
    )
