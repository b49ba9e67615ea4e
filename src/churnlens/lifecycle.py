"""Lifecycle stages from each customer's own repurchase cycle ("dynamic lifecycle").

A customer who buys every 80 days is not lapsed at day 90; one who buys weekly is. So:

- **repeat buyers** (purchases on two or more days) are measured in their own shrunk cycle
  (``cycle_days``, see docs/features.md): ``active`` while the days since their last
  purchase are at most ``silent_after_cycles`` cycles, ``silent`` up to
  ``sleeping_after_cycles``, ``sleeping`` up to ``lost_after_cycles``, ``lost`` beyond;
- **one-time buyers** have no cycle of their own, so the population's repurchase
  intervals set the clock: ``new`` while the purchase is at most the first
  ``one_time_percentiles`` percentile old (50th by default), then ``silent`` up to the
  second (80th), ``sleeping`` up to the third (95th), ``lost`` beyond;
- **customers who never bought** follow the same thresholds, counted from the day they
  were first seen (their days without a purchase).

Each customer also gets the dates on which they turn (or turned) ``silent`` and ``lost``
if they do not buy: the first day whose day count passes the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd
import pyarrow as pa

from churnlens.config import LifecycleSettings, Settings

STAGES: tuple[str, ...] = ("new", "active", "silent", "sleeping", "lost")
STAGE_DTYPE = pd.CategoricalDtype(list(STAGES), ordered=True)
NEEDED_FEATURES: tuple[str, ...] = (
    "rfm_has_purchase",
    "rfm_recency_days",
    "cycle_n_intervals",
    "cycle_days",
    "freq_tenure_days",
)


@dataclass(frozen=True)
class StageThresholds:
    """Day counts that end the new, silent and sleeping stages of one-time and non-buyers.

    The percentiles (``percentiles``) of the population's repurchase intervals as of a
    day; ``buyers`` is how many repeat buyers they come from (0: a fallback was used).
    """

    days: tuple[float, float, float]
    percentiles: tuple[float, float, float]
    buyers: int


def stage_thresholds(own_cycles: pd.Series | np.ndarray, settings: Settings) -> StageThresholds:
    """Percentiles of the repeat buyers' own mean repurchase intervals.

    ``own_cycles`` is ``cycle_own_days`` of the population (NaN for customers without a
    repeat purchase, ignored), so the 50th percentile is the population median cycle
    that one-time buyers' ``cycle_days`` falls back on. When nobody has bought on two
    days, the configured default cycle times the stage multipliers is used instead.
    """
    life = settings.lifecycle
    values = np.asarray(own_cycles, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        p = settings.features.cycle_default_days
        multipliers = (life.silent_after_cycles, life.sleeping_after_cycles, life.lost_after_cycles)
        days = tuple(p * m for m in multipliers)
    else:
        days = tuple(float(q) for q in np.percentile(values, life.one_time_percentiles))
    return StageThresholds(
        days=days, percentiles=life.one_time_percentiles, buyers=int(values.size)
    )  # type: ignore[arg-type]


def date_array(days: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """Calendar dates (numpy ``datetime64[D]``) as a pandas array of Arrow ``date32``."""
    return pd.arrays.ArrowExtensionArray(pa.array(np.asarray(days, dtype="datetime64[D]")))


def assign_stages(
    features: pd.DataFrame,
    as_of: date,
    thresholds: StageThresholds,
    settings: LifecycleSettings | None = None,
) -> pd.DataFrame:
    """The lifecycle stage of every customer of a feature frame.

    Returns a frame on the same index with ``lifecycle_stage`` (ordered categorical),
    ``cycle_days``, ``days_since_purchase`` (NaN without a purchase), ``silent_on`` and
    ``lost_on`` (dates, past ones when the customer already got there).
    """
    life = settings or LifecycleSettings()
    missing = [c for c in NEEDED_FEATURES if c not in features.columns]
    if missing:
        raise KeyError(f"lifecycle stages need the feature columns {missing}")
    bought = features["rfm_has_purchase"].to_numpy(dtype=float) > 0
    repeat = bought & (features["cycle_n_intervals"].to_numpy(dtype=float) >= 1)
    recency = features["rfm_recency_days"].to_numpy(dtype=float)
    tenure = features["freq_tenure_days"].to_numpy(dtype=float)
    cycle = features["cycle_days"].to_numpy(dtype=float)
    # days without a purchase: since the last one, or since first seen for non-buyers
    waited = np.where(bought, recency, tenure)
    multipliers = (life.silent_after_cycles, life.sleeping_after_cycles, life.lost_after_cycles)
    bounds = np.where(
        repeat[:, None],
        cycle[:, None] * np.array(multipliers)[None, :],
        np.array(thresholds.days, dtype=float)[None, :],
    )
    passed = (waited[:, None] > bounds).sum(axis=1)  # 0..3 thresholds behind
    first_stage = np.where(repeat, 1, 0)  # active for repeat buyers, new for the others
    codes = np.where(passed == 0, first_stage, passed + 1)
    stage = pd.Categorical.from_codes(codes, dtype=STAGE_DTYPE)
    day0 = np.datetime64(as_of, "D")
    last = day0 - waited.astype("timedelta64[D]")
    silent_on = last + (np.floor(bounds[:, 0]).astype("int64") + 1).astype("timedelta64[D]")
    lost_on = last + (np.floor(bounds[:, 2]).astype("int64") + 1).astype("timedelta64[D]")
    return pd.DataFrame(
        {
            "lifecycle_stage": stage,
            "cycle_days": cycle,
            "days_since_purchase": np.where(bought, recency, np.nan),
            "silent_on": date_array(silent_on),
            "lost_on": date_array(lost_on),
        },
        index=features.index,
    )


STALE_DAYS = 366


def stale_as_of(as_of: date, buyers: pd.DataFrame) -> tuple[str, ...]:
    """A note when the log's newest purchase is over a year before the as-of day: every
    customer is then scored as long gone, which is rarely what was meant."""
    recency = buyers["rfm_recency_days"] if "rfm_recency_days" in buyers else pd.Series([])
    newest = float(recency.min()) if len(recency) else float("nan")
    if not newest > STALE_DAYS:
        return ()
    return (
        f"the log's newest purchase is {newest:,.0f} days before the as-of day {as_of}: "
        "every customer is scored as long gone; check --as-of",
    )
