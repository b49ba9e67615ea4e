"""What every feature family provides, and the context it is built in."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Protocol

import pandas as pd

from churnlens.config import Settings
from churnlens.features.population import PopulationStats

# SQL conditions over the point-in-time event view ``ev`` (see engine.py).
CONTACT = "role <> 'outbound'"
PURCHASE = "role = 'purchase'"
OUTBOUND = "role = 'outbound'"


@dataclass(frozen=True)
class FeatureContext:
    """Inputs every builder sees: settings, as-of date and population statistics."""

    settings: Settings
    as_of: date
    population: PopulationStats


class FeatureFamily(Protocol):
    """A family of features: its column names, its SQL and its finishing step.

    ``sql`` is one query over the view ``ev`` returning ``customer_id`` plus raw
    columns; the engine runs all families in one statement and hands the joined raw
    frame to ``finish``, which returns exactly the family's ``feature_names``.
    """

    def feature_names(self, settings: Settings) -> list[str]: ...

    def sql(self, settings: Settings) -> str: ...

    def finish(self, raw: pd.DataFrame, ctx: FeatureContext) -> pd.DataFrame: ...


def ratio(num: pd.Series, den: pd.Series) -> pd.Series:
    """num / den as float, NaN where den is 0 or missing."""
    den = den.astype(float)
    return num.astype(float) / den.where(den != 0)


def counts(raw: pd.DataFrame, column: str) -> pd.Series:
    """A count column as float, 0 for customers without a matching row."""
    return raw[column].fillna(0).astype(float)
