"""Population statistics that features are scored against.

RFM quintile scores and the shrunk repurchase cycle compare a customer with the rest of
the population: the buyers of the log being featurised or scored, as of its as-of day
(training snapshots use each snapshot's own population, and so does scoring). When
features are built for a slice of customers, the slice is scored against its own buyers
unless the whole log's statistics are passed in: ``features`` and ``score`` record the
population they used in their manifests, and ``--population MANIFEST`` (or
``population=`` in Python) scores a slice against it, giving each customer exactly the
features and probabilities they get within the whole log.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from churnlens.errors import InputError, Problem

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
        The population median cycle: the median, over customers with purchases on at
        least two days, of their own mean interval between purchase days (``NaN`` when
        nobody has bought on two different days; see docs/features.md, ``cycle_*``).
    """

    recency_cuts: tuple[float, ...]
    frequency_cuts: tuple[float, ...]
    monetary_cuts: tuple[float, ...]
    median_interval_days: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values (NaN as null)."""

        def plain(v: Any) -> Any:
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return None if isinstance(v, float) and math.isnan(v) else float(v)

        return {k: plain(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PopulationStats:
        """The statistics :meth:`to_dict` wrote."""

        def number(v: Any) -> float:
            return float("nan") if v is None else float(v)

        return cls(
            recency_cuts=tuple(number(v) for v in data["recency_cuts"]),
            frequency_cuts=tuple(number(v) for v in data["frequency_cuts"]),
            monetary_cuts=tuple(number(v) for v in data["monetary_cuts"]),
            median_interval_days=number(data["median_interval_days"]),
        )


def load_population(path: str | Path, as_of: str | date | None = None) -> PopulationStats:
    """The population statistics recorded in a ``features`` or ``score`` manifest (or a
    JSON file of :meth:`PopulationStats.to_dict`). With ``as_of``, a manifest of a later
    day is refused: its cut points and median cycle would bring the days after ``as_of``
    into the features."""
    path = Path(path)
    fix = "give the manifest (.manifest.json) of a features or scores file of the whole log"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        stats = data.get("population", data) if isinstance(data, dict) else None
        found = PopulationStats.from_dict(stats.get("statistics", stats))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "no population statistics in it"
        problem = Problem("--population", reason or str(exc), fix=fix)
        raise InputError(str(path), [problem]) from None
    recorded = str(data.get("as_of") or "")[:10]
    if as_of is not None and recorded and recorded > str(as_of)[:10]:
        problem = Problem(
            "--population",
            f"statistics of the log as of {recorded}, after this run's as-of day "
            f"{str(as_of)[:10]}: they would bring later days into the features",
            fix=f"give the manifest of a features or scores run as of {str(as_of)[:10]}",
        )
        raise InputError(str(path), [problem])
    return found


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


def resolve_population(
    value: PopulationStats | str | Path | None,
    source: str | None = None,
    as_of: str | date | None = None,
) -> tuple[PopulationStats | None, str | None]:
    """``(statistics, source)`` from statistics or a manifest path (:func:`load_population`,
    which refuses one of a day after ``as_of``); ``(None, None)`` for the log's own
    population."""
    if value is None or isinstance(value, PopulationStats):
        return value, source or ("given" if value is not None else None)
    return load_population(value, as_of), source or str(value)
