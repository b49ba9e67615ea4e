"""Tests of churnlens.datasets (the CDNOW reader) and scripts/fetch_cdnow.py."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

from churnlens.datasets import CDNOW_SHA256, convert_cdnow, read_cdnow
from churnlens.errors import InputError

REPO_ROOT = Path(__file__).resolve().parent.parent
AS_OF = pd.Timestamp("1998-03-31")
CANONICAL_COLUMNS = [
    "customer_id",
    "timestamp",
    "channel",
    "event_type",
    "amount",
    "direction",
    "duration_s",
    "quantity",
]


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cdnow(cdnow_path: Path) -> pd.DataFrame:
    return read_cdnow(cdnow_path)


@pytest.fixture(scope="module")
def fetch_script() -> ModuleType:
    """scripts/fetch_cdnow.py imported as a module (it is not part of the package)."""
    path = REPO_ROOT / "scripts" / "fetch_cdnow.py"
    spec = importlib.util.spec_from_file_location("fetch_cdnow", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def write(tmp_path: Path, text: str, name: str = "cdnow.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


HEADER = "customer_id date number_of_cds dollar_value\r\n"


# ---------------------------------------------------------------------- the real file


@pytest.mark.cdnow
def test_real_file_checksum(cdnow_path: Path, fetch_script: ModuleType) -> None:
    assert fetch_script.EXPECTED_SHA256 == CDNOW_SHA256
    assert hashlib.sha256(cdnow_path.read_bytes()).hexdigest() == CDNOW_SHA256


@pytest.mark.cdnow
def test_real_file_shape_and_dtypes(cdnow: pd.DataFrame) -> None:
    assert list(cdnow.columns) == CANONICAL_COLUMNS
    assert len(cdnow) == 69_659
    assert cdnow["customer_id"].nunique() == 23_570
    assert pd.api.types.is_string_dtype(cdnow["customer_id"])
    assert cdnow["customer_id"].str.fullmatch(r"\d{5}").all()
    assert cdnow["timestamp"].dtype == np.dtype("datetime64[us]")
    assert (cdnow["timestamp"] == cdnow["timestamp"].dt.normalize()).all()
    for column in ("amount", "duration_s", "quantity"):
        assert cdnow[column].dtype == np.float64, column
    for column, value in (("channel", "web"), ("event_type", "purchase"), ("direction", "inbound")):
        assert pd.api.types.is_string_dtype(cdnow[column]), column
        assert (cdnow[column] == value).all(), column
    assert cdnow["duration_s"].isna().all()
    assert cdnow[["customer_id", "timestamp", "amount", "quantity"]].notna().all().all()
    assert isinstance(cdnow.index, pd.RangeIndex)


@pytest.mark.cdnow
def test_real_file_values(cdnow: pd.DataFrame) -> None:
    assert (cdnow["amount"] == 0).sum() == 80
    assert (cdnow["amount"] >= 0).all()
    assert (cdnow["quantity"] >= 1).all()
    assert cdnow["timestamp"].min() == pd.Timestamp("1997-01-01")
    assert cdnow["timestamp"].max() == pd.Timestamp("1998-06-30")
    # Every customer made the first purchase in the first quarter of 1997.
    first = cdnow.groupby("customer_id")["timestamp"].min()
    assert first.max() <= pd.Timestamp("1997-03-31")


# Raw lines of the three hand-checked customers (file line number: text):
#
#   2: " 00001 19970101  1   11.77"      one purchase
#
#   728: " 00185 19970227  3   26.07"     same-day repeat purchase on 1997-03-22,
#   729: " 00185 19970322  1   14.79"     one purchase after the as-of date
#   730: " 00185 19970322  1    6.99"
#   731: " 00185 19980327  3   39.36"
#   732: " 00185 19980522  2   27.98"
#
#   29796: " 09609 19970205  2   37.76"   several purchases, one exactly on the as-of
#   29797: " 09609 19970803  1   12.25"   date 1998-03-31 and one after it
#   29798: " 09609 19970919  3   20.47"
#   29799: " 09609 19980313  1   42.49"
#   29800: " 09609 19980319  1   11.49"
#   29801: " 09609 19980331  1   47.99"
#   29802: " 09609 19980407  3   36.36"
HAND_CHECKED = {
    "00001": [("1997-01-01", 1, 11.77)],
    "00185": [
        ("1997-02-27", 3, 26.07),
        ("1997-03-22", 1, 14.79),
        ("1997-03-22", 1, 6.99),
        ("1998-03-27", 3, 39.36),
        ("1998-05-22", 2, 27.98),
    ],
    "09609": [
        ("1997-02-05", 2, 37.76),
        ("1997-08-03", 1, 12.25),
        ("1997-09-19", 3, 20.47),
        ("1998-03-13", 1, 42.49),
        ("1998-03-19", 1, 11.49),
        ("1998-03-31", 1, 47.99),
        ("1998-04-07", 3, 36.36),
    ],
}

# As of 1998-03-31: days since the last purchase on or before it, purchase rows on or
# before it (same-day rows count separately), and their total amount.
HAND_CHECKED_RFM = {
    "00001": (454, 1, 11.77),
    "00185": (4, 4, 87.21),
    "09609": (0, 6, 172.45),
}


@pytest.mark.cdnow
@pytest.mark.parametrize("customer", sorted(HAND_CHECKED))
def test_hand_checked_customer_events(cdnow: pd.DataFrame, customer: str) -> None:
    got = cdnow[cdnow["customer_id"] == customer].reset_index(drop=True)
    expected = pd.DataFrame(
        {
            "customer_id": customer,
            "timestamp": pd.to_datetime([d for d, _, _ in HAND_CHECKED[customer]]).astype(
                "datetime64[us]"
            ),
            "channel": "web",
            "event_type": "purchase",
            "amount": [a for _, _, a in HAND_CHECKED[customer]],
            "direction": "inbound",
            "duration_s": np.nan,
            "quantity": [float(q) for _, q, _ in HAND_CHECKED[customer]],
        }
    )
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


@pytest.mark.cdnow
@pytest.mark.parametrize("customer", sorted(HAND_CHECKED_RFM))
def test_hand_checked_customer_rfm_as_of(cdnow: pd.DataFrame, customer: str) -> None:
    rows = cdnow[(cdnow["customer_id"] == customer) & (cdnow["timestamp"] <= AS_OF)]
    recency, frequency, monetary = HAND_CHECKED_RFM[customer]
    assert (AS_OF - rows["timestamp"].max()).days == recency
    assert len(rows) == frequency
    assert rows["amount"].sum() == pytest.approx(monetary, abs=1e-9)


# --------------------------------------------------------------------- small, good files


@pytest.mark.parametrize(
    ("text", "ids", "days", "quantities", "amounts"),
    [
        # the master's layout: CRLF, a header, blank lines, padding and a tab
        (HEADER + " 00007 19970101  1   11.77\r\n\r\n   \r\n 00042\t19980630 12 0\r\n",
         ["00007", "00042"], ["1997-01-01", "1998-06-30"], [1.0, 12.0], [11.77, 0.0]),
        # CDNOW_sample.txt's: the sample's own index after the master's customer id
        ("\r\n 00004 0001 19970101  2   29.33\r\n 00018 0002 19970104  1   14.96\r\n",
         ["00004", "00018"], ["1997-01-01", "1997-01-04"], [2.0, 1.0], [29.33, 14.96]),
    ],
    ids=["master", "sample"],
)  # fmt: skip
def test_small_good_files(
    tmp_path: Path, text: str, ids: list, days: list, quantities: list, amounts: list
) -> None:
    events = read_cdnow(write(tmp_path, text))
    assert list(events.columns) == CANONICAL_COLUMNS
    assert events["customer_id"].tolist() == ids
    assert events["timestamp"].tolist() == [pd.Timestamp(d) for d in days]
    assert events["amount"].tolist() == amounts
    assert events["quantity"].tolist() == quantities
    assert events["timestamp"].dtype == np.dtype("datetime64[us]")


def test_no_header_unix_line_endings(tmp_path: Path) -> None:
    path = write(tmp_path, "00001 19970101 1 11.77\n00002 19970112 5 77.00")
    events = read_cdnow(str(path))
    assert events["customer_id"].tolist() == ["00001", "00002"]
    assert events["amount"].tolist() == [11.77, 77.0]


def test_a_short_sample_line_is_reported_against_the_samples_five_fields(tmp_path: Path) -> None:
    bad = write(tmp_path, " 00004 0001 19970101  2   29.33\n 00018 0002 19970104  1\n")
    with pytest.raises(InputError, match="expected 5"):
        read_cdnow(bad)


@pytest.mark.cdnow
def test_the_real_sample_is_a_tenth_of_the_master_customers(cdnow: pd.DataFrame) -> None:
    sample = read_cdnow(REPO_ROOT / "data" / "external" / "CDNOW_sample.txt")
    assert sample["customer_id"].nunique() == 2_357 and len(sample) == 6_919
    master = cdnow[cdnow["customer_id"].isin(set(sample["customer_id"]))]
    key = ["customer_id", "timestamp", "amount", "quantity"]  # the files order rows apart
    pd.testing.assert_frame_equal(
        sample.sort_values(key, ignore_index=True),
        master.sort_values(key, ignore_index=True),
        check_exact=True,
    )


# ---------------------------------------------------------------------------- bad input


def only_problem(err: pytest.ExceptionInfo[InputError], column: str):
    problems = [p for p in err.value.problems if p.column == column]
    assert len(problems) == 1, err.value
    return problems[0]


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "CDNOW_master.txt"
    with pytest.raises(InputError) as err:
        read_cdnow(path)
    assert err.value.source == str(path)
    assert str(path) in str(err.value)
    assert "file not found" in str(err.value)
    assert "make data" in str(err.value)


def test_garbled_dates(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER
        + " 00001 19970101 1 11.77\r\n"  # line 2: fine
        + " 00002 19971301 1 12.00\r\n"  # line 3: month 13
        + " 00003 1997-01-02 2 20.76\r\n"  # line 4: not YYYYMMDD
        + " 00004 19970230 1 9.99\r\n"  # line 5: 30 February
        + " 00005 1997011 1 9.99\r\n",  # line 6: seven digits
    )
    with pytest.raises(InputError) as err:
        read_cdnow(path)
    assert err.value.source == str(path)
    problem = only_problem(err, "date")
    assert problem.rows == 4
    assert problem.examples == (
        "line 3: '19971301'",
        "line 4: '1997-01-02'",
        "line 5: '19970230'",
    )
    assert "YYYYMMDD" in problem.message
    assert "Fix:" in str(err.value)
    assert len(err.value.problems) == 1
    text = str(err.value)
    assert str(path) in text
    assert "column 'date'" in text
    assert "4 rows" in text


def test_non_numeric_dollar_value(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER + " 00001 19970101 1 $11.77\r\n 00002 19970112 1 12.00\r\n 00003 19970102 2 n/a\r\n",
    )
    with pytest.raises(InputError) as err:
        read_cdnow(path)
    problem = only_problem(err, "dollar_value")
    assert problem.rows == 2
    assert problem.examples == ("line 2: '$11.77'", "line 4: 'n/a'")
    assert "number" in problem.message
    assert problem.fix


def test_converted_events_meet_the_event_contract(tmp_path: Path) -> None:
    """An amount `churnlens validate` refuses is refused by the converter, before it
    writes a log that fails its own validation."""
    path = write(tmp_path, HEADER + " 00001 19970101 1 11.77\r\n 00005 19970105 1 1e30\r\n")
    out = tmp_path / "cdnow.parquet"
    with pytest.raises(InputError, match="amount is implausibly large") as err:
        convert_cdnow(path, out)
    assert err.value.source == str(path) and not out.exists()


def test_non_numeric_count_and_id(tmp_path: Path) -> None:
    path = write(tmp_path, "0000x 19970101 1 11.77\n00002 19970112 one 12.00\n")
    with pytest.raises(InputError) as err:
        read_cdnow(path)
    assert only_problem(err, "customer_id").examples == ("line 1: '0000x'",)
    assert only_problem(err, "number_of_cds").examples == ("line 2: 'one'",)


@pytest.mark.parametrize(
    "lines",
    [
        # a short line, a long line, then a good one
        [
            " 00001 19970101 1\r\n",
            " 00002 19970112 1 12.00 extra\r\n",
            " 00003 19970102 2 20.76\r\n",
        ],
        # the first data line is the long one (pandas would silently drop a column)
        [
            " 00002 19970112 1 12.00 extra\r\n",
            " 00001 19970101 1\r\n",
            " 00003 19970102 2 20.76\r\n",
        ],
    ],
)
def test_wrong_field_count(tmp_path: Path, lines: list[str]) -> None:
    path = write(tmp_path, HEADER + "".join(lines))
    with pytest.raises(InputError) as err:
        read_cdnow(path)
    problem = only_problem(err, "-")
    assert problem.rows == 2
    assert len(problem.examples) == 2
    assert any(e.startswith("line 2: ") for e in problem.examples)
    assert any(e.startswith("line 3: ") for e in problem.examples)
    assert "(3 fields)" in " ".join(problem.examples)
    assert "(5 fields)" in " ".join(problem.examples)
    assert "expected 4" in problem.message


def test_every_problem_reported_and_examples_capped(tmp_path: Path) -> None:
    bad_dates = "".join(f" {i:05d} 1997010x 1 1.00\n" for i in range(1, 11))
    path = write(tmp_path, bad_dates + " 00011 19970101 1 1.00 9\n 00012 19970101 1 oops\n")
    with pytest.raises(InputError) as err:
        read_cdnow(path)
    assert only_problem(err, "date").rows == 10
    assert len(only_problem(err, "date").examples) == 3
    assert only_problem(err, "-").rows == 1
    assert only_problem(err, "dollar_value").examples == ("line 12: 'oops'",)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no data lines"),
        (HEADER.encode(), "no data lines"),
        (b"\x1f\x8b\x08\x00\xff\xfe binary", "not a text file"),
        (b"id when qty value\n1 19970101 1 1\n", "unrecognised header"),
    ],
)
def test_unusable_files(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "cdnow.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        read_cdnow(path)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read the file"):
        read_cdnow(tmp_path)


# ------------------------------------------------------------------ scripts/fetch_cdnow.py

MASTER_MEMBER = "lifetimes/datasets/CDNOW_master.txt"
SAMPLE_MEMBER = "lifetimes/datasets/CDNOW_sample.txt"


def make_wheel(
    tmp_path: Path,
    payload: bytes,
    member: str | None = None,
    sample: bytes | None = None,
) -> Path:
    """A fake lifetimes wheel holding ``payload`` (and the sample file when ``sample``)."""
    wheel = tmp_path / "Lifetimes-0.11.3-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("lifetimes/__init__.py", "")
        zf.writestr(member or MASTER_MEMBER, payload)
        if sample is not None:
            zf.writestr(SAMPLE_MEMBER, sample)
    return wheel


PAYLOAD = b"customer_id date number_of_cds dollar_value\r\n 00001 19970101  1   11.77\r\n"
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
SAMPLE_PAYLOAD = b" 00004 0001 19970101  2   29.33\r\n 00004 0001 19970118  2   29.73\r\n"
SAMPLE_PAYLOAD_SHA256 = hashlib.sha256(SAMPLE_PAYLOAD).hexdigest()


@pytest.mark.cdnow
def test_real_sample_checksum(fetch_script: ModuleType) -> None:
    """data/external/CDNOW_sample.txt (fetched by `make data`) has the pinned sha256."""
    path = REPO_ROOT / "data" / "external" / fetch_script.SAMPLE_FILENAME
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make data` to fetch it")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fetch_script.SAMPLE_SHA256


def test_extract_from_wheel_ok(tmp_path: Path, fetch_script: ModuleType) -> None:
    wheel = make_wheel(tmp_path, PAYLOAD)
    dest = tmp_path / "data" / "external"
    target = fetch_script.extract_from_wheel(wheel, dest, PAYLOAD_SHA256)
    assert target == dest / "CDNOW_master.txt"
    assert target.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.iterdir()) == ["CDNOW_master.txt"]
    assert fetch_script.is_up_to_date(target, PAYLOAD_SHA256)
    assert read_cdnow(target)["customer_id"].tolist() == ["00001"]


def test_extract_sample_from_wheel(tmp_path: Path, fetch_script: ModuleType) -> None:
    """The sample member lands under its own name, next to nothing else."""
    wheel = make_wheel(tmp_path, PAYLOAD, sample=SAMPLE_PAYLOAD)
    dest = tmp_path / "out"
    target = fetch_script.extract_from_wheel(
        wheel, dest, SAMPLE_PAYLOAD_SHA256, member=fetch_script.SAMPLE_MEMBER
    )
    assert target == dest / "CDNOW_sample.txt"
    assert target.read_bytes() == SAMPLE_PAYLOAD
    assert sorted(p.name for p in dest.iterdir()) == ["CDNOW_sample.txt"]
    with pytest.raises(fetch_script.FetchError, match="checksum mismatch"):
        fetch_script.extract_from_wheel(
            wheel, dest, PAYLOAD_SHA256, member=SAMPLE_MEMBER, filename="CDNOW_sample.txt"
        )
    assert target.read_bytes() == SAMPLE_PAYLOAD


def test_extract_from_wheel_hash_mismatch(tmp_path: Path, fetch_script: ModuleType) -> None:
    wheel = make_wheel(tmp_path, PAYLOAD)
    dest = tmp_path / "external"
    dest.mkdir()
    (dest / "CDNOW_master.txt").write_bytes(b"previous content")
    with pytest.raises(fetch_script.FetchError, match="checksum mismatch") as err:
        fetch_script.extract_from_wheel(wheel, dest, "0" * 64)
    assert PAYLOAD_SHA256 in str(err.value)
    # The temp file is gone and the existing file is untouched.
    assert sorted(p.name for p in dest.iterdir()) == ["CDNOW_master.txt"]
    assert (dest / "CDNOW_master.txt").read_bytes() == b"previous content"


def test_extract_from_wheel_missing_member(tmp_path: Path, fetch_script: ModuleType) -> None:
    wheel = make_wheel(tmp_path, PAYLOAD, member="lifetimes/datasets/other.csv")
    with pytest.raises(fetch_script.FetchError, match="does not contain"):
        fetch_script.extract_from_wheel(wheel, tmp_path / "out", PAYLOAD_SHA256)
    assert list((tmp_path / "out").iterdir()) == []


def test_extract_from_wheel_not_a_zip(tmp_path: Path, fetch_script: ModuleType) -> None:
    wheel = tmp_path / "broken.whl"
    wheel.write_bytes(b"not a zip")
    with pytest.raises(fetch_script.FetchError, match="cannot open wheel"):
        fetch_script.extract_from_wheel(wheel, tmp_path / "out", PAYLOAD_SHA256)


@pytest.fixture
def fake_pip(
    tmp_path: Path, fetch_script: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> list[Path]:
    """download_wheel replaced by a fake wheel with both files; returns the calls made."""
    wheel = make_wheel(tmp_path, PAYLOAD, sample=SAMPLE_PAYLOAD)
    calls: list[Path] = []

    def fake_download(workdir: Path) -> Path:
        calls.append(workdir)
        return wheel

    monkeypatch.setattr(fetch_script, "download_wheel", fake_download)
    monkeypatch.setattr(fetch_script, "EXPECTED_SHA256", PAYLOAD_SHA256)
    monkeypatch.setattr(fetch_script, "SAMPLE_SHA256", SAMPLE_PAYLOAD_SHA256)
    return calls


def test_main_without_network(
    tmp_path: Path,
    fetch_script: ModuleType,
    fake_pip: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """main(): fetch both, then 'up to date' without calling pip, then exit 1 on a bad hash."""
    dest = tmp_path / "data" / "external"

    assert fetch_script.main(["--dest", str(dest)]) == 0
    assert (dest / "CDNOW_master.txt").read_bytes() == PAYLOAD
    assert (dest / "CDNOW_sample.txt").read_bytes() == SAMPLE_PAYLOAD
    assert len(fake_pip) == 1

    assert fetch_script.main(["--dest", str(dest)]) == 0
    assert len(fake_pip) == 1
    out = capsys.readouterr().out
    assert out.count("up to date") == 2

    monkeypatch.setattr(fetch_script, "EXPECTED_SHA256", "f" * 64)
    assert fetch_script.main(["--dest", str(dest), "--force"]) == 1
    assert "checksum mismatch" in capsys.readouterr().err
    assert sorted(p.name for p in dest.iterdir()) == ["CDNOW_master.txt", "CDNOW_sample.txt"]
    assert (dest / "CDNOW_master.txt").read_bytes() == PAYLOAD


def test_fetch_up_to_date_only_when_both_files_are(
    tmp_path: Path,
    fetch_script: ModuleType,
    fake_pip: list[Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A valid master alone is not enough: pip runs and only the missing sample is written;
    a wrong sample is replaced; a sample hash mismatch exits 1 and keeps the old file."""
    dest = tmp_path / "external"
    dest.mkdir()
    (dest / "CDNOW_master.txt").write_bytes(PAYLOAD)
    before = (dest / "CDNOW_master.txt").stat().st_mtime_ns

    assert fetch_script.fetch(dest) == dest / "CDNOW_master.txt"
    assert len(fake_pip) == 1
    assert (dest / "CDNOW_sample.txt").read_bytes() == SAMPLE_PAYLOAD
    assert (dest / "CDNOW_master.txt").stat().st_mtime_ns == before  # not rewritten
    assert "Wrote" in capsys.readouterr().out

    (dest / "CDNOW_sample.txt").write_bytes(b"stale")
    assert fetch_script.main(["--dest", str(dest)]) == 0
    assert len(fake_pip) == 2
    assert "exists but its checksum differs" in capsys.readouterr().out
    assert (dest / "CDNOW_sample.txt").read_bytes() == SAMPLE_PAYLOAD

    (dest / "CDNOW_sample.txt").write_bytes(b"stale")
    monkeypatch.setattr(fetch_script, "SAMPLE_SHA256", "e" * 64)
    assert fetch_script.main(["--dest", str(dest)]) == 1
    assert "CDNOW_sample.txt" in capsys.readouterr().err
    assert (dest / "CDNOW_sample.txt").read_bytes() == b"stale"
    assert sorted(p.name for p in dest.iterdir()) == ["CDNOW_master.txt", "CDNOW_sample.txt"]


def test_help(fetch_script: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        fetch_script.main(["--help"])
    assert exc.value.code == 0
    assert "--dest" in capsys.readouterr().out
