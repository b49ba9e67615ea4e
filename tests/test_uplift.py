"""Uplift in the product: the policy's uplift conditions, the ranking by incremental value,
the training frame's point in time, and train-uplift -> score end to end."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churnlens.actions import Policy, decide
from churnlens.cli import app
from churnlens.config import Settings
from churnlens.errors import ConfigError
from churnlens.events import load_events
from churnlens.features import build_features
from churnlens.ranking import rank_sql, with_ranking
from churnlens.uplifting import campaign_frame, control_probability
from tests.conftest import AS_OF, make_log

runner = CliRunner()
CUTS = (50.0, 100.0)


def _scored(n: int, **columns: object) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "lifecycle_stage": "sleeping",
            "churn_probability": 0.7,
            "value_if_retained": 10.0,  # the low tier
            "segment_id": 0,
            "segment_name": "x",
            "over_contacted": False,
            "preferred_channel": "email",
            "fatigued_channels": "",
            "reasons": [[] for _ in range(n)],
        },
        index=pd.Index([f"c{i}" for i in range(n)], name="customer_id"),
    )
    for key, value in columns.items():
        frame[key] = value
    return frame


def test_negative_uplift_is_not_contacted_at_the_floor_boundary() -> None:
    # sleeping -> reactivation_discount; the floor is -0.02 in the shipped policy
    uplift = [-0.05, -0.0201, -0.02, 0.0, 0.1]
    out = decide(_scored(5, uplift_reactivation_discount=uplift), Policy(), CUTS)
    assert (
        list(out["action"]) == ["do_not_disturb", "do_not_disturb"] + ["reactivation_discount"] * 3
    )
    assert list(out["rule"][:2]) == ["negative_uplift"] * 2
    assert out["action_channel"][:2].isna().all()
    assert "lower their chance of buying (-5.0 points)" in out["reasons"].iloc[0][-1]
    assert out["uplift"].tolist() == uplift
    assert out["incremental_value"].tolist() == pytest.approx([10 * u for u in uplift])


def test_without_an_uplift_model_nothing_changes() -> None:
    out = decide(_scored(3), Policy(), CUTS)
    assert (out["action"] == "reactivation_discount").all()
    assert out["uplift"].isna().all() and out["incremental_value"].isna().all()


def test_uplift_min_condition_falls_through_to_the_next_rule() -> None:
    rules = [
        {"name": "discount_if_it_works", "when": {"stage": ["sleeping"], "uplift_min": 0.05},
         "action": "reactivation_discount"},
        {"name": "otherwise_nurture", "when": {"stage": ["sleeping"]}, "action": "nurture"},
    ]  # fmt: skip
    policy = Policy(rules=rules, uplift_floor=None)
    frame = _scored(4, uplift_reactivation_discount=[0.049, 0.05, np.nan, 0.2])
    out = decide(frame, policy, CUTS)
    # below 0.05 falls through; at 0.05 matches; no prediction: the condition does not apply
    assert list(out["action"]) == ["nurture", "reactivation_discount", "reactivation_discount",
                                   "reactivation_discount"]  # fmt: skip


def _decided() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "action": ["nurture"] * 5,
            "action_channel": ["email"] * 5,
            "rule": "r",
            "reasons": [["x"]] * 5,
            "group": ["treatment"] * 5,
            # value at risk ranks a first; incremental value ranks d, then b
            "value_at_risk": [90.0, 50.0, 40.0, 30.0, 10.0],
            "incremental_value": [-2.0, 8.0, 1.0, 12.0, np.nan],
            "churn_probability": [0.5] * 5,
        }
    )


def _rank(policy: Policy, budget: int | None) -> pd.DataFrame:
    con = duckdb.connect()
    frame = _decided()
    con.register("d", frame)
    return (
        con.execute(rank_sql("d", list(frame.columns), policy, budget))
        .df()
        .set_index("customer_id")
    )


def test_budget_and_priority_follow_incremental_value() -> None:
    by_value = _rank(with_ranking(Policy(), uplift=True), 2)
    assert by_value["contact"].to_dict() == {"a": False, "b": True, "c": False, "d": True,
                                             "e": False}  # fmt: skip
    assert by_value.loc[["d", "b"], "priority"].tolist() == [1, 2]  # nurture
    assert by_value.loc[["c", "a", "e"], "priority"].tolist() == [1, 2, 3]  # over the budget
    assert by_value.loc["e", "rule"] == "budget"
    at_risk = _rank(with_ranking(Policy(), uplift=True, rank_by="value_at_risk"), 2)
    assert set(at_risk.index[at_risk["contact"]]) == {"a", "b"}
    assert with_ranking(Policy(), uplift=False).rank_by == "value_at_risk"
    with pytest.raises(ConfigError, match="needs an uplift model"):
        with_ranking(Policy(), uplift=False, rank_by="incremental_value")


def test_control_probability_combines_share_and_global_holdout() -> None:
    design = {"control_share": 0.1, "control_shares": {"nurture": 0.3},
              "global_control_share": 0.5}  # fmt: skip
    assert control_probability("nurture", design) == pytest.approx(1 - 0.7 * 0.5)
    assert control_probability("vip_care", design) == pytest.approx(1 - 0.9 * 0.5)


def test_training_frame_has_features_as_of_the_campaign_and_outcomes_after(
    tmp_path: Path,
) -> None:
    log = make_log(
        [
            ("a", "2024-01-05 10:00", "web", "purchase", 10),
            ("a", "2024-02-01 10:00", "web", "purchase", 10),  # the campaign day: a feature
            ("a", "2024-02-02 10:00", "web", "purchase", 500),  # after: the outcome only
            ("b", "2024-01-10 10:00", "web", "purchase", 20),
            ("b", "2024-03-30 10:00", "web", "purchase", 20),  # after the horizon
        ]
    )
    scores = pd.DataFrame(
        {
            "customer_id": ["a", "b"],
            "as_of": date(2024, 2, 1),
            "action": "nurture",
            "lifecycle_stage": "active",
            "group": ["treatment", "control"],
            "contact": [True, False],
            "value_at_risk": [5.0, 4.0],
            "churn_probability": [0.25, 0.5],
            "value_if_retained": [20.0, 8.0],
        }
    )
    path = tmp_path / "scores.parquet"
    scores.to_parquet(path)
    table = load_events(log)
    X, rows, info = campaign_frame(path, table, Settings(), horizon_days=30)
    expected = build_features(table, date(2024, 2, 1), Settings())
    expected.index = expected.index.astype(str)
    # the features as of the day, and the models' outputs the scores recorded that day
    expected = expected.loc[["a", "b"]].reset_index(drop=True)
    expected = expected.assign(churn_probability=[0.25, 0.5], value_if_retained=[20.0, 8.0])
    pd.testing.assert_frame_equal(X, expected)
    assert X.loc[0, "rfm_monetary_total"] == 20.0  # the 500 after the day is not a feature
    assert rows["outcome"].tolist() == [1, 0] and rows["treated"].tolist() == [True, False]
    assert rows["propensity"].tolist() == [0.9, 0.9]  # the default design: 10% controls
    assert info["window_end"] == "2024-03-02"


def test_cli_train_uplift_then_score_by_incremental_value(
    events_path: Path, trained_bundles, tmp_path: Path
) -> None:
    """Score with half controls, simulate the campaign, learn uplift, score again."""
    import mlflow

    from churnlens.sample.campaign import simulate_campaign

    config = tmp_path / "config.yaml"
    config.write_text(
        "training: {horizon_days: 60, snapshot_step_days: 60, min_history_days: 60}\n"
        "model: {n_estimators: 80, min_child_samples: 40}\n"
        "uplift: {min_treated: 20, min_control: 20, n_estimators: 30, min_child_samples: 10}\n"
    )
    models = tmp_path / "models"
    models.mkdir()
    for bundle in trained_bundles[0].parent.iterdir():
        if bundle.is_dir():
            (models / bundle.name).symlink_to(bundle)
    churn = models / trained_bundles[0].name
    scores = tmp_path / "scores.parquet"
    args = ["score", str(events_path), "--as-of", AS_OF, "--out", str(scores), "--model",
            str(churn), "--control-share", "0.5", "--no-track", "-c", str(config)]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    scored = pd.read_parquet(scores)
    campaign = simulate_campaign(400, 400, 11, date(2024, 1, 1), scored, 60, replicates=2)
    full = tmp_path / "full.parquet"
    pd.concat([pd.read_parquet(events_path), campaign.events]).to_parquet(full)
    args = ["train-uplift", str(scores), "--events", str(full), "--models-dir", str(models),
            "--config", str(config)]  # fmt: skip
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "out-of-fold Qini" in " ".join(done.output.split())
    assert "buyers per 1,000 contacts" in done.output and "auto ranks by" in done.output
    bundle = sorted(models.glob("uplift-*"))[-1]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["campaigns"][0]["as_of"] == AS_OF and manifest["model"]["actions"]
    version = mlflow.MlflowClient().get_registered_model("churnlens-uplift")
    assert version.name == "churnlens-uplift"
    runs = mlflow.search_runs(search_all_experiments=True, filter_string="tags.kind = 'uplift'")
    for action in manifest["model"]["actions"]:  # the calibration of every learned action
        fitted = manifest["model"]["evaluation"][action]
        assert runs.iloc[0][f"metrics.{action}.ate"] == pytest.approx(fitted["ate"])
        assert 0 <= runs.iloc[0][f"metrics.{action}.slope"] <= 1
        assert 0 <= runs.iloc[0][f"metrics.{action}.shape_weight"] <= 1
    again = tmp_path / "again.parquet"
    args = ["score", str(full), "--as-of", "2025-04-04", "--out", str(again), "--model",
            str(churn), "--max-contacts", "30", "--no-track", "--config", str(config)]  # fmt: skip
    # the uplift model reads value_if_retained: without the value model it would read 0s
    refused = runner.invoke(app, [*args, "--value", "none"])
    assert refused.exit_code != 0 and not again.exists()
    assert "takes value_if_retained from the value model" in " ".join(refused.output.split())
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    second = pd.read_parquet(again)
    written = json.loads(again.with_name("again.parquet.manifest.json").read_text())
    # auto ranks by incremental value only where it beat value at risk on the campaign
    check = manifest["model"]["ranking_check"]
    assert check["customers"] >= 1 and "difference_se" in check
    auto = "incremental_value" if check["ranks_by_increment"] else "value_at_risk"
    assert written["rank_by"] == auto and written["uplift_version"]
    modelled = second["uplift"].notna()
    assert modelled.any()
    assert np.allclose(
        second.loc[modelled, "incremental_value"],
        second.loc[modelled, "uplift"] * second.loc[modelled, "value_if_retained"],
    )
    assert second["contact"].sum() <= 30
    negative = second["rule"] == "negative_uplift"
    assert (second.loc[negative, "uplift"] < -0.02).all()
    assert not second.loc[negative, "contact"].any()
