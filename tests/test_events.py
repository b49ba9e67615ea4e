"""The event-log contract: reading, coercion, roles and one error listing every problem."""

from __future__ import annotations

import gzip
from pathlib import Path

import pandas as pd
import pytest

from churnlens import InputError, Settings, load_events, read_events
from churnlens.config import EventRoles

HEADER = "customer_id,timestamp,channel,event_type,amount,direction,duration_s\n"


def write_csv(tmp_path: Path, body: str, header: str = HEADER, name: str = "events.csv") -> Path:
    path = tmp_path / name
    path.write_text(header + body, encoding="utf-8")
    return path


def problems_of(source: object) -> dict[str, object]:
    with pytest.raises(InputError) as info:
        load_events(source)  # type: ignore[arg-type]
    return {p.message: p for p in info.value.problems}


def test_reads_csv_with_time_zones_converted_to_utc(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "c1,2024-03-01T10:00:00+02:00,web,purchase,12.5,,\n"
        "c1,2024-03-01 23:30:00,app,visit,,inbound,\n"
        "c2,2024-03-02,email,marketing,,,\n"
        "c2,2024-03-02T01:00:00Z,phone,support,,,65\n",
    )
    frame = read_events(path)
    assert list(frame.columns) == [
        "customer_id",
        "timestamp",
        "channel",
        "event_type",
        "amount",
        "direction",
        "duration_s",
    ]
    assert frame["timestamp"].dtype == "datetime64[us]"
    stamps = frame.set_index(["customer_id", "channel"])["timestamp"]
    assert stamps[("c1", "web")] == pd.Timestamp("2024-03-01 08:00:00")  # +02:00 -> UTC
    assert stamps[("c1", "app")] == pd.Timestamp("2024-03-01 23:30:00")  # naive = UTC
    assert stamps[("c2", "email")] == pd.Timestamp("2024-03-02 00:00:00")
    assert frame["amount"].tolist() == [12.5, 0.0, 0.0, 0.0]  # missing amount -> 0
    assert frame.loc[frame["channel"] == "phone", "duration_s"].item() == 65.0


def test_reads_gzipped_csv_parquet_and_frames_alike(tmp_path: Path) -> None:
    body = "c1,2024-03-01,web,purchase,10,,\nc2,2024-03-02,app,visit,,,\n"
    csv = write_csv(tmp_path, body)
    gz = tmp_path / "events.csv.gz"
    gz.write_bytes(gzip.compress((HEADER + body).encode()))
    from_csv = read_events(csv)
    parquet = tmp_path / "events.parquet"
    from_csv.to_parquet(parquet)
    for other in (read_events(gz), read_events(parquet), read_events(from_csv)):
        pd.testing.assert_frame_equal(other, from_csv)


def test_tz_aware_frame_is_converted_and_extra_columns_ignored() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["a"],
            "timestamp": pd.to_datetime(["2024-06-01 02:00"]).tz_localize("Europe/Berlin"),
            "channel": ["web"],
            "event_type": ["visit"],
            "note": ["ignored"],
        }
    )
    out = read_events(frame)
    assert out["timestamp"].iloc[0] == pd.Timestamp("2024-06-01 00:00")
    assert "note" not in out.columns


def test_roles_follow_settings_and_direction() -> None:
    frame = pd.DataFrame(
        {
            "customer_id": ["a"] * 5,
            "timestamp": pd.date_range("2024-01-01", periods=5, freq="D"),
            "channel": ["web"] * 5,
            "event_type": ["order", "push", "push", "visit", "order"],
            "direction": [None, None, "inbound", "outbound", "outbound"],
        }
    )
    settings = Settings(events=EventRoles(purchase_types=("order",), outbound_types=("push",)))
    table = load_events(frame, settings)
    roles = table.con.execute(f"SELECT role FROM {table.name} ORDER BY timestamp").fetchall()
    # a purchase type is a purchase whatever its direction; direction beats the type list
    assert [r for (r,) in roles] == ["purchase", "outbound", "inbound", "outbound", "purchase"]


