"""The contract's rules as SQL: each column typed, each row checked, every problem listed.

:func:`typed_columns` gives each canonical column its contract type from whatever the
source holds (text is trimmed in every format, so a CSV and a Parquet file of the same
data agree; text from CSV is parsed; typed Parquet or Arrow columns are cast).
:func:`checks_for` lists the row checks as a declarative table of (column, condition,
message, fix), leaving out those the source's types make impossible;
:func:`raise_on_problems` runs them all in one scan and raises one
:class:`~churnlens.errors.InputError` naming every problem with its rows and examples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import duckdb
import numpy as np

from churnlens.errors import InputError, Problem
from churnlens.events.fingerprint import ROW_HASH, FingerprintParts
from churnlens.events.sql import ident

_NUMERIC = re.compile(
    r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|"
    r"UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL.*)$"
)
TIME_TYPE = re.compile(r"^(DATE|TIMESTAMP.*)$")


def _text(col: str, trim: bool = True) -> str:
    return f"NULLIF({plain_text(col, trim)}, '')"


def plain_text(col: str, trim: bool) -> str:
    """The column as (trimmed) text, empty text left empty: for columns whose checks
    reject empty values themselves. Without NULLIF's CASE, DuckDB keeps Parquet's
    dictionary-encoded vectors and casts each distinct value once."""
    value = f"CAST({ident(col)} AS VARCHAR)"
    return f"trim({value})" if trim else value


def _number(col: str, dtype: str) -> str:
    if _NUMERIC.match(dtype):
        return f"CAST({ident(col)} AS DOUBLE)"
    return f"TRY_CAST({_text(col)} AS DOUBLE)"


def _timestamp(col: str, dtype: str) -> str:
    if TIME_TYPE.match(dtype):  # infinite stored values become NULL: refused below
        return f"CASE WHEN isfinite({ident(col)}) THEN CAST({ident(col)} AS TIMESTAMP) END"
    if dtype == "VARCHAR":
        # Session time zone is UTC: offsets are converted, naive values taken as UTC.
        # Only text that starts with a digit is a date: DuckDB also reads the words
        # 'epoch' (1970-01-01) and '[-]infinity', which no event log means.
        text = _text(col)
        cast = f"CAST(TRY_CAST({text} AS TIMESTAMPTZ) AS TIMESTAMP)"
        return f"CASE WHEN left(ltrim({text}), 1) BETWEEN '0' AND '9' THEN {cast} END"
    return "CAST(NULL AS TIMESTAMP)"


@dataclass(frozen=True)
class Check:
    """A row check: rows where ``condition`` holds break the contract in ``column``."""

    column: str
    condition: str
    message: str
    fix: str


def typed_columns(types: dict[str, str], trim: bool) -> dict[str, str]:
    """SQL expressions giving each canonical column its contract type."""
    typed = {
        # required text: empty values stay empty, and are rejected by the checks
        "customer_id": plain_text("customer_id", trim),
        "timestamp": _timestamp("timestamp", types["timestamp"]),
        "channel": plain_text("channel", trim),
        "event_type": plain_text("event_type", trim),
        "amount": "CAST(NULL AS DOUBLE)",
        "direction": "CAST(NULL AS VARCHAR)",
        "duration_s": "CAST(NULL AS DOUBLE)",
    }
    if "amount" in types:
        typed["amount"] = _number("amount", types["amount"])
    if "duration_s" in types:
        typed["duration_s"] = _number("duration_s", types["duration_s"])
    if "direction" in types:
        typed["direction"] = f"NULLIF(lower({plain_text('direction', trim=True)}), '')"
    return typed


def checks_for(types: dict[str, str], trim: bool) -> list[Check]:
    """The row checks for a source with these column types (see the module docstring)."""
    ts_type = types["timestamp"]
    checks = [
        Check(
            "customer_id",
            "customer_id IS NULL OR customer_id = ''",
            "missing or empty customer id",
            "every event needs the id of its customer; drop or repair these rows",
        ),
        Check(
            "timestamp",
            f"{_text('r_timestamp', trim)} IS NULL"
            if ts_type == "VARCHAR"
            else "r_timestamp IS NULL",
            "missing timestamp",
            "every event needs a date or date-time",
        ),
        Check(
            "channel",
            "channel IS NULL OR channel = ''",
            "missing or empty channel",
            "give each event the channel it came through (e.g. web, phone)",
        ),
        Check(
            "event_type",
            "event_type IS NULL OR event_type = ''",
            "missing or empty event type",
            "give each event a type (e.g. purchase, visit, marketing)",
        ),
    ]
    # Checks a source's types make impossible are left out (each costs a little on every
    # row): a date-time column always casts, a numeric one is never text or, unless
    # floating point, NaN.
    if ts_type == "VARCHAR":
        checks.append(
            Check(
                "timestamp",
                "r_timestamp IS NOT NULL AND timestamp IS NULL",
                "timestamp cannot be parsed",
                "use ISO 8601: YYYY-MM-DD, YYYY-MM-DD HH:MM:SS or with an offset (+02:00 or Z)",
            )
        )
    elif TIME_TYPE.match(ts_type):
        checks.append(
            Check(
                "timestamp",
                "r_timestamp IS NOT NULL AND timestamp IS NULL",
                "timestamp is infinite",
                "give each event the real date and time it happened",
            )
        )
    else:
        checks.append(
            Check(
                "timestamp",
                "r_timestamp IS NOT NULL",
                f"timestamp has type {ts_type}",
                "store timestamps as dates, date-times or ISO 8601 text, not numbers",
            )
        )
    for col in ("amount", "duration_s"):
        if col not in types:
            continue
        numeric = bool(_NUMERIC.match(types[col]))
        if not numeric:
            checks.append(
                Check(
                    col,
                    f"r_{col} IS NOT NULL AND {col} IS NULL",
                    "value is not a number",
                    "use plain decimal numbers with a dot (e.g. 12.50), no currency signs",
                )
            )
        if not numeric or types[col] in ("FLOAT", "DOUBLE"):
            checks.append(
                Check(
                    col,
                    f"isnan({col}) OR isinf({col})",
                    "value is not finite (NaN or infinite)",
                    "replace NaN/inf with a real value or leave the cell empty",
                )
            )
    if "amount" in types:
        checks.append(
            Check(
                "amount",
                "NOT isinf(amount) AND NOT isnan(amount) AND abs(amount) >= 1e18",
                "amount is implausibly large (at least 1e18 in size)",
                "check the column's unit and format; amounts are money per event",
            )
        )
    if "duration_s" in types:
        checks.append(
            Check("duration_s", "duration_s < 0", "negative duration", "durations are seconds >= 0")
        )
    if "direction" in types:
        checks.append(
            Check(
                "direction",
                "direction NOT IN ('inbound', 'outbound')",
                "unknown direction",
                "use 'inbound', 'outbound' or leave it empty",
            )
        )
    return checks


_counter = iter(range(1, 1 << 62))


def any_fails(checks: list[Check]) -> str:
    """Whether a row fails any of the checks (NULL or false when it fails none)."""
    return " OR ".join(f"({c.condition})" for c in checks) or "false"


def _mask(checks: list[Check]) -> str:
    """A row's failed checks as a bit mask (one bit per check)."""
    assert len(checks) <= 16  # one bit each in a USMALLINT
    return " + ".join(
        f"CASE WHEN {c.condition} THEN {1 << i} ELSE 0 END" for i, c in enumerate(checks)
    )


