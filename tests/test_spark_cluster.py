"""Spark on a real standalone cluster: a master and one worker on 127.0.0.1, started from
the installed pyspark with ``spark-class``; the README's ``nightly_score.py`` submitted
with ``spark-submit`` as written (client mode), then ``churnlens score --engine spark
--spark-archive`` on the same cluster.

There is no conda-pack archive in the test: for ``spark-submit`` the executors run this
test's Python (``spark.pyspark.python``), with the source folder on ``PYTHONPATH``; for
``--spark-archive`` the archive holds only ``bin/python``, a script that records that it
ran and hands over to this Python, which shows the archive is shipped, unpacked as
``./environment`` and run by the executors while the driver keeps its own Python.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

import churnlens
from churnlens.history import HISTORY_COLUMNS
from churnlens.model_source import load_models
from churnlens.scoring import score
from churnlens.spark_standalone import LocalCluster, spark_home, wait_for
from tests.conftest import AS_OF, ROOT
from tests.test_spark import normalise

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("spark")]

SPARK_HOME = Path(spark_home())  # the one LocalCluster uses
SOURCE = Path(churnlens.__file__).parents[1]  # the churnlens under test, for the executors
# small, quick JVMs: no C2 compiler, the serial collector
JAVA_OPTS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, SPARK_HOME=str(SPARK_HOME), SPARK_LOCAL_IP="127.0.0.1")
    env["SPARK_DAEMON_MEMORY"] = "256m"
    env["SPARK_DAEMON_JAVA_OPTS"] = JAVA_OPTS
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SOURCE), env.get("PYTHONPATH")]))
    return {**env, **extra}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A standalone master and one worker (1 core, 1 GB), stopped whatever happens."""
    with LocalCluster(tmp_path_factory.mktemp("cluster"), env=_env(), seconds=60) as started:
        yield started


def _readme_job(folder: Path) -> Path:
    """``nightly_score.py`` exactly as the README shows it."""
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"```python\n(# nightly_score\.py .*?)```", readme, re.S)
    assert found, "the README's Spark section shows nightly_score.py"
    job = folder / "nightly_score.py"
    job.write_text(found.group(1))
    return job


def _submit_options(url: str) -> list[str]:
    return [
        "--master", url, "--deploy-mode", "client",
        "--driver-memory", "512m", "--executor-memory", "512m",
        "--driver-java-options", JAVA_OPTS,
        "--conf", f"spark.executor.extraJavaOptions={JAVA_OPTS}",
        "--conf", "spark.sql.session.timeZone=UTC",
        "--conf", f"spark.executorEnv.PYTHONPATH={SOURCE}",
    ]  # fmt: skip


def test_the_readme_job_runs_on_a_standalone_cluster(
    cluster, sample_log_path, trained_bundles, tmp_path
) -> None:
    url = cluster.url
    job = _readme_job(tmp_path)
    out = tmp_path / "scores"
    submit = [str(SPARK_HOME / "bin" / "spark-submit"), *_submit_options(url)]
    submit += ["--conf", f"spark.pyspark.python={sys.executable}"]  # no archive: this Python
    submit += ["--conf", f"spark.pyspark.driver.python={sys.executable}"]
    submit += [str(job), str(sample_log_path), AS_OF, str(trained_bundles[0]), str(out)]
    done = subprocess.run(submit, env=_env(), capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "PySpark does not yet fully support pandas" not in done.stderr  # filtered
    models = load_models(trained_bundles[0])
    local = score(sample_log_path, AS_OF, tmp_path / "local.parquet", models, max_contacts=50_000)
    expected = normalise(pd.read_parquet(local.path))
    got = normalise(pd.read_parquet(out))
    assert list(got.index) == list(expected.index)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)
    finished = wait_for(
        "the application listed as completed", lambda: cluster.status()["completedapps"]
    )
    assert [app["state"] for app in finished] == ["FINISHED"]
    assert cluster.status()["activeapps"] == []


def test_the_command_line_ships_an_environment_archive(
    cluster, sample_log_path, trained_bundles, tmp_path
) -> None:
    url = cluster.url
    ran = tmp_path / "archive-python-ran"
    python = tmp_path / "env" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        f'#!/bin/sh\necho "$PWD" >> {ran}\nexport PYTHONPATH={SOURCE}\nexec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    archive = tmp_path / "churnlens_env.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(python.parent, arcname="bin")
    out = tmp_path / "cli" / "scores.parquet"
    command = [sys.executable, "-m", "churnlens.cli", "score", str(sample_log_path)]
    command += ["--as-of", AS_OF, "--out", str(out), "--model", str(trained_bundles[0])]
    command += ["--engine", "spark", "--master", url, "--spark-archive", str(archive)]
    command += ["--max-contacts", "40", "--no-track"]
    small = f"--executor-memory 512m --driver-java-options '{JAVA_OPTS}' pyspark-shell"
    env = _env(PYSPARK_SUBMIT_ARGS=small)  # pyspark's own route for spark-submit options
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "/app-" in ran.read_text()  # the archive's bin/python ran in an executor's folder
    manifest = json.loads(out.with_name("scores.parquet.manifest.json").read_text())
    assert manifest["spark_master"] == url and manifest["output_format"] == "parquet-dataset"
    assert sorted(os.listdir(out.parent)) == ["scores.parquet", "scores.parquet.manifest.json"]
    models = load_models(trained_bundles[0])
    local = score(sample_log_path, AS_OF, tmp_path / "local.parquet", models, max_contacts=40)
    expected, got = pd.read_parquet(local.path), pd.read_parquet(out)  # the same rows, order
    # the history columns are the one-machine engine's own for now (Spark adds none)
    assert list(expected.columns) == [*got.columns, *HISTORY_COLUMNS]
    expected = expected[list(got.columns)]
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)
    wait_for("no application left running", lambda: cluster.status()["activeapps"] == [])
