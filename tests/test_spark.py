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
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from churnlens import ChurnlensError, InputError, build_features
from churnlens import spark as cs
from churnlens.actions import ActionSpec, Policy
from churnlens.config import ExperimentSettings
from churnlens.errors import SparkError
from churnlens.experiments import assign_groups
from churnlens.history import HISTORY_COLUMNS
from churnlens.model_source import ScoringModels, load_models
from churnlens.ranking import rank_sql
from churnlens.scoring import EXTRA_COLUMNS, SCORE_COLUMNS, score
from churnlens.spark_output import score_to_file
from churnlens.spark_session import TimeZoneWarning
from tests.conftest import AS_OF, make_log

pytestmark = [
    pytest.mark.xdist_group("spark"),  # with --dist loadgroup: one JVM, on one worker
    pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
    pytest.mark.filterwarnings("ignore:Series.values returning an ndarray"),
]


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    # no skip: the Spark engine is a feature, and CI machines have Java 17
    assert shutil.which("java") or os.environ.get("JAVA_HOME"), "Spark needs Java 17+"
    patch = pytest.MonkeyPatch()
    patch.setenv("PYSPARK_PYTHON", sys.executable)  # executors import this churnlens
    session = (
        SparkSession.builder.master("local[1]")
        .appName("churnlens-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.ui.showConsoleProgress", "false")
        # small jobs: the JVM starts and warms up twice as fast without the C2 compiler
        .config("spark.driver.extraJavaOptions", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    patch.undo()


@pytest.fixture(scope="module")
def models(events_path: Path, trained_bundles: tuple[Path, Path]) -> ScoringModels:
    """The shared models trained on ``events_path``."""
    return load_models(trained_bundles[0])  # segments found beside it


def _features(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.set_index("customer_id").sort_index()


@pytest.mark.slow
def test_features_equal_the_single_machine_features(spark, sample_events) -> None:
    expected = build_features(sample_events, AS_OF)
    got = _features(cs.build_features(spark.createDataFrame(sample_events), AS_OF).toPandas())
    assert list(got.index) == list(expected.index)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)


@pytest.mark.slow
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
    expected = build_features(log, "2024-03-01")
    assert expected.loc["a", "rfm_frequency"] == 1  # 23:30 at -05:00 is 04:30 UTC next day
    text = spark.createDataFrame(log)  # timestamps as text: DuckDB parses them per bucket
    parsed = text.withColumn("timestamp", F.to_timestamp("timestamp"))  # Spark instants
    for df in (text, parsed):
        got = _features(cs.build_features(df, "2024-03-01").toPandas())
        pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_invalid_events_are_reported_once_for_the_whole_log(spark) -> None:
    log = make_log([(c, "2024-01-10", "web", "purchase", 20) for c in "abcdefgh"])
    log["timestamp"] = ["2024-01-10", "soon", "2024-01-11", "later", "never", *["2024-01-12"] * 3]
    log.loc[log["customer_id"].isin(["a", "f"]), "channel"] = None  # and a second problem
    with pytest.raises(InputError, match="2 problems") as caught:  # merged over the buckets
        cs.build_features(spark.createDataFrame(log), "2024-02-01")
    problems = [(p.column, p.rows, p.examples) for p in caught.value.problems]
    assert problems == [
        ("timestamp", 3, ("'later'", "'never'", "'soon'")),
        ("channel", 2, ("(empty)",)),
    ]
    with pytest.raises(InputError, match="required column is missing"):
        cs.build_features(spark.createDataFrame(log.drop(columns="channel")), "2024-02-01")


def normalise(frame: pd.DataFrame) -> pd.DataFrame:
    """Scores in a comparable form: by customer, dates and lists as text and tuples."""
    out = frame[[*SCORE_COLUMNS, *EXTRA_COLUMNS]].set_index("customer_id").sort_index()
    for c in ("as_of", "silent_on", "lost_on"):
        out[c] = out[c].astype(str)
    out["reasons"] = [tuple(r) for r in out["reasons"]]
    for c in out.columns[[pd.api.types.is_object_dtype(t) for t in out.dtypes]]:
        out[c] = out[c].astype(object).where(out[c].notna(), None)
    return out


@pytest.mark.slow
def test_scores_equal_the_single_machine_scores(spark, events_path, models, tmp_path) -> None:
    local = score(events_path, AS_OF, tmp_path / "s.parquet", models)
    expected = normalise(pd.read_parquet(local.path))
    events = spark.read.parquet(str(events_path))  # timestamps: TIMESTAMP_NTZ
    got = normalise(cs.score(events, AS_OF, models, buckets=3).toPandas())
    assert list(got.index) == list(expected.index)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)


@pytest.mark.slow
def test_budget_and_priority_are_ranked_as_rank_sql_ranks_them(spark) -> None:
    rng = np.random.default_rng(5)
    n = 60
    actions = ["nurture", "vip_care", "reactivation_discount", "no_action", "let_go"]
    decided = pd.DataFrame(
        {
            "customer_id": [f"c{i:03d}" for i in rng.permutation(n)],
            "as_of": date(2025, 2, 3),
            "churn_probability": rng.choice([0.2, 0.5, 0.9], n),
            "risk_band": "high",
            "lifecycle_stage": "active",
            "cycle_days": 30.0,
            "days_since_purchase": 3.0,
            "segment_id": 1,
            "segment_name": "active",
            "expected_value": 100.0,
            "value_if_retained": 120.0,
            "value_at_risk": rng.choice([10.0, 20.0, 30.0], n),  # many ties
            "winback_value": float("nan"),
            "clv": 300.0,
            "uplift": np.nan,
            "incremental_value": np.nan,
            "action": rng.choice(actions, n),
            "action_channel": "email",
            "group": "none",
            "reasons": [[f"reason {i}"] for i in range(n)],
            "model_version": "v1",
            "silent_on": date(2025, 3, 1),
            "lost_on": date(2025, 6, 1),
            "value_tier": "low",
            "rule": "some_rule",
        }
    )
    design = ExperimentSettings(control_share=0.3)
    decided["group"] = assign_groups(
        decided["customer_id"], decided["action"], Policy().contact_actions(), design, "2025-02-03"
    )
    con = duckdb.connect()
    con.register("_scores", pa.Table.from_pandas(decided))
    df = spark.createDataFrame(decided, schema=cs.SCORED_SCHEMA)
    for budget in (None, 0, 7, n):
        query = rank_sql("_scores", list(decided.columns), Policy(), budget)
        expected = normalise(con.sql(query).df())
        got = normalise(cs.rank(df, Policy(), budget, partitions=3).toPandas())
        pd.testing.assert_frame_equal(got, expected)
    assert (got["rule"] != "budget").all()  # a budget of n contacts nobody out
    # names with quotes are text in Spark SQL too (there '' would glue two strings)
    assert {"treatment", "control"} <= set(got["group"])
    quoted = decided.assign(action=decided["action"].replace("nurture", "o'brien"))
    actions = {**Policy().actions, "o'brien": ActionSpec(contact=True)}
    actions["it's nothing"] = ActionSpec(contact=False)  # past validation: defence in depth
    policy = Policy.model_construct(**{**dict(Policy()), "actions": actions,
                                       "fallback": "it's nothing"})  # fmt: skip
    con.register("_quoted", pa.Table.from_pandas(quoted))
    frame = spark.createDataFrame(quoted, schema=cs.SCORED_SCHEMA)
    query = rank_sql("_quoted", list(quoted.columns), policy, 7)
    expected = normalise(con.sql(query).df())
    got = normalise(cs.rank(frame, policy, 7, partitions=2).toPandas())
    pd.testing.assert_frame_equal(got, expected)
    assert "o'brien" in set(expected["action"]) and "it's nothing" in set(expected["action"])
    over = normalise(cs.rank(df, Policy(), 7, partitions=4).toPandas()).query("rule == 'budget'")
    assert len(over) > 0 and over["action_channel"].isna().all()
    assert all(r[-1] == "over the contact budget of 7" for r in over["reasons"])


@pytest.mark.slow
def test_the_distributed_ranking_equals_rank_sql_with_nulls_ties_and_many_partitions(
    spark,
) -> None:
    """Many partitions, null and tied ranking values, ranking by incremental value: every
    budget (none, zero, inside one partition, across partitions, beyond the treated)
    gives rank_sql's rows exactly."""
    rng = np.random.default_rng(11)
    n = 1500
    values = rng.choice([10.0, 20.0, 30.0, np.nan], n)
    decided = pd.DataFrame(
        {
            "customer_id": [f"k{i:05d}" for i in rng.permutation(n)],
            "as_of": date(2025, 2, 3), "churn_probability": rng.choice([0.2, 0.9, np.nan], n),
            "risk_band": "high", "lifecycle_stage": "active", "cycle_days": 30.0,
            "days_since_purchase": 3.0, "segment_id": 1, "segment_name": "active",
            "expected_value": 100.0, "value_if_retained": 120.0, "value_at_risk": values,
            "winback_value": np.nan, "clv": 300.0,
            "uplift": rng.choice([0.1, -0.1, np.nan], n),
            "incremental_value": rng.choice([1.0, 2.0, np.nan], n),
            "action": rng.choice(["nurture", "vip_care", "no_action", "let_go"], n),
            "action_channel": "email", "group": "none",
            "reasons": [["why"]] * n, "model_version": "v1",
            "silent_on": date(2025, 3, 1), "lost_on": date(2025, 6, 1),
            "value_tier": "low", "rule": "some_rule",
        }
    )  # fmt: skip
    policy = Policy().model_copy(update={"rank_by": "incremental_value"})
    design = ExperimentSettings(control_share=0.2)
    decided["group"] = assign_groups(
        decided["customer_id"], decided["action"], policy.contact_actions(), design, "2025-02-03"
    )
    con = duckdb.connect()
    con.register("_many", pa.Table.from_pandas(decided))
    df = spark.createDataFrame(decided, schema=cs.SCORED_SCHEMA)
    treated = int((decided["group"] == "treatment").sum())
    for budget in (None, 0, 1, 37, treated - 1, treated, n):
        query = rank_sql("_many", list(decided.columns), policy, budget)
        expected = normalise(con.sql(query).df())
        got = normalise(cs.rank(df, policy, budget, partitions=7).toPandas())
        pd.testing.assert_frame_equal(got, expected)
    spark.catalog.clearCache()


@pytest.mark.slow
def test_score_to_file_writes_what_single_machine_scoring_writes(
    spark, events_path, models, tmp_path
) -> None:
    local = score(events_path, AS_OF, tmp_path / "local" / "s.parquet", models, max_contacts=40)
    out = tmp_path / "spark" / "s.parquet"
    manifest = score_to_file(events_path, AS_OF, out, models, max_contacts=40, buckets=3)
    assert out.is_dir() and len(list(out.glob("part-*.parquet"))) > 1  # from the executors
    expected, got = pd.read_parquet(local.path), pd.read_parquet(out)
    assert list(got.columns) == [*SCORE_COLUMNS, *EXTRA_COLUMNS]  # and in the same order:
    # Spark does not compare with the last run yet (no history columns, no drift check)
    assert list(expected.columns) == [*SCORE_COLUMNS, *EXTRA_COLUMNS, *HISTORY_COLUMNS]
    expected = expected[list(got.columns)]
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)
    assert got["contact"].sum() == 40  # treated; their controls are cut at the same rank
    assert (got["group"] == "control").sum() > 0
    assert json.loads(out.with_name("s.parquet.manifest.json").read_text()) == manifest
    assert manifest["engine"] == "spark" and manifest["partitions"] == 3
    assert manifest["output_format"] == "parquet-dataset"
    assert manifest["output_files"] == {p.name: p.stat().st_size for p in out.glob("*.parquet")}
    differ = {"created", "seconds", "partitions", "engine", "spark_master", "value_at_risk"}
    differ |= {"output_format", "output_files"}
    differ |= {"winback_value"}  # sums of floats: equal to the last bits, order may differ
    differ |= {"output_sha256"}  # the bytes: floats equal to 1e-9, not bit for bit
    differ |= {"drift", "history"}  # the local engine's only, for now
    assert {k: v for k, v in manifest.items() if k not in differ} == {
        k: v for k, v in local.manifest.items() if k not in differ
    }  # the same fingerprint, counts, cuts, thresholds, stages and actions
    for key in ("value_at_risk", "winback_value"):
        assert np.isclose(manifest[key], local.manifest[key], rtol=1e-12)
    assert sorted(os.listdir(out.parent)) == ["s.parquet", "s.parquet.manifest.json"]  # no lock
    # a second run replaces the dataset and its manifest as one step
    again = score_to_file(events_path, AS_OF, out, models, max_contacts=10, buckets=2)
    assert again["max_contacts"] == 10 and pd.read_parquet(out)["contact"].sum() == 10
    assert again["output_files"] == {p.name: p.stat().st_size for p in out.glob("*.parquet")}
    assert sorted(os.listdir(out.parent)) == ["s.parquet", "s.parquet.manifest.json"]


