"""MLflow end to end through the CLI: runs, metrics, artifacts, registry and champion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient
from typer.testing import CliRunner

from churnlens.cli import app

runner = CliRunner()
CONFIG = (
    "training: {horizon_days: 60, snapshot_step_days: 60, min_history_days: 60}\n"
    "model: {n_estimators: 80, min_child_samples: 40}\n"
)
WORSE = CONFIG.replace("n_estimators: 80", "n_estimators: 1, learning_rate: 0.001")


@pytest.fixture
def workspace(tmp_path: Path, sample_events: pd.DataFrame, _private_mlflow_store: Path):
    events = tmp_path / "events.parquet"
    sample_events.to_parquet(events)
    (tmp_path / "config.yaml").write_text(CONFIG)
    (tmp_path / "worse.yaml").write_text(WORSE)
    return tmp_path


def train(ws: Path, config: str = "config.yaml", *extra: str) -> str:
    result = runner.invoke(
        app,
        [
            "train",
            str(ws / "events.parquet"),
            "--as-of",
            "2024-11-30",
            "--config",
            str(ws / config),
            "--models-dir",
            str(ws / "models"),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return result.output


CHURN_RUNS = "tags.model_kind = 'churn'"  # train also records the value model's own run


def client() -> MlflowClient:
    import mlflow

    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    return MlflowClient()


def test_a_training_run_is_fully_recorded(workspace: Path) -> None:
    out = train(workspace)
    flat = " ".join(out.split())
    assert "registered churnlens-churn version 1 (champion: first registered version)" in flat
    assert "registered churnlens-value version 1 (champion: first registered version)" in flat
    c = client()
    experiment = c.get_experiment_by_name("churnlens-training").experiment_id
    (run,) = c.search_runs([experiment], filter_string=CHURN_RUNS)
    (value,) = c.search_runs([experiment], filter_string="tags.model_kind = 'value'")
    assert value.data.params["method"] in ("btyd", "blend")
    assert str(c.get_model_version_by_alias("churnlens-value", "champion").version) == "1"
    params, tags, metrics = run.data.params, run.data.tags, run.data.metrics
    assert params["as_of"] == "2024-11-30"
    assert params["horizon_days"] == "60"
    assert params["training.snapshot_step_days"] == "60"
    assert not [k for k in params if k.startswith(("engine.", "tracking."))]  # no noise
    assert len(params["snapshot_dates"].split(",")) >= 3
    assert int(params["training_rows"]) > int(params["validation_rows"]) > 0
    assert len(tags["data_fingerprint"]) == 16
    assert tags["churnlens_version"]
    for score in ("model", "model_raw", "logistic_rfm", "recency"):
        for metric in ("roc_auc", "pr_auc", "brier", "log_loss", "capture_at_rate"):
            assert f"val_{score}_{metric}" in metrics
    for baseline in ("logistic_rfm", "recency"):
        assert metrics[f"gain_roc_auc_over_{baseline}"] == pytest.approx(
            metrics["val_model_roc_auc"] - metrics[f"val_{baseline}_roc_auc"]
        )
    # each score as a child run with the same metric keys, for MLflow's compare view
    children = c.search_runs(
        [run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    by_score = {child.data.tags["score"]: child.data.metrics for child in children}
    assert set(by_score) == {"model", "model_raw", "logistic_rfm", "recency"}
    for score, child_metrics in by_score.items():
        assert set(child_metrics) == {"roc_auc", "pr_auc", "brier", "log_loss"}
        assert child_metrics["roc_auc"] == pytest.approx(metrics[f"val_{score}_roc_auc"])
    assert run.data.params["validation_date"] == run.data.params["snapshot_dates"].split(",")[-1]
    assert 0 < float(run.data.params["validation_churn_rate"]) < 1
    assert "comparison.json" in {a.path for a in c.list_artifacts(run.info.run_id)}
    # the registered version says what it is and why it is (or is not) the champion
    registered = c.get_model_version("churnlens-churn", "1")
    assert registered.tags["as_of"] == "2024-11-30"
    assert float(registered.tags["val_roc_auc"]) == pytest.approx(
        metrics["val_model_roc_auc"], abs=1e-4
    )
    assert registered.tags["champion_decision"] == "first registered version"
    assert registered.tags["data_fingerprint"] == tags["data_fingerprint"]
    assert "Out-of-time validation" in registered.description
    kind = c.get_experiment(experiment).tags.get("mlflow.experimentKind")
    assert kind == "custom_model_development"
    artifacts = {a.path for a in c.list_artifacts(run.info.run_id, "plots")}
    assert {
        f"plots/{n}.png"
        for n in (
            "roc",
            "precision_recall",
            "calibration",
            "cumulative_gains",
            "feature_importance",
            "precision_recall_stayers",
        )
    } <= artifacts
    assert [a.path for a in c.list_artifacts(run.info.run_id, "config")] == ["config/config.yaml"]
    # the datasets it used, by digest: the training snapshots and the validation snapshot
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"training-snapshots", "validation-snapshot"}
    for name, context, rows in [
        ("training-snapshots", "training", params["training_rows"]),
        ("validation-snapshot", "validation", params["validation_rows"]),
    ]:
        used = inputs[name]
        used_tags = {t.key: t.value for t in used.tags}
        assert used_tags["mlflow.data.context"] == context
        assert len(used.dataset.digest) == 16
        assert json.loads(used.dataset.source)["uri"].endswith("events.parquet")
        assert "churned" in used.dataset.schema and "rfm_recency_days" in used.dataset.schema
        assert used_tags["rows"] == rows
    assert (
        inputs["training-snapshots"].dataset.digest != inputs["validation-snapshot"].dataset.digest
    )
    # the run's duration covers the training, not only the logging after it
    manifest = json.loads((Path(tags["bundle"]) / "manifest.json").read_text())
    created = datetime.fromisoformat(manifest["created"]).timestamp() * 1000
    assert run.info.start_time < created < run.info.end_time
    # feature importance of the whole blend: the logistic part's RFM inputs count too
    path = c.download_artifacts(run.info.run_id, "feature_importance.json", str(workspace))
    importance = json.loads(Path(path).read_text())
    assert importance["columns"] == ["feature", "mean_abs_contribution"]
    by_feature = dict(importance["data"])
    assert by_feature["rfm_recency_days"] > 0 and by_feature["rfm_frequency"] > 0
    assert list(by_feature.values()) == sorted(by_feature.values(), reverse=True)
    version = c.get_model_version_by_alias("churnlens-churn", "champion")
    assert str(version.version) == "1"
    assert version.run_id == run.info.run_id
    # the registered model is churnlens's pyfunc around the bundle (see tests/test_pyfunc.py)
    import mlflow

    model = mlflow.pyfunc.load_model("models:/churnlens-churn@champion")
    assert model.metadata.get_output_schema().input_names()[:2] == [
        "customer_id",
        "churn_probability",
    ]


@pytest.mark.slow
def test_a_worse_model_does_not_take_the_champion_alias(workspace: Path) -> None:
    train(workspace)
    out = " ".join(train(workspace, "worse.yaml").split())
    assert "version 2" in out
    assert "does not beat version 1" in out
    c = client()
    assert c.get_model_version_by_alias("churnlens-churn", "champion").version == 1
    result = runner.invoke(app, ["models", "promote", "churnlens-churn", "2"])
    assert result.exit_code == 0, result.output
    assert str(c.get_model_version_by_alias("churnlens-churn", "champion").version) == "2"
    listing = runner.invoke(app, ["models", "list"])
    assert "champion" in listing.output
    assert "val AUC" in listing.output and "2024-11-30" in listing.output
    missing = runner.invoke(app, ["models", "promote", "churnlens-churn", "9"])
    assert missing.exit_code == 1
    assert "no version 9" in missing.output


@pytest.mark.slow
def test_a_registry_read_error_never_moves_the_champion_and_says_why(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    train(workspace, "worse.yaml")  # version 1, champion; a better model comes next

    def broken(self: object, name: str, alias: str) -> None:
        raise RuntimeError("disk I/O error")  # the store fails, not "no champion"

    with monkeypatch.context() as patched:
        patched.setattr(MlflowClient, "get_model_version_by_alias", broken)
        result = runner.invoke(app, train_args(workspace, "models"))
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "cannot read the champion of 'churnlens-churn' (disk I/O error)" in text
    assert "the champion alias was not moved" in text
    assert str(client().get_model_version_by_alias("churnlens-churn", "champion").version) == "1"


@pytest.mark.slow
def test_a_better_model_takes_the_champion_alias(workspace: Path) -> None:
    """Compared on the same out-of-time validation snapshot, as recorded for both."""
    train(workspace, "worse.yaml")
    out = " ".join(train(workspace).split())
    assert "beats version 1" in out
    c = client()
    assert str(c.get_model_version_by_alias("churnlens-churn", "champion").version) == "2"
    runs = c.search_runs(
        [c.get_experiment_by_name("churnlens-training").experiment_id],
        filter_string=CHURN_RUNS,
        order_by=["attributes.start_time ASC"],
    )
    assert (
        runs[1]
        .data.tags["champion_decision"]
        .startswith(
            f"{runs[1].data.metrics['val_model_roc_auc']:.4f} beats version 1 "
            f"({runs[0].data.metrics['val_model_roc_auc']:.4f})"
        )
    )


def train_args(workspace: Path, models: str) -> list[str]:
    """``churnlens train`` on the workspace's log and config, bundles to ``models``."""
    return [
        "train",
        str(workspace / "events.parquet"),
        "--as-of",
        "2024-11-30",
        "--config",
        str(workspace / "config.yaml"),
        "--models-dir",
        str(workspace / models),
    ]


