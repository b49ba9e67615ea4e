"""The CLI as a user meets it: exit codes, readable errors, no traceback, no stray output."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churnlens import __version__
from churnlens.cli import app
from tests.conftest import AS_OF

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


def test_validate_warns_of_an_id_pasted_into_amount(tmp_path: Path) -> None:
    """Under the contract's 1e18 limit, so the log is valid, but said."""
    rows = "".join(f"c{i},2024-01-0{1 + i % 9},web,purchase,{20 + i % 7},,\n" for i in range(40))
    code, out = run(
        "validate", str(csv(tmp_path, rows + "c99,2024-01-05,web,purchase,123456789012,,\n"))
    )
    text = " ".join(out.split())
    assert code == 0 and "warning: 1 customer(s)' mean order is over 100,000 times" in text
    assert "1.235e+11" in text, text
    code, out = run("validate", str(csv(tmp_path, rows)))
    assert code == 0 and "mean order" not in out


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


# ------------------------------------------------------------------ parsing, errors


def test_a_bad_engine_is_a_usage_error_before_any_work(tmp_path: Path) -> None:
    events = csv(tmp_path, GOOD)
    out_file = tmp_path / "scores.parquet"
    args = ["score", str(events), "--as-of", "2024-03-01", "--out", str(out_file)]
    args += ["--model", str(tmp_path / "no-such-bundle"), "--engine", "nonsense"]
    code, out = run(*args)
    flat = " ".join(out.split())
    assert code == 2, out  # a missing model would be exit code 1: it was never looked for
    assert "--engine" in flat and "nonsense" in flat
    assert "no such model bundle" not in flat
    assert not out_file.exists()
    code, out = run("score", "-h")
    assert code == 0 and "duckdb|spark" in out


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_errors_in_a_subgroup_command_are_one_error_message(tmp_path: Path) -> None:
    # an OSError: the tracking store's folder cannot be made
    broken = tmp_path / "broken.yaml"
    broken.write_text('tracking: {uri: "sqlite:////proc/nope/x.db"}\n')
    code, out = run("models", "list", "--config", str(broken))
    assert code == 1, out
    assert lines_of(out) == [
        "error: MLflow tracking failed ([Errno 2] No such file or directory: '/proc/nope'); "
        "nothing was changed"
    ]
    # a ChurnlensError (ConfigError) in the same subgroup
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("nope: 1\n")
    code, out = run("models", "list", "--config", str(unknown))
    assert code == 1, out
    assert "Traceback" not in out
    assert [line for line in lines_of(out) if line.startswith("error:")] == [
        f"error: {unknown}: invalid configuration"
    ]
    assert "nope: unknown key" in out