def test_a_loaded_table_is_read_with_the_settings_given(sample_events: pd.DataFrame) -> None:
    """Settings passed with an already loaded table win (they were silently ignored:
    features and labels followed the settings the table was loaded with); only the
    event roles, fixed at load time, must match."""
    from churnlens import ConfigError, build_features
    from churnlens.config import FeatureSettings

    table = load_events(sample_events)
    short = Settings(features=FeatureSettings(windows_days=(7, 30)))
    assert load_events(table, short).settings == short
    assert load_events(table, short).name == table.name  # the same events, not reloaded
    assert load_events(table).settings == table.settings == Settings()
    columns = build_features(table, "2024-06-30", short).columns
    assert "freq_purchases_30d" in columns and "freq_purchases_90d" not in columns
    assert list(columns) == list(build_features(sample_events, "2024-06-30", short).columns)
    other_roles = Settings(events=EventRoles(purchase_types=("order",)))
    with pytest.raises(ConfigError, match="event roles"):
        load_events(table, other_roles)
    with pytest.raises(ConfigError, match="load the log again"):
        build_features(table, "2024-06-30", other_roles)


def test_exact_duplicates_are_dropped_and_counted(tmp_path: Path) -> None:
    row = "c1,2024-03-01 10:00:00,web,purchase,10,,\n"
    path = write_csv(tmp_path, row * 3 + "c1,2024-03-01 10:00:00,web,purchase,11,,\n")
    table = load_events(path)
    assert table.rows_read == 4
    assert table.duplicates_dropped == 2
    assert table.summary().events == 2


def test_missing_columns_suggest_close_matches(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path, "c1,2024-01-01,web,x\n", header="CustomerID,time_stamp,channel,kind\n"
    )
    with pytest.raises(InputError) as info:
        load_events(path)
    text = str(info.value)
    assert "column 'customer_id': required column is missing; did you mean 'CustomerID'?" in text
    assert "rename 'time_stamp' to 'timestamp'" in text
    assert "column 'event_type'" in text and "add a 'event_type' column" in text
    assert len(info.value.problems) == 3


def test_a_contract_column_given_twice_is_refused(tmp_path: Path) -> None:
    """Two 'amount' columns (one with a space before it): the second was read as
    'amount_1' and dropped, the first taken without a word."""
    header = "customer_id,timestamp,channel,event_type,amount, amount\n"
    path = write_csv(tmp_path, "c1,2024-01-01,web,purchase,1,2\n", header=header)
    with pytest.raises(InputError, match="the column is given 2 times") as info:
        load_events(path)
    assert [p.column for p in info.value.problems] == ["amount"]
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [["c1"], ["2024-01-01"], ["web"], ["purchase"], [1.0], [500.0]]
    names = ["customer_id", "timestamp", "channel", "event_type", "amount", "amount"]
    twice = tmp_path / "twice.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array(c) for c in columns], names=names), twice)
    with pytest.raises(InputError, match="keep one 'amount' column"):
        load_events(twice)


def test_every_problem_is_listed_with_counts_and_examples(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path,
        "c1,2024-13-01,web,purchase,abc,sideways,-5\n"  # row 1: bad date, amount, direction, dur
        ",2024-01-02,web,purchase,inf,,\n"  # row 2: empty id, non-finite amount
        "c3,,web,purchase,1,,\n"  # row 3: missing timestamp
        "c4,yesterday,,visit,1,,\n"  # row 4: bad date, empty channel
        "c5,2024-01-05,web,,1,,\n"  # row 5: empty event type
        "c6,2024-01-06,web,visit,nan,,\n",  # row 6: NaN amount
    )
    problems = problems_of(path)
    assert set(problems) == {
        "missing or empty customer id",
        "missing timestamp",
        "timestamp cannot be parsed",
        "missing or empty channel",
        "missing or empty event type",
        "value is not a number",
        "value is not finite (NaN or infinite)",
        "negative duration",
        "unknown direction",
    }
    bad_time = problems["timestamp cannot be parsed"]
    assert bad_time.rows == 2
    assert bad_time.examples == ("row 1: '2024-13-01'", "row 4: 'yesterday'")
    assert problems["value is not finite (NaN or infinite)"].rows == 2
    assert problems["missing or empty customer id"].examples == ("row 2: (empty)",)
    assert problems["unknown direction"].examples == ("row 1: 'sideways'",)


