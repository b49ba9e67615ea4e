"""The CLI as a user meets it: exit codes, readable errors, no traceback, no stray output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from churnlens import __version__
from churnlens.cli import app

runner = CliRunner()
HEADER = "customer_id,timestamp,channel,event_type,amount,direction,duration_s\n"
GOOD = (
    "c1,2024-01-01,web,purchase,10,,\n"
    "c1,2024-02-01,app,visit,,,\n"
    "c2,2024-01-15,email,marketing,,,\n"
)


def run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def csv(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "events.csv"
    path.write_text(header + body)
    return path


def test_version_and_help_on_every_command() -> None:
    code, out = run("--version")
    assert code == 0 and out.strip() == f"churnlens {__version__}"
    for command in (
        [],
        ["sample"],
        ["validate"],
        ["features"],
        ["datasets"],
        ["datasets", "cdnow"],
    ):
        code, out = run(*command, "-h")
        assert code == 0, command
        assert "Usage" in out


def test_validate_summarises_a_good_log(tmp_path: Path) -> None:
    code, out = run("validate", str(csv(tmp_path, GOOD + GOOD.splitlines(True)[0])))
    assert code == 0
    assert "3 events of 2 customers" in out
    assert "1 exact duplicate rows dropped" in out
    assert "marketing" in out and "purchase" in out and "email" in out


@pytest.mark.parametrize(
    ("body", "header", "expected"),
    [
        (
            GOOD,
            "customerid,timestamp,channel,event_type,amount,direction,duration_s\n",
            "did you mean 'customerid'?",
        ),
        ("c1,2024-02-30,web,visit,,,\n", HEADER, "timestamp cannot be parsed; 1 row; e.g. row 1"),
        ("c1,2024-02-01,web,purchase,12$,,\n", HEADER, "value is not a number"),
        ("c1,2024-02-01,web,purchase,NaN,,\n", HEADER, "value is not finite"),
        ("c1,2024-02-01,phone,support,,,-3\n", HEADER, "negative duration"),
        ("c1,2024-02-01,web,visit,,up,\n", HEADER, "unknown direction"),
        (",2024-02-01,web,visit,,,\n", HEADER, "missing or empty customer id"),
        ("", HEADER, "no events"),
        ("", "", "the file is empty"),
    ],
)
def test_bad_input_exits_1_with_a_clear_message_and_no_output(
    tmp_path: Path, body: str, header: str, expected: str
) -> None:
    events = csv(tmp_path, body, header)
    out_file = tmp_path / "features.parquet"
    for args in (
        ["validate", str(events)],
        ["features", str(events), "--as-of", "2024-03-01", "--out", str(out_file)],
    ):
        code, out = run(*args)
        assert code == 1, out
        flat = " ".join(out.split())
        assert expected in flat
        assert "Traceback" not in out
        assert not out_file.exists()


def test_bad_as_of_and_bad_output_path_fail_before_work(tmp_path: Path) -> None:
    events = csv(tmp_path, GOOD)
    code, out = run("features", str(events), "--as-of", "31/12/2024", "--out", "x.parquet")
    assert code == 1 and "not a date" in out
    code, out = run("features", str(events), "--as-of", "2024-03-01", "--out", str(tmp_path))
    assert code == 1 and "directory" in out
    code, out = run("features", str(events), "--as-of", "2024-03-01", "--out", "f.xlsx")
    assert code == 1 and "unsupported output type" in out


def test_features_writes_one_row_per_customer(tmp_path: Path) -> None:
    out_file = tmp_path / "out" / "features.parquet"
    code, out = run(
        "features", str(csv(tmp_path, GOOD)), "--as-of", "2024-03-01", "--out", str(out_file)
    )
    assert code == 0, out
    frame = pd.read_parquet(out_file)
    assert list(frame.index) == ["c1", "c2"]
    assert frame.loc["c1", "rfm_recency_days"] == 60.0  # 2024-01-01 -> 2024-03-01
    assert frame.loc["c2", "fatigue_touches_90d"] == 1.0
    assert not list(out_file.parent.glob(".*tmp"))


def test_a_failed_run_keeps_the_earlier_output(tmp_path: Path) -> None:
    out_file = tmp_path / "features.parquet"
    good = csv(tmp_path, GOOD)
    assert run("features", str(good), "--as-of", "2024-03-01", "--out", str(out_file))[0] == 0
    before = out_file.read_bytes()
    bad = tmp_path / "bad.csv"
    bad.write_text(HEADER + "c1,never,web,visit,,,\n")
    assert run("features", str(bad), "--as-of", "2024-03-01", "--out", str(out_file))[0] == 1
    assert out_file.read_bytes() == before


def test_real_subprocess_reports_without_traceback(tmp_path: Path) -> None:
    bad = csv(tmp_path, "c1,2024-01-01,web,visit,,sideways,\n")
    exe = Path(sys.executable).parent / "churnlens"
    proc = subprocess.run(
        [str(exe), "validate", str(bad)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 1
    assert "unknown direction" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    usage = subprocess.run(
        [str(exe), "features", str(bad)], capture_output=True, text=True, check=False
    )
    assert usage.returncode == 2  # missing --as-of/--out is a usage error
