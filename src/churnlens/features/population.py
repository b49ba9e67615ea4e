"""Population statistics that features are scored against.

RFM quintile scores and the shrunk repurchase cycle compare a customer with the rest of
the population. When features are built for a slice of customers (a scoring chunk, a
Spark bucket), the slice must be scored against the population seen at training time,
so these statistics are a value of their own that can be computed once and passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QUINTILES: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True)
class PopulationStats:
    """Cut points of the RFM quintile scores and the population median purchase interval.

    Attributes
    ----------
    recency_cuts, frequency_cuts, monetary_cuts
        The 20th, 40th, 60th and 80th percentiles over customers with a purchase
        (``NaN`` when nobody has bought).
    median_interval_days
        Median of all repurchase intervals, pooled over customers (``NaN`` when nobody
        has bought on two different days).
    """

    recency_cuts: tuple[float, ...]
    frequency_cuts: tuple[float, ...]
    monetary_cuts: tuple[float, ...]
    median_interval_days: float


def quintile_cuts(values: np.ndarray) -> tuple[float, ...]:
    """The four quintile cut points of ``values`` (NaN values ignored)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return tuple(float("nan") for _ in QUINTILES)
    return tuple(float(v) for v in np.quantile(values, QUINTILES))


def quintile_score(
    values: np.ndarray, cuts: tuple[float, ...], *, reverse: bool = False
) -> np.ndarray:
    """Score 1..5: one plus the number of cut points strictly below each value.

    ``reverse=True`` gives 5 minus that number (for recency: recent is good). NaN values
    score NaN. Equal values always get equal scores.
    """
    values = np.asarray(values, dtype=float)
    below = (np.asarray(cuts, dtype=float)[None, :] < values[:, None]).sum(axis=1)
    score = (5 - below) if reverse else (1 + below)
    return np.where(np.isnan(values), np.nan, score.astype(float))
