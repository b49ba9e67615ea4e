"""How churnlens starts Spark, checked without a JVM: the configuration a session gets,
the master spark-submit chose, a bad master as one error line, the Spark options of
``churnlens score``."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from churnlens.cli import app
from churnlens.errors import SparkError
from churnlens.spark_session import (
    PANDAS_WARNING,
    check_master,
    configured_master,
    is_utc,
    session_settings,
)
from tests.conftest import AS_OF

runner = CliRunner()


@pytest.mark.parametrize(
    "master",
    ["local", "local[2]", "local[*]", "local[2,3]", "spark://h1:7077", "spark://a:1,b:2",
     "yarn", "k8s://https://host:443", "local-cluster[2,1,1024]"],
)  # fmt: skip
def test_masters_spark_accepts_pass(master: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HADOOP_CONF_DIR", "/etc/hadoop/conf")
    assert check_master(master) == master


@pytest.mark.parametrize("master", ["bogus", "local[two]", "spark:/h:7077", "mesos://h:5050"])
def test_a_bad_master_is_one_clear_error(master: str) -> None:
    with pytest.raises(SparkError, match="is not a Spark master: give local"):
        check_master(master)


def test_yarn_without_the_hadoop_configuration_is_refused(monkeypatch) -> None:
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("YARN_CONF_DIR", raising=False)
    with pytest.raises(SparkError, match="HADOOP_CONF_DIR"):
        check_master("yarn")


def test_the_master_is_set_only_when_given(monkeypatch, tmp_path) -> None:
    conf = session_settings(None)
    assert "spark.master" not in conf  # spark-submit's --master stays in charge
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert PANDAS_WARNING in conf["spark.executorEnv.PYTHONWARNINGS"]
    assert session_settings("local[1]")["spark.master"] == "local[1]"
    for name in ("PYSPARK_GATEWAY_PORT", "PYSPARK_SUBMIT_ARGS", "SPARK_CONF_DIR", "SPARK_HOME"):
        monkeypatch.delenv(name, raising=False)
    from pyspark.sql import SparkSession

    # a session another test left active in this worker process would answer first
    monkeypatch.setattr(SparkSession, "getActiveSession", classmethod(lambda cls: None))
    assert configured_master() is None  # nothing chosen: spark_session takes local[2]
    monkeypatch.setenv("PYSPARK_SUBMIT_ARGS", "--master spark://h:7077 pyspark-shell")
    assert configured_master() == "PYSPARK_SUBMIT_ARGS"
    monkeypatch.delenv("PYSPARK_SUBMIT_ARGS")
    (tmp_path / "spark-defaults.conf").write_text("spark.master   spark://m:7077\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    assert configured_master() == "spark://m:7077"
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "12345")  # a driver spark-submit started
    assert configured_master() == "spark-submit"


def test_an_archive_runs_on_the_executors_and_the_driver_keeps_its_python(tmp_path) -> None:
    archive = tmp_path / "env.tar.gz"
    archive.write_bytes(b"")
    conf = session_settings("spark://h:7077", archive=archive)
    assert conf["spark.archives"] == f"{archive.resolve()}#environment"
    assert conf["spark.pyspark.python"] == "./environment/bin/python"
    assert conf["spark.pyspark.driver.python"] == sys.executable
    with pytest.raises(SparkError, match="no such file"):
        session_settings("spark://h:7077", archive=tmp_path / "missing.tar.gz")
    with pytest.raises(SparkError, match="only on a cluster"):
        session_settings("local[2]", archive=archive)


def test_utc_names() -> None:
    assert is_utc("UTC") and is_utc("Etc/UTC") and is_utc("+00:00")
    assert not is_utc("America/New_York") and not is_utc(None)


def _score(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["score", *args])
    return result.exit_code, result.output


def test_the_command_line_refuses_spark_options_it_cannot_honour(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("customer_id,timestamp,channel,event_type\nc1,2024-01-01,web,visit\n")
    base = [str(events), "--as-of", AS_OF, "--model", str(tmp_path / "none")]
    code, out = _score(*base, "--out", str(tmp_path / "s.parquet"), "--spark-archive", "x")
    assert code == 2 and "only with --engine spark" in out
    code, out = _score(*base, "--out", str(tmp_path / "s.csv"), "--engine", "spark")
    assert code == 1 and "--engine spark writes a Parquet dataset" in out
    assert "Traceback" not in out


def test_a_bad_master_on_the_command_line_is_one_line_before_any_work(tmp_path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("customer_id,timestamp,channel,event_type\nc1,2024-01-01,web,visit\n")
    out = tmp_path / "s.parquet"
    args = [str(events), "--as-of", AS_OF, "--model", str(tmp_path / "none"), "--out", str(out)]
    code, text = _score(*args, "--engine", "spark", "--master", "bogus://x", "--no-track")
    assert code == 1
    # off a terminal, the timestamped progress lines come first; then the one error line
    progress = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ")
    assert [line for line in text.strip().splitlines() if not progress.match(line)] == [
        "error: --master 'bogus://x' is not a Spark master: give local[N], spark://HOST:PORT, "
        "yarn or k8s://https://HOST:PORT"
    ]
    assert not out.with_name("s.parquet.lock").exists()


def test_waiting_for_a_local_cluster_tolerates_a_master_still_starting() -> None:
    """An empty status page (ValueError) or a refused connection (OSError) is "not yet";
    the wait returns the first true answer, or names what it waited for."""
    from churnlens.spark_standalone import free_ports, wait_for

    answers = iter([ValueError("empty page"), OSError("refused"), {}, {"aliveworkers": 1}])

    def status() -> dict:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert wait_for("one worker", status, seconds=10) == {"aliveworkers": 1}
    with pytest.raises(TimeoutError, match="did not get there in 0 s: the master"):
        wait_for("the master", lambda: False, seconds=0)
    ports = free_ports(4)
    assert len(set(ports)) == 4 and all(p > 0 for p in ports)
