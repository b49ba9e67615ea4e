"""The feature-family protocol: what every family declares, and the context it is built in.

A family is one module under ``churnlens/features/families/`` that defines ``FAMILY``, a
:class:`FeatureFamily`: its name (the prefix of its columns), its output names, its SQL
aggregates per relation, its pandas finishing, its reason phrases and the heading of its
section in docs/features.md. The registry (:mod:`churnlens.features.families`) finds
every family module; adding a family is one module plus its reference test. A declaration
that names an unknown relation, a module without ``FAMILY`` or two families with one
name fail at import.

The engine (engine.py) runs one SQL statement over a compact copy of the events up to the
as-of day (``customer_id, timestamp, age, channel, event_type, amount, role``; channel,
event type and role are ENUMs, which compare with string literals as text does). Each
family contributes select expressions, through its ``aggregates[relation](settings,
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
family's ``finish`` turns the joined raw aggregates into its feature columns (each
expression is ``<sql> AS <name>``; names starting with ``_`` are the family's internal
columns).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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


def count(value: float | int | str, noun: str, plural: str | None = None) -> str:
    """``value`` (rounded to a whole number, with thousands separators) and ``noun``,
    singular for 1 and plural otherwise: ``count(1, "day")`` is "1 day", ``count(2.4,
    "day")`` "2 days", ``count(1234, "day")`` "1,234 days". The plural is ``noun + "s"``
    unless given (``count(v, "touch", "touches")``). A string (a window's digits taken
    from a column name) is shown as it is. Used by the reason phrases."""
    text = value if isinstance(value, str) else f"{float(value):,.0f}"
    return f"{text} {noun if text in ('1', '-1') else plural or noun + 's'}"


RELATIONS: tuple[str, ...] = ("contacts", "sequence", "purchase_days", "channels", "outbound")

Aggregates = Callable[[Settings, tuple[str, ...]], list[str]]
Phrase = Callable[[float, re.Match[str]], str]


@dataclass(frozen=True)
class FeatureFamily:
    """A feature family's declaration (see the module docstring).

    ``phrases``: (regular expression on a column name, phrase of the customer's value)
    pairs, first match wins; ``missing``: the phrase for a column whose value is NaN.
    """

    name: str
    order: int  # position of its columns in the feature frame
    doc: str  # the heading of its section in docs/features.md, after "## "
    names: Callable[[Settings], list[str]]
    finish: Callable[[pd.DataFrame, FeatureContext], pd.DataFrame]
    aggregates: Mapping[str, Aggregates]
    phrases: tuple[tuple[str, Phrase], ...] = ()
    missing: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.aggregates) - set(RELATIONS))
        if unknown:
            raise TypeError(
                f"feature family {self.name!r} aggregates over unknown relation(s) {unknown}; "
                f"the relations are {list(RELATIONS)}"
            )
        if not re.fullmatch(r"[a-z]+", self.name):
            raise TypeError(f"feature family name {self.name!r}: lower-case letters only")
        if not self.doc.startswith(f"{self.name}_*"):
            raise TypeError(f"feature family {self.name!r}: its doc heading starts {self.name}_*")

    def expressions(
        self, relation: str, settings: Settings, channels: tuple[str, ...]
    ) -> list[str]:
        """Its select expressions over ``relation`` (none when it does not aggregate it)."""
        hook = self.aggregates.get(relation)
        return hook(settings, channels) if hook else []