def raise_on_problems(
    con: duckdb.DuckDBPyConnection, staged: str, label: str, checks: list[Check]
) -> tuple[int, bool, FingerprintParts | None]:
    """One scan for every check and for duplicates; raises listing every problem.

    The scan yields, per row, a bit mask of the checks it fails and a 64-bit hash of its
    canonical columns. Returns the number of rows, whether two rows share a hash (a sort
    of the hashes finds that far faster than a hash aggregation over them) and, without
    duplicates, the log's fingerprint parts (from the same hashes).
    """
    scanned = con.execute(
        f"SELECT {ROW_HASH} AS h, CAST({_mask(checks)} AS USMALLINT) AS bad FROM {staged}"
    ).fetchnumpy()
    hashes, bad = scanned["h"], scanned["bad"]
    del scanned
    failing = bad[bad != 0]
    counts = [len(hashes)] + [int(np.count_nonzero(failing & (1 << i))) for i in range(len(checks))]
    del bad, failing
    if counts[0] == 0:
        raise InputError(
            label,
            [
                Problem(
                    column="-",
                    message="no events: the log has no rows",
                    fix="check that the right file was given",
                )
            ],
        )
    problems = []
    for check, count in zip(checks, counts[1:], strict=True):
        if not count:
            continue
        examples = con.execute(
            f"SELECT _row, r_{check.column} FROM (SELECT row_number() OVER () AS _row, * "
            f"FROM {staged}) WHERE {check.condition} ORDER BY _row LIMIT 3"
        ).fetchall()
        shown = tuple(f"row {row}: {_show(value)}" for row, value in examples)
        problems.append(
            Problem(
                column=check.column,
                message=check.message,
                rows=int(count),
                examples=shown,
                fix=check.fix,
            )
        )
    if problems:
        raise InputError(label, problems)
    hashes.sort()
    maybe_duplicates = bool(np.any(hashes[1:] == hashes[:-1]))
    # with duplicates, the fingerprint is of the de-duplicated rows: computed later
    fingerprint = None if maybe_duplicates else FingerprintParts.of_hashes(hashes)
    return int(counts[0]), maybe_duplicates, fingerprint


def _show(value: object) -> str:
    if value is None:
        return "(empty)"
    text = str(value)
    return repr(text if len(text) <= 40 else text[:37] + "...")