@pytest.mark.slow
def test_a_spark_failure_is_one_error_and_leaves_no_lock(spark, models, tmp_path) -> None:
    broken = tmp_path / "events.parquet"
    broken.write_bytes(b"PAR1 not really a parquet file PAR1")
    out = tmp_path / "out" / "s.parquet"
    with pytest.raises(SparkError, match=r"^scoring failed on Spark: ") as caught:
        score_to_file(broken, AS_OF, out, models)
    assert "\n" not in str(caught.value) and "Traceback" not in str(caught.value)
    assert os.listdir(out.parent) == []  # no lock, no work folder, no partial dataset


def test_each_bucket_is_one_partition(spark) -> None:
    for n in (1, 2, 5, 16):
        keys = cs.partition_keys(spark, n)
        df = spark.createDataFrame([(k,) for k in keys], "k long").repartition(n, "k")
        parts = df.select(F.spark_partition_id().alias("p"), "k").collect()
        assert sorted((r["p"], r["k"]) for r in parts) == list(enumerate(keys))


@pytest.mark.slow
def test_timestamps_parsed_in_a_non_utc_session_are_warned_about(spark) -> None:
    log = make_log([("a", "2024-01-10", "web", "purchase", 20)])
    log["timestamp"] = log["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        parsed = spark.createDataFrame(log).withColumn("timestamp", F.to_timestamp("timestamp"))
        with pytest.warns(TimeZoneWarning, match="America/New_York, not UTC"):
            cs.build_features(parsed, "2024-03-01")
        text = spark.createDataFrame(log)  # text: parsed by DuckDB, no warning
        with warnings.catch_warnings():
            warnings.simplefilter("error", TimeZoneWarning)
            cs.build_features(text, "2024-03-01")
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")


def test_without_pyspark_the_error_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # import pyspark.sql fails
    spec = importlib.util.spec_from_file_location("_spark_without_pyspark", cs.__file__)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    with pytest.raises(ChurnlensError, match=r'pip install "churnlens\[spark\]"'):
        module.build_features(None, AS_OF)


@pytest.mark.slow
def test_scores_with_an_uplift_model_equal_the_single_machine_scores(
    spark, events_path, trained_bundles, tmp_path
) -> None:
    """An uplift bundle beside the churn model: uplift, incremental value, the negative
    uplift rule and the ranking by incremental value agree on both engines."""
    from churnlens.bundle import write_bundle
    from churnlens.features import build_features
    from churnlens.models.uplift import UpliftModel

    folder = tmp_path / "models"
    shutil.copytree(trained_bundles[0].parent, folder)
    X = build_features(events_path, AS_OF, models_settings := load_models(
        folder / trained_bundles[0].name).settings)  # fmt: skip
    rng = np.random.default_rng(3)
    treated = rng.random(len(X)) < 0.5
    # the effect depends on recency: positive for recent buyers, negative for the others
    recent = (X["rfm_recency_days"].fillna(999) < 60).to_numpy()
    outcome = rng.random(len(X)) < np.where(treated, np.where(recent, 0.7, 0.2), 0.4)
    model = UpliftModel(min_treated=20, min_control=20, n_estimators=20, min_child_samples=10)
    model.fit(X, np.array(["nurture"] * len(X)), treated, outcome.astype(int), 0.5)
    manifest = {"kind": "uplift", "as_of": AS_OF, "created": "2099-01-01T00:00:00+00:00",
                "feature_names": list(X.columns), "versions": {},
                "settings": models_settings.model_dump(mode="json")}  # fmt: skip
    write_bundle(folder / "uplift-20990101", model, manifest)
    models = load_models(folder / trained_bundles[0].name)
    assert models.uplift is not None
    local = score(events_path, AS_OF, tmp_path / "s.parquet", models, max_contacts=30)
    expected = normalise(pd.read_parquet(local.path))
    assert local.manifest["rank_by"] == "incremental_value"
    assert expected["uplift"].notna().any()
    events = spark.read.parquet(str(events_path))
    got = normalise(cs.score(events, AS_OF, models, max_contacts=30, buckets=3).toPandas())
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=0, atol=1e-9)
