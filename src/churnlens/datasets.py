"""Public data sets, converted to the canonical event frame.

Only the CDNOW transaction log for now: every purchase of the 23,570 customers who first
bought at the online music retailer CDNOW in the first quarter of 1997, followed to the
end of June 1998 (Fader, Hardie and Lee, 2005). ``make data`` fetches it into
``data/external/CDNOW_master.txt`` with ``scripts/fetch_cdnow.py``, and its 1/10 sample of
2,357 customers into ``CDNOW_sample.txt`` (read too: the same customer ids).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from churnlens.errors import InputError, Problem

__all__ = [
    "CDNOW_COLUMNS", "CDNOW_SAMPLE_COLUMNS", "CDNOW_SHA256", "DEFAULT_CDNOW_PATH", "read_cdnow"
]  # fmt: skip

DEFAULT_CDNOW_PATH = Path("data/external/CDNOW_master.txt")
"""Where ``make data`` puts the CDNOW log, relative to the repository root."""

CDNOW_SHA256 = "eff6889ed364c5199d6eacbbeb7a6d559971df4406ac876f322c373f00a072ef"
"""sha256 of the CDNOW log as shipped in the ``lifetimes`` 0.11.3 wheel."""

CDNOW_COLUMNS: tuple[str, ...] = ("customer_id", "date", "number_of_cds", "dollar_value")
"""The fields of one line of the CDNOW text format, in order."""

CDNOW_SAMPLE_COLUMNS: tuple[str, ...] = (
    "customer_id", "sample_id", "date", "number_of_cds", "dollar_value"
)  # fmt: skip
"""The fields of one line of ``CDNOW_sample.txt``, the 1/10 sample of 2,357 customers: the
master log's customer id, the sample's own index (1-2357; dropped), then as the master."""

_MAX_EXAMPLES = 3
_FETCH_HINT = "run `make data` (python scripts/fetch_cdnow.py --dest data/external)"
_FORMAT_HINT = (
    "each line must be 'customer_id date number_of_cds dollar_value' separated by "
    "whitespace, e.g. '00001 19970101 1 11.77' (CDNOW_sample.txt: 'customer_id "
    "sample_id date number_of_cds dollar_value', e.g. '00004 0001 19970101 2 29.33'); "
    f"fix or remove the lines listed, or {_FETCH_HINT} to get a fresh copy"
)


def read_cdnow(path: str | Path = DEFAULT_CDNOW_PATH) -> pd.DataFrame:
    """Read the CDNOW transaction log into the canonical event frame.

    Parameters
    ----------
    path
        The whitespace-separated text file ``CDNOW_master.txt``: one purchase per line,
        ``customer_id date number_of_cds dollar_value``, with or without the header line
        naming those fields; or ``CDNOW_sample.txt``, whose lines hold the sample's own
        index after the customer id (told apart by the first data line: five fields, the
        third a date). Unix or Windows line endings; blank lines are ignored.

    Returns
    -------
    pandas.DataFrame
        One row per line of the file, in file order, with the columns

        ``customer_id`` (str)
            The id as written in the file, zero padding kept (``"00001"``).
        ``timestamp`` (datetime64[us])
            Midnight of the purchase date, naive, meaning UTC.
        ``channel`` (str)
            ``"web"``.
        ``event_type`` (str)
            ``"purchase"``.
        ``amount`` (float64)
            ``dollar_value``, the order value in US dollars.
        ``direction`` (str)
            ``"inbound"``.
        ``duration_s`` (float64)
            ``NaN``: purchases have no duration.
        ``quantity`` (float64)
            ``number_of_cds``, an extra column beyond the canonical ones.

    Raises
    ------
    InputError
        When the file is missing or unreadable, or any line is malformed: a wrong number
        of fields, a customer id that is not all digits, a date that is not a valid
        ``YYYYMMDD``, or a count or dollar value that is not a finite number. Every
        problem found is reported with its column, the number of bad lines and up to
        three example line numbers with their values.

    Examples
    --------
    >>> events = read_cdnow("data/external/CDNOW_master.txt")  # doctest: +SKIP
    >>> events["customer_id"].nunique(), len(events)  # doctest: +SKIP
    (23570, 69659)
    """
    path = Path(path)
    source = str(path)
    skiprows, columns = _head(path, source)
    raw = _read_fast(path, source, skiprows, columns)
    if raw is None:
        raw, problems = _read_slow(path, source, skiprows, columns)
    else:
        problems = []
    if raw.empty and not problems:
        raise InputError(
            source,
            [
                Problem(
                    column="-",
                    message="the file has no data lines",
                    fix=f"{_FETCH_HINT} to get a complete copy",
                )
            ],
        )
    events, value_problems = _convert(raw)
    problems += value_problems
    if problems:
        raise InputError(source, problems)
    return events


def convert_cdnow(path: str | Path, out: str | Path) -> pd.DataFrame:
    """``churnlens datasets cdnow``: :func:`read_cdnow` written to ``out`` (checked first,
    never over the input; written atomically). Returns the events."""
    from churnlens.events import load_events
    from churnlens.outputs import check_output_path, write_table

    out = check_output_path(out, inputs=[path])
    events = read_cdnow(path)
    try:  # the event contract's checks: what churnlens validate would refuse, now
        load_events(events)
    except InputError as exc:
        raise InputError(str(path), exc.problems) from None
    write_table(events, out)
    return events


def _head(path: Path, source: str) -> tuple[int, tuple[str, ...]]:
    """The header lines to skip (0 or 1) and the layout of the first data line, from one
    read of the file's head; I/O failures as InputError."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline(4096)
            skiprows = _header_lines(first, source)
            line = fh.readline(4096) if skiprows else first
            while line and not line.split():  # blank lines before the first data line
                line = fh.readline(4096)
    except FileNotFoundError:
        raise InputError(
            source,
            [Problem(column="-", message="file not found", fix=_FETCH_HINT)],
        ) from None
    except OSError as exc:
        raise InputError(
            source,
            [
                Problem(
                    column="-",
                    message=f"cannot read the file ({exc.strerror or exc})",
                    fix=f"check the path and its permissions, or {_FETCH_HINT}",
                )
            ],
        ) from None
    return skiprows, _layout(line)


