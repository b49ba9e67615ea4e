"""The event-log contract: the columns, the roles of event types, the as-of day.

An event log has one row per event with the required columns ``customer_id``,
``timestamp``, ``channel`` and ``event_type`` and the optional ``amount`` (default 0),
``direction`` (``inbound`` | ``outbound``) and ``duration_s``. Extra columns are ignored.
Timestamps with a time zone are converted to UTC; naive timestamps are taken as UTC.
An event's *role* is ``purchase`` (its type is a purchase type), ``outbound`` (a touch
the company sent: ``direction`` says so, or, without one, its type is an outbound type)
or ``inbound`` (everything else: a contact the customer made).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa

from churnlens.config import Settings
from churnlens.errors import InputError, Problem
from churnlens.events.sql import enum_type, literal, literals

REQUIRED_COLUMNS: tuple[str, ...] = ("customer_id", "timestamp", "channel", "event_type")
OPTIONAL_COLUMNS: tuple[str, ...] = ("amount", "direction", "duration_s")
CANONICAL_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
ROLES: tuple[str, ...] = ("purchase", "inbound", "outbound")

EventSource = str | Path | pd.DataFrame | pa.Table


@dataclass(frozen=True)
class EventSummary:
    """What was loaded: sizes, date range and counts per event type, channel and role."""

    source: str
    rows_read: int
    events: int
    duplicates_dropped: int
    customers: int
    first_timestamp: datetime | None
    last_timestamp: datetime | None
    by_event_type: dict[str, int] = field(default_factory=dict)
    by_channel: dict[str, int] = field(default_factory=dict)
    by_role: dict[str, int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what looks wrong though the contract allows it


def role_sql(settings: Settings, as_enum: bool = False) -> str:
    """The SQL giving an event's role from its ``event_type`` and ``direction``; as the
    role ENUM (cheaper than casting the text row by row) when ``as_enum``."""
    purchase = literals(settings.events.purchase_types)
    outbound = literals(settings.events.outbound_types)

    def role(name: str) -> str:
        return f"CAST({literal(name)} AS {enum_type(ROLES)})" if as_enum else literal(name)

    return (
        f"CASE WHEN event_type IN ({purchase}) THEN {role('purchase')} "
        f"WHEN direction = 'outbound' OR (direction IS NULL AND event_type IN ({outbound})) "
        f"THEN {role('outbound')} ELSE {role('inbound')} END"
    )


def _normalise(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def missing_column_problems(present: list[str]) -> list[Problem]:
    """A problem for each required column not in ``present``, with a likely rename, and
    for each contract column given twice (the readers name the second ``<name>_1``, and
    names are compared with their spaces trimmed): which one is meant cannot be told."""
    problems = []
    for col in CANONICAL_COLUMNS:
        copies = [c for c in present if c == col or re.fullmatch(rf"{col}_\d+", c)]
        if col in present and len(copies) > 1:
            problems.append(
                Problem(
                    column=col,
                    message=f"the column is given {len(copies)} times "
                    f"(read as {', '.join(repr(c) for c in copies)})",
                    fix=f"keep one '{col}' column",
                )
            )
    by_norm = {_normalise(c): c for c in present}
    for col in REQUIRED_COLUMNS:
        if col in present:
            continue
        close = difflib.get_close_matches(_normalise(col), list(by_norm), n=1, cutoff=0.75)
        hint = f"; did you mean '{by_norm[close[0]]}'?" if close else ""
        fix = (
            f"rename '{by_norm[close[0]]}' to '{col}'"
            if close
            else f"add a '{col}' column (required: {', '.join(REQUIRED_COLUMNS)})"
        )
        problems.append(Problem(column=col, message=f"required column is missing{hint}", fix=fix))
    return problems


def parse_as_of(value: str | date | datetime, option: str = "--as-of") -> date:
    """An as-of date from ``YYYY-MM-DD`` text, a date or a datetime; an error names
    ``option``."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip())
    except ValueError:
        raise InputError(
            option,
            [
                Problem(
                    column="",
                    message=f"{str(value)!r} is not a date",
                    fix="give the day as YYYY-MM-DD, e.g. 2025-12-31",
                )
            ],
        ) from None


def days_after(day: date, days: int, what: str = "--as-of") -> date:
    """``day`` plus ``days``; :class:`InputError` naming ``what`` when that is past the
    calendar's last day (an as-of day in the year 9999 with a horizon)."""
    try:
        return day + timedelta(days=days)
    except OverflowError:
        raise InputError(
            what,
            [
                Problem(
                    "",
                    f"{day} plus {days:,} days is past the calendar's last day",
                    fix="give the day of your log",
                )
            ],
        ) from None