def test_errors_in_a_subgroup_go_to_stderr_in_a_real_process(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "churnlens"
    missing = tmp_path / "CDNOW_master.txt"
    out_file = tmp_path / "events.parquet"
    proc = subprocess.run(
        [str(exe), "datasets", "cdnow", str(missing), "--out", str(out_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert lines_of(proc.stderr)[0] == f"error: {missing}: 1 problem found"
    assert "file not found" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out_file.exists()


# ------------------------------------------------------------------ --population


@pytest.fixture(scope="module")
def whole_and_slice(events_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """The sample log's features, and a slice of its customers (the busiest and the
    quietest, so the slice's own RFM cut points differ from the whole log's)."""
    folder = tmp_path_factory.mktemp("population")
    whole = folder / "whole.parquet"
    code, out = run("features", str(events_path), "--as-of", AS_OF, "--out", str(whole))
    assert code == 0, out
    log = pd.read_parquet(events_path)
    counts = log["customer_id"].value_counts()
    chosen = [*counts.index[:80], *counts.index[-40:]]
    slice_log = folder / "slice.parquet"
    log[log["customer_id"].isin(chosen)].to_parquet(slice_log)
    return whole, slice_log, sorted(chosen)


def test_features_of_a_slice_against_the_whole_population(whole_and_slice, tmp_path) -> None:
    whole, slice_log, chosen = whole_and_slice
    manifest = Path(f"{whole}.manifest.json")
    given, own = tmp_path / "given.parquet", tmp_path / "own.parquet"
    base = ["features", str(slice_log), "--as-of", AS_OF]
    code, out = run(*base, "--out", str(given), "--population", str(manifest))
    assert code == 0, out
    code, out = run(*base, "--out", str(own))
    assert code == 0, out
    expected = pd.read_parquet(whole).loc[chosen]
    got = pd.read_parquet(given).loc[chosen]
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-12)
    # without the population the slice is scored against its own buyers
    alone = pd.read_parquet(own).loc[chosen]
    relative = [c for c in expected.columns if c.startswith(("rfm_", "cycle_"))]
    assert not np.allclose(
        alone[relative].to_numpy(float), expected[relative].to_numpy(float), equal_nan=True
    )
    recorded = json.loads(Path(f"{given}.manifest.json").read_text())["population"]
    assert recorded["source"] == str(manifest)
    whole_stats = json.loads(manifest.read_text())["population"]["statistics"]
    assert recorded["statistics"] == whole_stats
    own_stats = json.loads(Path(f"{own}.manifest.json").read_text())["population"]["statistics"]
    assert own_stats != whole_stats


def test_a_bad_population_fails_before_any_work(whole_and_slice, tmp_path: Path) -> None:
    whole, slice_log, _ = whole_and_slice
    out_file = tmp_path / "scores.parquet"
    base = ["--as-of", AS_OF, "--out", str(out_file)]
    not_a_manifest = tmp_path / "notes.json"
    not_a_manifest.write_text('{"hello": 1}')
    code, out = run(
        "score", str(slice_log), *base, "--model", str(tmp_path / "no-such-bundle"),
        "--population", str(not_a_manifest),
    )  # fmt: skip
    flat = " ".join(out.split())
    assert code == 1 and "no population statistics" in flat, out  # before the model is looked for
    code, out = run("features", str(slice_log), *base, "--population", str(tmp_path / "nope.json"))
    assert code == 1 and "nope.json" in out and "No such file" in " ".join(out.split())
    # the population is an input: replacing the manifest it comes from is refused
    manifest = Path(f"{whole}.manifest.json")
    before = manifest.read_bytes()
    code, out = run(
        "features", str(slice_log), "--as-of", AS_OF, "--out", str(whole),
        "--population", str(manifest),
    )  # fmt: skip
    assert code == 1 and "writing it would destroy the input" in " ".join(out.split()), out
    assert manifest.read_bytes() == before
    code, out = run(
        "score", str(slice_log), *base, "--population", str(not_a_manifest), "--engine", "spark"
    )
    assert code == 2 and "--population" in out
    # statistics of a later day would bring that day's customers into earlier features
    for command in (["features"], ["score", "--model", str(tmp_path / "no-such-bundle")]):
        code, out = run(
            command[0], str(slice_log), "--as-of", "2025-01-03", "--out", str(out_file),
            *command[1:], "--population", str(manifest),
        )  # fmt: skip
        flat = " ".join(out.split())
        assert code == 1 and f"as of {AS_OF}, after this run's as-of day 2025-01-03" in flat, out
    assert not out_file.exists()


@pytest.mark.slow
def test_score_of_a_slice_against_the_whole_population(
    events_path: Path, churn_bundle: Path, whole_and_slice, tmp_path: Path
) -> None:
    bundle = churn_bundle  # trained on events_path as of AS_OF with the conftest SETTINGS
    _, slice_log, chosen = whole_and_slice
    base = ["--as-of", AS_OF, "--model", str(bundle), "--segments", "none", "--no-track"]
    whole = tmp_path / "whole.parquet"
    given, own = tmp_path / "given.parquet", tmp_path / "own.parquet"
    manifest = Path(f"{whole}.manifest.json")
    for log, out_file, extra in (
        (events_path, whole, []),
        (slice_log, given, ["--population", str(manifest)]),
        (slice_log, own, []),
    ):
        code, out = run("score", str(log), "--out", str(out_file), *base, *extra)
        assert code == 0, out
    expected = pd.read_parquet(whole).set_index("customer_id").loc[chosen]
    got = pd.read_parquet(given).set_index("customer_id").loc[chosen]
    for column in ("churn_probability", "cycle_days", "days_since_purchase"):
        np.testing.assert_allclose(got[column], expected[column], rtol=0, atol=1e-12)
    recorded = json.loads(Path(f"{given}.manifest.json").read_text())["population"]
    assert recorded["source"] == str(manifest)
    whole_stats = json.loads(manifest.read_text())["population"]["statistics"]
    assert recorded["statistics"] == whole_stats
    own_stats = json.loads(Path(f"{own}.manifest.json").read_text())["population"]["statistics"]
    assert own_stats != whole_stats
    # the stage thresholds and value tiers come from the whole log's scores too, so the
    # slice's customers get the stages, tiers and actions they get within the whole log
    whole_manifest = json.loads(manifest.read_text())
    given_manifest = json.loads(Path(f"{given}.manifest.json").read_text())
    own_manifest = json.loads(Path(f"{own}.manifest.json").read_text())
    key = "stage_thresholds_days"
    assert given_manifest[key] == whole_manifest[key] != own_manifest[key]
    shared = ["stage_thresholds"] + (["value_tier_cuts"] if given_manifest["value_version"] else [])
    assert recorded["shared"] == shared
    assert given_manifest["value_tier_cuts"] == whole_manifest["value_tier_cuts"]
    for column in ("lifecycle_stage", "silent_on", "lost_on", "value_tier", "action", "group"):
        assert got[column].tolist() == expected[column].tolist(), column
    # a features manifest has none: the slice's own, and the manifest says so
    features_manifest = str(whole_and_slice[0]) + ".manifest.json"
    code, out = run("score", str(slice_log), "--out", str(given), *base,
                    "--population", features_manifest)  # fmt: skip
    assert code == 0, out
    notes = json.loads(Path(f"{given}.manifest.json").read_text())["notes"]
    assert any("stage thresholds are cut on the scored customers" in n for n in notes), notes


def test_days_past_the_calendar_are_refused_not_a_traceback(events_path: Path, tmp_path) -> None:
    """A horizon of a century at most, and a window past the calendar's last day named:
    the date arithmetic overflowed (OverflowError tracebacks)."""
    log = str(events_path)
    for args in (
        ["train", log, "--as-of", AS_OF, "--horizon-days", "99999999"],
        ["backtest", log, "--as-of", AS_OF, "--value-horizon-days", "99999999"],
        ["outcomes", "s.parquet", "--events", log, "--out", "o.csv", "--horizon-days", "99999999"],
        ["train-uplift", "s.parquet", "--events", log, "--horizon-days", "99999999"],
    ):
        code, out = run(*args)
        assert code == 2 and "36500" in out.replace(",", ""), (args, out)
    code, out = run("backtest", log, "--as-of", "9999-12-01")
    assert code == 1 and "past the calendar's last day" in " ".join(out.split()), out
    config = tmp_path / "century.yaml"
    config.write_text("training: {horizon_days: 99999999}\n")
    code, out = run("train", log, "--as-of", AS_OF, "--config", str(config), "--no-track")
    assert code == 1 and "horizon_days" in out and "Traceback" not in out, out
