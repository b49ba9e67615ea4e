"""Fuzzing the event-log contract: malformed CSV and Parquet logs of every kind.

For every generated log the result is either correct output or one InputError naming the
problem: never another exception type, never a traceback from the CLI, never an output
file after a failure. The number of cases run is printed at the end of the test run.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from churnlens import InputError
from churnlens.cli import app
from churnlens.events import CANONICAL_COLUMNS, load_events
from churnlens.features import build_features
from tests.conftest import record_count

runner = CliRunner()
AS_OF = "2024-06-30"
GOOD_ROWS = [
    ["c1", "2024-01-05T10:00:00Z", "web", "visit", "", "", ""],
    ["c1", "2024-01-06T11:30:00+02:00", "web", "purchase", "19.90", "", ""],
    ["c2", "2024-02-01 08:00:00", "email", "marketing", "", "outbound", ""],
    ["c2", "2024-03-10", "phone", "support", "", "inbound", "320"],
    ["c3", "2024-05-01T00:00:00-05:00", "store", "purchase", "5", "", ""],
]

# what can go wrong in one cell
BAD_TEXT = st.sampled_from(
    ["", " ", "null", "NaN", "nan", "inf", "-inf", "-1e308", "1e309", "abc", "12$", "1,5",
     "0001-01-01", "1850-03-01", "2999-12-31T00:00:00Z", "9999-12-31", "2024-13-45",
     "2024-02-30", "yesterday", "1700000000", "2024-01-01T25:00", "2024-01-01 10:00 +0530",
     "x" * 5000, "é\u00e9\u4e2d", "\u0000", "'; DROP TABLE events; --", "\"quoted,comma\""]
)  # fmt: skip


@st.composite
def rows(draw: st.DrawFn) -> list[list[str]]:
    base = [list(r) for r in draw(st.lists(st.sampled_from(GOOD_ROWS), min_size=0, max_size=8))]
    for _ in range(draw(st.integers(0, 6))):
        if not base:
            break
        r = draw(st.integers(0, len(base) - 1))
        c = draw(st.integers(0, len(CANONICAL_COLUMNS) - 1))
        base[r][c] = draw(BAD_TEXT | st.text(max_size=30))
    if base and draw(st.booleans()):
        base += base[: draw(st.integers(1, len(base)))]  # duplicated rows
    return base


@st.composite
def header(draw: st.DrawFn) -> list[str]:
    cols = list(CANONICAL_COLUMNS)
    actions = ["keep"] * 5 + ["drop", "rename", "case", "extra", "shuffle"]
    action = draw(st.sampled_from(actions))
    if action == "drop":
        cols.pop(draw(st.integers(0, len(cols) - 1)))
    elif action == "rename":
        i = draw(st.integers(0, len(cols) - 1))
        cols[i] = draw(st.sampled_from(["CustomerID", "time", "chan", "type", "amt", "", "x"]))
    elif action == "case":
        cols = [c.upper() for c in cols]
    elif action == "extra":
        cols.append("notes")
    elif action == "shuffle":
        cols = draw(st.permutations(cols))
    return cols


def _csv_bytes(cols: list[str], body: list[list[str]], cut: float | None, enc: str) -> bytes:
    def cell(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if any(ch in v for ch in ',"\n') else v

    lines = [",".join(cell(c) for c in cols)]
    lines += [",".join(cell(v) for v in (r + [""] * len(cols))[: len(cols)]) for r in body]
    data = ("\n".join(lines) + "\n").encode("utf-8", errors="surrogatepass")
    if enc == "latin-1 bytes":
        data = data.replace(b"web", b"w\xe9b\xff")
    if cut is not None:
        data = data[: int(len(data) * cut)]
    return data


def _write(tmp: Path, fmt: str, cols: list[str], body: list[list[str]], cut, enc) -> Path:
    if fmt == "csv":
        path = tmp / "events.csv"
        path.write_bytes(_csv_bytes(cols, body, cut, enc))
        return path
    path = tmp / "events.parquet"
    width = len(cols)
    data = {c: [(r + [""] * width)[i] or None for r in body] for i, c in enumerate(cols)}
    table = pa.table({c: pa.array(v, type=pa.string()) for c, v in data.items()}) if cols else None
    if table is None:
        path.write_bytes(b"")
        return path
    pq.write_table(table, path)
    if cut is not None:
        raw = path.read_bytes()
        path.write_bytes(raw[: int(len(raw) * cut)])
    return path


CASES = st.tuples(
    st.sampled_from(["csv", "parquet"]),
    header(),
    rows(),
    st.sampled_from([None, None, None, None, 0.1, 0.5, 0.9]),  # truncated files
    st.sampled_from(["utf-8", "latin-1 bytes"]),
)


def _check_library(path: Path) -> None:
    error: InputError | None = None
    try:
        table = load_events(path)
        frame = build_features(table, AS_OF)
    except InputError as exc:  # any other exception type fails the test
        error = exc
    if error is not None:
        assert str(error).strip(), "an InputError must say what is wrong"
        assert error.problems, "an InputError names at least one problem"
        return
    # correct output: one row per customer seen up to the as-of day, finite or NaN values
    seen = table.to_pandas()
    seen = seen[seen["timestamp"] < pd.Timestamp(AS_OF) + pd.Timedelta(days=1)]
    assert set(frame.index) == set(seen["customer_id"])
    assert all(math.isfinite(v) or math.isnan(v) for v in frame.to_numpy().ravel())


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=CASES)
def test_malformed_logs_give_output_or_one_input_error(tmp_path: Path, case) -> None:
    fmt, cols, body, cut, enc = case
    _check_library(_write(tmp_path, fmt, cols, body, cut, enc))
    record_count("fuzz cases run (library)", 1)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=CASES)
def test_the_cli_never_shows_a_traceback_or_leaves_an_output(tmp_path: Path, case) -> None:
    fmt, cols, body, cut, enc = case
    path = _write(tmp_path, fmt, cols, body, cut, enc)
    out = tmp_path / "out" / "features.parquet"
    result = runner.invoke(app, ["features", str(path), "--as-of", AS_OF, "--out", str(out)])
    assert result.exit_code in (0, 1), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert "Traceback" not in result.output
    if result.exit_code == 1:
        assert "error:" in result.output and not out.exists()
    else:
        assert out.exists()
    out.unlink(missing_ok=True)
    record_count("fuzz cases run (CLI)", 1)