def _header_lines(first: bytes, source: str) -> int:
    """Number of header lines to skip (0 or 1), from the file's first line."""
    try:
        tokens = first.decode("utf-8").split()
    except UnicodeDecodeError:
        raise _not_text(source) from None
    if [t.lower() for t in tokens] == list(CDNOW_COLUMNS):
        return 1
    if tokens and not any(ch.isdigit() for token in tokens for ch in token):
        raise InputError(
            source,
            [
                Problem(
                    column="-",
                    message=(
                        f"unrecognised header; expected '{' '.join(CDNOW_COLUMNS)}' or no header"
                    ),
                    rows=1,
                    examples=(f"line 1: {_show(first.decode('utf-8').strip())}",),
                    fix=f"use the CDNOW_master.txt format, or {_FETCH_HINT}",
                )
            ],
        )
    return 0


def _layout(line: bytes) -> tuple[str, ...]:
    """The sample's five fields when the first data ``line`` has five and a date third (a
    master line with an extra field has its date second), else the master's four."""
    fields = line.decode("utf-8", errors="replace").split()
    five = len(fields) == len(CDNOW_SAMPLE_COLUMNS)
    if five and fields[1].isdigit() and re.fullmatch(r"\d{8}", fields[2]):
        return CDNOW_SAMPLE_COLUMNS
    return CDNOW_COLUMNS


def _read_fast(
    path: Path, source: str, skiprows: int, columns: tuple[str, ...]
) -> pd.DataFrame | None:
    """Read the file as strings with the C parser.

    Returns the raw frame (column ``line`` = 1-based line number in the file), or
    ``None`` when some line has the wrong number of fields, so that the slow path can
    find and report every such line.
    """
    try:
        with warnings.catch_warnings():
            # Too many fields on the first line: pandas warns and drops data.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(
                path,
                sep=r"\s+",
                header=None,
                names=list(columns),
                index_col=False,
                dtype=str,
                skiprows=skiprows,
                skip_blank_lines=False,
                keep_default_na=False,
                na_values=[],
                encoding="utf-8",
                engine="c",
            )
    except (pd.errors.ParserError, pd.errors.ParserWarning):
        return None  # a line with too many fields
    except pd.errors.EmptyDataError:
        return pd.DataFrame({c: pd.Series(dtype=str) for c in (*columns, "line")})
    except UnicodeDecodeError:
        raise _not_text(source) from None
    except OSError as exc:
        raise InputError(
            source, [Problem(column="-", message=f"cannot read the file ({exc})", fix=_FETCH_HINT)]
        ) from None
    # With keep_default_na=False a missing field is "" (blank lines give all "").
    empty = raw[list(columns)].eq("")
    n_empty = empty.sum(axis=1)
    if ((n_empty > 0) & (n_empty < len(columns))).any():
        return None  # a line with too few fields
    raw["line"] = np.arange(len(raw)) + 1 + skiprows
    return raw.loc[n_empty.eq(0).to_numpy()].reset_index(drop=True)


