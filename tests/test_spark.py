"""churnlens.spark: the single-machine features and scores, computed on Spark.

One session-scoped local[1] session (2 shuffle partitions, UI off, UTC); every test
compares Spark's result with the single-machine function on the same events.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churnlens import ChurnlensError, InputError, Settings, build_features
from churnlens import spark as cs
from churnlens.actions import Policy
from churnlens.config import ModelSettings, TrainingSettings
from churnlens.model_source import ScoringModels, load_models
from churnlens.scoring import EXTRA_COLUMNS, SCORE_COLUMNS, score
from churnlens.training import segment, train
from tests.conftest import make_log

SETTINGS = Settings(
    training=TrainingSettings(horizon_days=60, snapshot_step_days=60, min_history_days=60),
    model=ModelSettings(n_estimators=80, min_child_samples=40),
)
AS_OF = "2025-02-03"  # the sample log's last day


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        pytest.skip("Spark needs Java (17+): none on PATH and JAVA_HOME is unset")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # executors import this churnlens
    session = (
        SparkSession.builder.master("local[1]")
        .appName("churnlens-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def events_path(sample_events: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("log") / "events.parquet"
    sample_events.to_parquet(path)
    return path


@pytest.fixture(scope="module")
def models(events_path: Path, tmp_path_factory: pytest.TempPathFactory) -> ScoringModels:
    folder = tmp_path_factory.mktemp("models")
    trained = train(events_path, AS_OF, SETTINGS, folder)
    segment(events_path, AS_OF, SETTINGS, folder, k=3)
    assert trained.bundle is not None
    return load_models(trained.bundle)  # segments found beside it


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("customer_id").sort_index()


def test_features_equal_the_single_machine_features(spark, sample_events) -> None:
    expected = build_features(sample_events, AS_OF)
    got = _features(cs.build_features(spark.createDataFrame(sample_events), AS_OF).toPandas())
    assert list(got.index) == list(expected.index)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)


def test_timestamps_at_a_non_utc_offset_give_the_same_features(spark) -> None:
    log = make_log(
        [
            ("a", "2024-01-10", "web", "purchase", 20),
            ("a", "2024-02-20 12:00", "web", "visit"),
            ("b", "2024-01-15", "phone", "purchase", 50),
            ("b", "2024-02-01", "phone", "purchase", 30),
            ("c", "2024-02-25", "email", "marketing"),
        ]
    )
    log["timestamp"] = log["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S")
    late = {"customer_id": "a", "channel": "web", "event_type": "purchase", "amount": 80.0}
    log = pd.concat([log, pd.DataFrame([{**late, "timestamp": "2024-03-01T23:30:00-05:00"}])])
    text = spark.createDataFrame(log)  # timestamps as text: DuckDB parses them per bucket
    parsed = text.withColumn("timestamp", F.to_timestamp("timestamp"))  # Spark instants
    for as_of in ("2024-03-01", "2024-03-02"):  # 23:30 at -05:00 is 04:30 UTC next day
        expected = build_features(log, as_of)
        for df in (text, parsed):
            got = _features(cs.build_features(df, as_of).toPandas())
            pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)
    assert build_features(log, "2024-03-01").loc["a", "rfm_frequency"] == 1
    assert build_features(log, "2024-03-02").loc["a", "rfm_frequency"] == 2


def test_invalid_events_are_reported_once_for_the_whole_log(spark) -> None:
    log = make_log([("a", "2024-01-10", "web", "purchase", 20), ("b", "2024-01-11", "web", "x")])
    log["timestamp"] = ["2024-01-10", "yesterday"]
    with pytest.raises(InputError, match=r"timestamp cannot be parsed; 1 row; e\.g\. 'yesterday'"):
        cs.build_features(spark.createDataFrame(log), "2024-02-01")
    with pytest.raises(InputError, match="required column is missing"):
        cs.build_features(spark.createDataFrame(log.drop(columns="channel")), "2024-02-01")


def _normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Scores in a comparable form: by customer, dates and lists as text and tuples."""
    out = frame[[*SCORE_COLUMNS, *EXTRA_COLUMNS]].set_index("customer_id").sort_index()
    for c in ("as_of", "silent_on", "lost_on"):
        out[c] = out[c].astype(str)
    out["reasons"] = [tuple(r) for r in out["reasons"]]
    for c in out.columns[out.dtypes == object]:
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


@pytest.mark.parametrize("max_contacts", [None, 25])
def test_scores_equal_the_single_machine_scores(
    spark, events_path, models, tmp_path, max_contacts
) -> None:
    local = score(events_path, AS_OF, tmp_path / "s.parquet", models, max_contacts=max_contacts)
    expected = _normalise(pd.read_parquet(local.path))
    events = spark.read.parquet(str(events_path))
    got = _normalise(
        cs.score(events, AS_OF, models, max_contacts=max_contacts, buckets=3).toPandas()
    )
    assert list(got.index) == list(expected.index)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)
    if max_contacts is not None:
        contacting = got["action"].isin(Policy().contact_actions())
        assert contacting.sum() == max_contacts
        over = got[got["rule"] == "budget"]
        assert len(over) > 0 and over["action_channel"].isna().all()
        assert all(r[-1] == "over the contact budget of 25" for r in over["reasons"])


@pytest.mark.parametrize("name", ["scores.parquet", "scores.csv"])
def test_score_to_file_writes_what_single_machine_scoring_writes(
    spark, events_path, models, tmp_path, name
) -> None:
    local = score(events_path, AS_OF, tmp_path / "local" / name, models, max_contacts=40)
    out = tmp_path / "spark" / name
    manifest = cs.score_to_file(events_path, AS_OF, out, models, max_contacts=40, master="local[1]")
    if name.endswith(".csv"):
        assert out.read_text() == local.path.read_text()  # same rows, order and text
    else:
        expected, got = pd.read_parquet(local.path), pd.read_parquet(out)
        assert list(got.columns) == [*SCORE_COLUMNS, *EXTRA_COLUMNS]
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)
    assert json.loads(out.with_name(name + ".manifest.json").read_text()) == manifest
    assert manifest["engine"] == "spark" and manifest["partitions"] == 2
    differ = {"created", "seconds", "partitions", "engine", "spark_master", "value_at_risk"}
    assert {k: v for k, v in manifest.items() if k not in differ} == {
        k: v for k, v in local.manifest.items() if k not in differ
    }
    assert np.isclose(manifest["value_at_risk"], local.manifest["value_at_risk"], rtol=1e-12)
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp files


def test_without_pyspark_the_error_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # import pyspark.sql fails
    spec = importlib.util.spec_from_file_location("_spark_without_pyspark", cs.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(ChurnlensError, match=r'pip install "churnlens\[spark\]"'):
        module.build_features(None, AS_OF)