@pytest.mark.slow
def test_concurrent_trainings_are_both_recorded(workspace: Path) -> None:
    exe = str(Path(sys.executable).parent / "churnlens")
    args = train_args(workspace, "m")
    procs = [
        subprocess.Popen(
            [exe, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=workspace
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    c = client()
    runs = c.search_runs([c.get_experiment_by_name("churnlens-training").experiment_id], CHURN_RUNS)
    assert len(runs) == 2
    assert all(r.info.status == "FINISHED" for r in runs)
    versions = c.search_model_versions("name='churnlens-churn'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert len(list((workspace / "m").glob("churn-*"))) == 2  # and a value bundle each
    assert len(list((workspace / "m").glob("value-*"))) == 2


def test_unreachable_store_keeps_the_bundle_and_exits_1(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = workspace / "not-a-dir"
    blocker.write_text("a file where the store's folder should be")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{blocker}/mlflow.db")
    result = runner.invoke(
        app,
        [
            "train",
            str(workspace / "events.parquet"),
            "--as-of",
            "2024-11-30",
            "--config",
            str(workspace / "config.yaml"),
            "--models-dir",
            str(workspace / "models"),
        ],
    )
    assert result.exit_code == 1
    assert "MLflow tracking" in result.output
    assert "Traceback" not in result.output
    assert len(list((workspace / "models").glob("churn-*"))) == 1


def test_backtest_adds_realised_metrics_to_the_run(workspace: Path) -> None:
    result = runner.invoke(
        app,
        [
            "backtest",
            str(workspace / "events.parquet"),
            "--as-of",
            "2024-11-30",
            "--config",
            str(workspace / "config.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    # a backtest registers the models it trains, and says so as train does
    flat = " ".join(result.output.split())
    assert "registered churnlens-churn version 1 (champion: first registered version)" in flat
    assert "registered churnlens-value version 1" in flat
    c = client()
    (run,) = c.search_runs(
        [c.get_experiment_by_name("churnlens-training").experiment_id], CHURN_RUNS
    )
    assert run.data.tags["kind"] == "backtest"
    assert "backtest_model_roc_auc" in run.data.metrics
    assert "backtest_recency_brier" in run.data.metrics
    assert "backtest_plots/roc.png" in {
        a.path for a in c.list_artifacts(run.info.run_id, "backtest_plots")
    }


def test_segments_are_profiled_registered_and_keep_their_ids(workspace: Path) -> None:
    args = [
        "segment",
        str(workspace / "events.parquet"),
        "--as-of",
        "2024-11-30",
        "--config",
        str(workspace / "config.yaml"),
        "--models-dir",
        str(workspace / "m"),
    ]
    first = runner.invoke(app, [*args, "--k", "3"])
    assert first.exit_code == 0, first.output
    assert "3 segments (silhouette k=3:" in first.output
    second = runner.invoke(app, [*args, "--k", "4"])
    assert second.exit_code == 0, second.output
    c = client()
    runs = c.search_runs(
        [c.get_experiment_by_name("churnlens-training").experiment_id],
        filter_string="tags.model_kind = 'segments'",
        order_by=["attributes.start_time ASC"],
    )
    assert [r.data.params["ids_from_previous"] for r in runs] == ["False", "True"]
    assert "silhouette_k3" in runs[0].data.metrics
    paths = {a.path for a in c.list_artifacts(runs[0].info.run_id, "segments")}
    assert {"segments/profile.json", "segments/profile.png"} <= paths
    import json

    local = c.download_artifacts(runs[0].info.run_id, "segments/profile.json", str(workspace))
    table = json.loads(Path(local).read_text())
    assert {"segment", "name", "size", "share", "churn_rate"} <= set(table["columns"])
    assert len(table["data"]) == 3
    assert str(c.get_model_version_by_alias("churnlens-segments", "champion").version) == "1"
    bad = runner.invoke(app, [*args, "--k", "one"])
    assert bad.exit_code == 2


@pytest.mark.slow
def test_locked_store_keeps_the_bundle_and_exits_1(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sqlite3

    db = workspace / "locked" / "mlflow.db"
    db.parent.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("CREATE TABLE held (x INTEGER)")
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the store
    monkeypatch.setattr("churnlens.tracking.retry.__defaults__", (3, 0.05))
    try:
        result = runner.invoke(app, train_args(workspace, "m2"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 1, result.output
    assert "MLflow tracking" in " ".join(result.output.split())
    assert "Traceback" not in result.output
    bundles = list((workspace / "m2").glob("churn-*"))
    assert len(bundles) == 1
    from churnlens.bundle import load_bundle

    load_bundle(bundles[0])  # whole and verified
