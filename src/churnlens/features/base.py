"""What every feature family provides, and the context it is built in.

The engine (engine.py) runs one SQL statement with five per-customer aggregations, and
each family contributes select expressions to the ones it needs:

``contacts``
    Every contact (purchase or inbound event) on or before the as-of day: columns
    ``customer_id, timestamp, day, age, channel, event_type, amount, role``.
``sequence``
    The same contacts in time order per customer (by timestamp, channel, event_type),
    with ``customer_id, timestamp, day, age, channel`` and, from the previous contact of
    the same customer, ``prev_channel``, ``gap`` (days since the previous contact day;
    NULL on the first contact and on a further contact the same day) and ``new_day``
    (first contact of its day).
``purchase_days``
    One row per customer and day with a purchase, with that day's ``age``.
``channels``
    One row per customer and channel with ``n``, the number of contacts.
``outbound``
    Every outbound touch on or before the as-of day: ``customer_id, timestamp, age``.

``age`` is the number of days between an event's day and the as-of day (0 on it). A
family's ``finish`` turns the joined raw aggregates into its feature columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd

from churnlens.config import Settings
from churnlens.features.population import PopulationStats

PURCHASE = "role = 'purchase'"


@dataclass(frozen=True)
class FeatureContext:
    """Inputs every builder sees: settings, as-of date and population statistics."""

    settings: Settings
    as_of: date
    population: PopulationStats


def ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    """num / den as float, NaN where den is 0 or missing."""
    den = den.astype(float)
    return num.astype(float) / den.where(den != 0)


def counts(raw: pd.DataFrame, column: str) -> pd.Series:
    """A count column as float, 0 for customers without a matching row."""
    return raw[column].fillna(0).astype(float)


def sql_literal(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"
