"""Quoting for SQL built from data, configuration or paths: the one place that does it.

Every identifier or literal that comes from outside the code (a channel name, an event
type, a policy's action name, a file path, a date) reaches DuckDB or Spark SQL through
these functions, so a value holding ``'`` or ``"`` is text, never SQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import Path


def ident(name: str, dialect: str = "duckdb") -> str:
    r"""A quoted identifier: ``"name"`` with inner quotes doubled, or in Spark SQL
    (``dialect="spark"``) ``\`name\``` with inner backticks doubled."""
    if dialect == "spark":
        return "`" + str(name).replace("`", "``") + "`"
    return '"' + str(name).replace('"', '""') + '"'


def literal(value: str, dialect: str = "duckdb") -> str:
    """A string literal: ``'value'`` with inner quotes doubled, or, in Spark SQL
    (``dialect="spark"``), backslash-escaped (there ``''`` ends one string and starts
    another, which Spark glues on: ``'o''brien'`` would read ``obrien``)."""
    if dialect == "spark":
        return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + str(value).replace("'", "''") + "'"


def literals(values: Iterable[str], empty: str = "NULL") -> str:
    """Comma-separated literals for an ``IN (...)`` list; ``empty`` when there are none
    (``x IN (NULL)`` is never true)."""
    text = ", ".join(literal(v) for v in values)
    return text or empty


def path_literal(path: str | Path) -> str:
    """A file path (or glob) as a string literal."""
    return literal(str(path))


def date_literal(day: date) -> str:
    """``DATE 'YYYY-MM-DD'``."""
    return f"DATE {literal(day.isoformat())}"


def enum_type(values: Iterable[str]) -> str:
    """A DuckDB ``ENUM(...)`` type over ``values`` (in their order)."""
    return "ENUM(" + ", ".join(literal(v) for v in values) + ")"