def _read_slow(
    path: Path, source: str, skiprows: int, columns: tuple[str, ...]
) -> tuple[pd.DataFrame, list[Problem]]:
    """Split every line in Python, keep the lines of the layout's field count and report
    the others."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise _not_text(source) from None
    rows: list[list[str]] = []
    lines: list[int] = []
    bad: list[str] = []
    n_bad = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if number <= skiprows:
            continue
        fields = line.split()
        if not fields:
            continue
        if len(fields) == len(columns):
            rows.append(fields)
            lines.append(number)
            continue
        n_bad += 1
        if len(bad) < _MAX_EXAMPLES:
            bad.append(f"line {number}: {_show(line.strip())} ({len(fields)} fields)")
    raw = pd.DataFrame(rows, columns=list(columns), dtype=str)
    raw["line"] = np.asarray(lines, dtype=np.int64)
    problem = Problem(
        column="-",
        message=f"wrong number of fields, expected {len(columns)}",
        rows=n_bad,
        examples=tuple(bad),
        fix=_FORMAT_HINT,
    )
    return raw, [problem] if n_bad else []


def _convert(raw: pd.DataFrame) -> tuple[pd.DataFrame, list[Problem]]:
    """Parse and check the string columns; build the canonical event frame."""
    problems: list[Problem] = []
    line = raw["line"].to_numpy()

    def check(column: str, bad: np.ndarray, message: str) -> None:
        if bad.any():
            idx = np.flatnonzero(bad)
            values = raw[column].to_numpy()
            examples = tuple(
                f"line {int(line[i])}: {_show(str(values[i]))}" for i in idx[:_MAX_EXAMPLES]
            )
            problems.append(
                Problem(
                    column=column,
                    message=message,
                    rows=int(idx.size),
                    examples=examples,
                    fix=_FORMAT_HINT,
                )
            )

    customer = raw["customer_id"].astype(str)
    check(
        "customer_id",
        ~customer.str.fullmatch(r"\d+").to_numpy(dtype=bool, na_value=False),
        "not a (zero-padded) integer id",
    )

    date_text = raw["date"].astype(str)
    well_formed = date_text.str.fullmatch(r"\d{8}").to_numpy(dtype=bool, na_value=False)
    timestamp = pd.to_datetime(
        date_text.where(well_formed), format="%Y%m%d", errors="coerce"
    ).astype("datetime64[us]")
    check("date", timestamp.isna().to_numpy(), "not a valid date in YYYYMMDD form")

    numbers = {}
    for column in ("number_of_cds", "dollar_value"):
        values = pd.to_numeric(raw[column], errors="coerce").astype("float64")
        check(column, ~np.isfinite(values.to_numpy()), "not a finite number")
        numbers[column] = values

    n = len(raw)
    events = pd.DataFrame(
        {
            "customer_id": customer,
            "timestamp": timestamp,
            "channel": pd.Series(["web"] * n, dtype=str),
            "event_type": pd.Series(["purchase"] * n, dtype=str),
            "amount": numbers["dollar_value"],
            "direction": pd.Series(["inbound"] * n, dtype=str),
            "duration_s": np.full(n, np.nan, dtype="float64"),
            "quantity": numbers["number_of_cds"],
        }
    )
    return events, problems


def _not_text(source: str) -> InputError:
    return InputError(
        source,
        [
            Problem(
                column="-",
                message="not a text file (invalid UTF-8); is it compressed or corrupt",
                fix=f"{_FETCH_HINT} to get a fresh copy",
            )
        ],
    )


def _show(value: str, limit: int = 60) -> str:
    """repr of a value from the file, shortened to ``limit`` characters."""
    if len(value) > limit:
        value = value[: limit - 1] + "…"
    return repr(value)