def test_examples_stop_at_three_but_count_all(tmp_path: Path) -> None:
    path = write_csv(tmp_path, "".join(f"c{i},2024-01-01,web,visit,x{i},,\n" for i in range(10)))
    problem = problems_of(path)["value is not a number"]
    assert problem.rows == 10
    assert len(problem.examples) == 3


@pytest.mark.parametrize(
    ("content", "message"),
    [("", "the file is empty"), (HEADER, "no events: the log has no rows")],
)
def test_empty_file_and_header_only(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "events.csv"
    path.write_text(content)
    assert message in problems_of(path)


def test_missing_file_and_unknown_type(tmp_path: Path) -> None:
    assert "file not found" in problems_of(tmp_path / "nope.csv")
    other = tmp_path / "events.json"
    other.write_text("{}")
    assert "unknown file type '.json'" in problems_of(other)


def test_non_utf8_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_bytes(HEADER.encode() + b"c\xff\xfe1,2024-01-01,web,visit,,,\n")
    with pytest.raises(InputError, match="cannot read the file"):
        load_events(path)


def test_numeric_timestamps_are_refused() -> None:
    frame = pd.DataFrame(
        {"customer_id": ["a"], "timestamp": [1_700_000_000], "channel": ["w"], "event_type": ["v"]}
    )
    assert "timestamp has type BIGINT" in problems_of(frame)


@pytest.mark.parametrize("word", ["epoch", "infinity", "-infinity", " Infinity", "now"])
def test_timestamp_words_are_refused_with_their_row(tmp_path: Path, word: str) -> None:
    """DuckDB reads 'epoch' as 1970-01-01 and 'infinity' as no date at all."""
    path = write_csv(tmp_path, f"a,2024-01-01,web,visit,,,\nb,{word},web,visit,,,\n")
    with pytest.raises(InputError) as caught:
        load_events(path)
    text = str(caught.value)
    assert "timestamp cannot be parsed; 1 row" in text and f"row 2: '{word}'" in text


def test_an_infinite_stored_timestamp_is_refused() -> None:
    import duckdb

    table = duckdb.sql(
        "SELECT * FROM (VALUES ('a', TIMESTAMP '2024-01-01', 'web', 'visit'), "
        "('b', TIMESTAMP 'infinity', 'web', 'visit')) t(customer_id, timestamp, channel, "
        "event_type)"
    ).to_arrow_table()
    with pytest.raises(InputError, match="timestamp is infinite; 1 row"):
        load_events(table)


# a folder of Parquet files: read by column name, never by the first file's schema


def _split(sample_events: pd.DataFrame, folder: Path, without: str, first: str) -> None:
    """Half the log in a file lacking ``without``, half in one with it; ``first`` names
    the file that sorts first (``lacking`` or ``having``)."""
    folder.mkdir()
    half = len(sample_events) // 2
    names = ("a.parquet", "b.parquet") if first == "lacking" else ("b.parquet", "a.parquet")
    sample_events.iloc[:half].drop(columns=[without]).to_parquet(folder / names[0])
    sample_events.iloc[half:].to_parquet(folder / names[1])


@pytest.mark.parametrize("first", ["lacking", "having"])
@pytest.mark.parametrize("column", ["amount", "direction"])
def test_a_parquet_folder_is_read_by_column_name_whichever_file_comes_first(
    sample_events: pd.DataFrame, tmp_path: Path, column: str, first: str
) -> None:
    events = sample_events.assign(direction=None)
    events.loc[events["event_type"] == "marketing", "direction"] = "outbound"
    _split(events, tmp_path / "log", column, first)
    table = load_events(tmp_path / "log")
    loaded = table.to_pandas()
    half = len(events) // 2
    kept = events.iloc[half:]
    if column == "amount":
        assert loaded["amount"].sum() == pytest.approx(kept["amount"].sum())
        assert loaded["amount"].sum() > 0
    else:
        assert (loaded["direction"] == "outbound").sum() == (kept["direction"] == "outbound").sum()
        assert (loaded["direction"] == "outbound").sum() > 0


def test_a_parquet_folder_whose_files_lack_a_required_column_is_refused_naming_them(
    sample_events: pd.DataFrame, tmp_path: Path
) -> None:
    _split(sample_events, tmp_path / "log", "channel", "having")
    with pytest.raises(InputError) as caught:
        load_events(tmp_path / "log")
    text = str(caught.value)
    assert "column 'channel'" in text and "missing from 1 of the folder's 2" in text
    assert "b.parquet" in text


@pytest.mark.parametrize("width", [1_001, 200_000])
def test_an_absurdly_wide_csv_is_refused_before_it_is_read(tmp_path: Path, width: int) -> None:
    names = ["customer_id", "timestamp", "channel", "event_type"]
    names += [f"x{i}" for i in range(width - 4)]
    path = tmp_path / "wide.csv.gz"
    with gzip.open(path, "wt") as out:
        out.write(",".join(names) + "\n" + ",".join(["a", "2024-01-01", "web", "visit"]) + "\n")
    wanted = r"the header line (has 1,001 columns|is longer than 1 MB)"
    with pytest.raises(InputError, match=wanted):
        load_events(path)


def test_a_header_of_a_thousand_columns_passes_the_width_check(tmp_path: Path) -> None:
    from churnlens.events.sources import check_width, file_type

    path = tmp_path / "wide.csv"
    path.write_text(";".join(f"c{i}" for i in range(1_000)) + "\n1\n")
    check_width(path, file_type(path), str(path))  # no error: 1,000 is the limit
    path.write_text(";".join(f"c{i}" for i in range(1_001)) + "\n1\n")
    with pytest.raises(InputError, match="has 1,001 columns"):
        check_width(path, file_type(path), str(path))


def test_csv_and_parquet_of_the_same_padded_data_agree(tmp_path: Path) -> None:
    """One rule for every format: text is trimmed, so ' web' is 'web' in both."""
    frame = pd.DataFrame(
        {
            "customer_id": [" c1", "c1 ", "c2"],
            "timestamp": ["2024-01-01", "2024-02-01", "2024-01-05"],
            "channel": [" web", "web", "app "],
            "event_type": ["purchase ", "purchase", " visit"],
            "amount": [10.0, 20.0, 0.0],
        }
    )
    frame.to_csv(tmp_path / "e.csv", index=False)
    typed = frame.assign(timestamp=pd.to_datetime(frame["timestamp"]))
    typed.to_parquet(tmp_path / "e.parquet")
    from_csv = load_events(tmp_path / "e.csv").to_pandas()
    from_parquet = load_events(tmp_path / "e.parquet").to_pandas()
    columns = ["customer_id", "channel", "event_type", "amount"]
    pd.testing.assert_frame_equal(
        from_csv[columns].sort_values(columns).reset_index(drop=True),
        from_parquet[columns].sort_values(columns).reset_index(drop=True),
    )
    assert set(from_parquet["customer_id"]) == {"c1", "c2"}
    assert set(from_parquet["channel"]) == {"web", "app"}


def test_a_materialised_log_is_the_same_log_read_once(sample_log_path: Path) -> None:
    """Training copies the log into DuckDB once: the same rows, roles and fingerprint,
    from a table rather than a view over the file; a table is kept as it is."""
    view = load_events(sample_log_path)
    table = view.materialised()
    kinds = dict(
        view.con.execute("SELECT table_name, table_type FROM information_schema.tables").fetchall()
    )
    assert kinds[view.name] == "VIEW" and kinds[table.name] != "VIEW"
    assert table.materialised() is table
    assert table.fingerprint() == view.fingerprint()
    assert table.fingerprint(until=pd.Timestamp("2024-06-30").date()) == view.fingerprint(
        until=pd.Timestamp("2024-06-30").date()
    )
    order = "ORDER BY customer_id, timestamp, channel, event_type, amount"
    want = view.con.execute(f"SELECT * FROM {view.name} {order}").df()
    got = table.con.execute(f"SELECT * FROM {table.name} {order}").df()
    pd.testing.assert_frame_equal(got, want)
    # the overview (rows, channels, event types) is read once, then kept for every reader
    from churnlens.features import build_features

    first = build_features(table, "2024-09-30")
    overview = table.memo["overview"]
    assert overview.rows == len(want)
    assert set(overview.channels) == set(want["channel"]) - {""}
    pd.testing.assert_frame_equal(build_features(table, "2024-09-30"), first)
    assert table.memo["overview"] is overview
    assert "overview" not in view.memo  # a copy has its own
