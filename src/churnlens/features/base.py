"""What every feature family provides, and the context it is built in.

The engine (engine.py) runs one SQL statement over a compact copy of the events up to the
as-of day (``customer_id, timestamp, age, channel, event_type, amount, role``; channel,
event type and role are ENUMs, which compare with string literals as text does). Each
family contributes select expressions, through ``<relation>_aggregates(settings,
seen_channels)`` (``seen_channels``: the distinct channels of the log, sorted), to the
per-customer aggregations it needs:

``contacts`` and ``sequence``
    One aggregation over every contact (purchase or inbound event) on or before the as-of
    day, in time order per customer (by timestamp, then channel; contacts tying on both
    are interchangeable, as they have the same age): columns
    ``customer_id, timestamp, age, channel`` and, from the previous contact of the same
    customer, ``prev_channel``, ``gap`` (whole days since the previous contact day, an
    integer; NULL on the first contact and on a further contact the same day) and
    ``new_day`` (first contact of its day). ``role`` and ``amount`` are not carried:
    purchases have their own relation.
``purchase_days``
    One row per customer and day with a purchase: that day's ``age``, ``n`` (purchase
    events that day) and ``amount`` (their summed amounts).
``channels``
    One row per customer and channel with ``n``, the number of contacts. Only aggregated
    when a family asks for it (channels.py does only for logs with many channels).
``outbound``
    Every outbound touch on or before the as-of day: ``customer_id, timestamp, age`` and
    ``last_contact``, the timestamp of the customer's last contact (NULL without one).

``age`` is the number of days between an event's day and the as-of day (0 on it). A
family's ``finish`` turns the joined raw aggregates into its feature columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd

from churnlens.config import Settings
from churnlens.features.population import PopulationStats


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
