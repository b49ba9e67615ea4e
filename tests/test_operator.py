"""The operator's view of the nightly job: plain progress lines off a terminal, errors
that say what is wrong (not a column when it is no column), the help, file modes."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from churnlens.cli import app
from tests.conftest import AS_OF

runner = CliRunner()
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ")


def churnlens(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "churnlens"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "churnlens.cli"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, check=False, cwd=cwd, env=env
    )


def test_score_off_a_terminal_prints_timestamped_progress_lines(
    churn_bundle: Path, sample_log_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.parquet"
    args = ["score", str(sample_log_path), "--as-of", AS_OF, "--out", str(out)]
    proc = churnlens(*args, "--model", str(churn_bundle), "--no-track", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    progress = [line for line in lines if STAMP.match(line)]
    assert progress and progress[0].endswith("score: checking the inputs, loading the models")
    # the partition count is known from the start: 0 of 2 passes x 1 partition first
    assert any(
        line.endswith("Scoring partitions: 0/2 (0 customers, 0 customers/s)") for line in progress
    )
    assert any("Scoring partitions: 2/2" in line for line in progress)
    assert "\x1b[" not in proc.stderr and "━" not in proc.stderr  # no bar, no colours
    # the summary's time is the whole command's, the scoring's beside it
    summary = re.search(r"customers in ([\d.]+) s \(.*scoring ([\d.]+) s\)", proc.stdout)
    assert summary and float(summary[1]) >= float(summary[2])
    assert "Drift against training of 2025-02-03: ok" in proc.stdout


def test_train_off_a_terminal_prints_its_steps(sample_log_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "small.yaml"
    config.write_text(
        "training: {horizon_days: 60, snapshot_step_days: 60, min_history_days: 60}\n"
        "model: {n_estimators: 20, min_child_samples: 40}\nvalue: {max_snapshots: 0}\n"
    )
    args = ["train", str(sample_log_path), "--as-of", AS_OF, "--config", str(config)]
    proc = churnlens(*args, "--models-dir", str(tmp_path / "m"), "--no-track", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    steps = [
        line[STAMP.match(line).end() :] for line in proc.stderr.splitlines() if STAMP.match(line)
    ]
    assert steps[0] == "Training on snapshots"
    assert "train: fitting the churn model" in " ".join(steps)
    assert "train: the training population's reference for drift checks" in steps
    assert re.fullmatch(r"done after [\d.]+ s", steps[-1])


def test_a_missing_file_is_named_before_any_model_is_loaded(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-log.parquet"
    args = ["score", str(missing), "--as-of", AS_OF, "--out", str(tmp_path / "s.parquet")]
    code = runner.invoke(app, [*args, "--model", str(tmp_path / "no-such-bundle")])
    assert code.exit_code == 1
    # the log is checked first: the missing bundle is not what is reported
    assert f"{missing}: 1 problem found" in code.output
    assert "  - file not found. Fix: check the path" in code.output
    assert "column" not in code.output and "bundle" not in code.output


def test_a_bad_date_is_a_date_problem(tmp_path: Path, sample_log_path: Path) -> None:
    args = ["score", str(sample_log_path), "--as-of", "2025-02-30", "--out"]
    result = runner.invoke(app, [*args, str(tmp_path / "s.parquet"), "--model", "x"])
    assert result.exit_code == 1
    assert "--as-of: 1 problem found" in result.output
    assert "'2025-02-30' is not a date. Fix: give the day as YYYY-MM-DD" in result.output
    assert "column" not in result.output
    # the option that holds the bad date is the one named
    start = runner.invoke(app, ["sample", "--start", "2024-13-01", "--out", "x.parquet"])
    assert start.exit_code == 1 and "--start: 1 problem found" in start.output, start.output


def test_a_bad_extension_says_which_option(tmp_path: Path, sample_log_path: Path) -> None:
    log = tmp_path / "events.xlsx"
    log.write_text("whatever")
    result = runner.invoke(app, ["validate", str(log)])
    assert result.exit_code == 1
    assert "  - unknown file type '.xlsx'. Fix: use" in result.output
    assert "column" not in result.output
    args = ["score", str(sample_log_path), "--as-of", AS_OF, "--out", str(tmp_path / "s.xlsx")]
    result = runner.invoke(app, [*args, "--model", "x"])
    assert result.exit_code == 1
    assert "  - --out: unsupported output type. Fix: end the name with .parquet" in result.output


@pytest.mark.parametrize(
    ("given", "option"),
    [(["--fail-on-drift"], "--fail-on-drift"), (["--previous", "x.csv"], "--previous")],
)
def test_spark_refuses_the_drift_guard_and_history_it_does_not_do(
    tmp_path: Path, sample_log_path: Path, given: list[str], option: str
) -> None:
    # Spark checks no drift and adds no history: the guard must not silently do nothing
    args = ["score", str(sample_log_path), "--as-of", AS_OF, "--out", str(tmp_path / "s.csv")]
    result = runner.invoke(app, [*args, "--engine", "spark", *given])
    assert result.exit_code == 2, result.output
    assert option in result.output and "use --engine duckdb" in result.output
    assert list(tmp_path.iterdir()) == []


def test_validate_reports_the_other_columns_beside_a_renamed_one(tmp_path: Path) -> None:
    log = tmp_path / "events.csv"
    log.write_text(
        "CustomerID,timestamp,channel,event_type,amount\n"
        "c1,2024-13-01,web,purchase,12$\nc2,2024-01-02,web,visit,\n"
    )
    result = runner.invoke(app, ["validate", str(log)])
    assert result.exit_code == 1
    assert "3 problems found" in result.output
    assert "column 'customer_id': required column is missing; did you mean 'CustomerID'?" in (
        result.output
    )
    assert "column 'timestamp': timestamp cannot be parsed; 1 row" in result.output
    assert "column 'amount': value is not a number; 1 row" in result.output


def test_help_shows_the_date_format_and_no_bool_placeholder() -> None:
    for command in (["score"], ["train"], ["features"], ["models", "convert"], []):
        result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0
        assert "<bool>" not in result.output, command
    score_help = runner.invoke(app, ["score", "--help"], env={"COLUMNS": "200"}).output
    assert "YYYY-MM-DD" in score_help and "churnlens[spark]" in score_help
    assert "local[2]" in score_help and "--fail-on-drift" in score_help
    assert "YYYY-MM-DD" in runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).output


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mode", [0o640, None])
def test_every_output_of_score_gets_the_scores_file_mode(
    churn_bundle: Path, sample_log_path: Path, tmp_path: Path, mode: int | None
) -> None:
    from churnlens.jobs import score_job
    from churnlens.model_source import load_models

    models_dir = tmp_path / "models"
    shutil.copytree(churn_bundle.parent, models_dir)
    out, report = tmp_path / "scores.csv", tmp_path / "report.html"
    expected = 0o666 & ~_umask()
    if mode is not None:  # the operator restricted the earlier scores file
        out.write_text("earlier\n")
        os.chmod(out, mode)
        expected = mode
    models = load_models(models_dir / churn_bundle.name, None)
    result = score_job(sample_log_path, AS_OF, out, models, report=report)
    written = [result.path, result.manifest_path, report]
    assert {p.name: _mode(p) for p in written} == {p.name: expected for p in written}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
