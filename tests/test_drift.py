"""Drift against training: PSI and KS by hand, the reference a bundle keeps, a stable
business three months on raises no alert, doubled marketing touches do, and
``--fail-on-drift`` writes nothing."""

from __future__ import annotations

import math
import shutil
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churnlens.bundle import load_bundle
from churnlens.cli import app
from churnlens.config import DriftSettings
from churnlens.drift import (
    DriftCounter,
    bin_counts,
    drift_metrics,
    drift_report,
    ks,
    make_reference,
    model_reference,
    psi,
)
from churnlens.errors import DriftError
from churnlens.features.aggregation import build_features
from churnlens.model_source import load_models
from churnlens.sample import generate_events
from churnlens.scoring import score
from tests.conftest import AS_OF

FATIGUE = ("fatigue_touches_30d", "fatigue_touches_90d")


def test_psi_by_hand_on_three_bins() -> None:
    # (0.4 - 0.5) ln(0.4 / 0.5) + (0.4 - 0.3) ln(0.4 / 0.3) + (0.2 - 0.2) ln 1
    expected = -0.1 * math.log(0.8) + 0.1 * math.log(4 / 3)
    assert psi(np.array([0.5, 0.3, 0.2]), np.array([40, 40, 20])) == pytest.approx(expected)
    assert expected == pytest.approx(0.051083, abs=1e-6)
    assert psi(np.array([0.5, 0.3, 0.2]), np.array([5, 3, 2])) == pytest.approx(0.0)
    # an empty bin counts as a share of 1e-4: (1e-4 - 0.5) ln(1e-4 / 0.5) + (1 - 0.5) ln 2
    empty = (1e-4 - 0.5) * math.log(1e-4 / 0.5) + 0.5 * math.log(2)
    assert psi(np.array([0.5, 0.5]), np.array([0, 10])) == pytest.approx(empty)


def test_bins_and_ks_by_hand() -> None:
    edges = np.array([1.0, 3.0])
    # bins: below 1, [1, 3), 3 and above, missing
    counts = bin_counts(np.array([0.0, 1.0, 2.0, 3.0, 9.0, np.nan]), edges)
    assert counts.tolist() == [1, 2, 2, 1]
    # cumulative shares 0.5, 1.0 against 0.25, 1.0: the largest gap is 0.25
    assert ks(np.array([0.5, 0.5]), np.array([1, 3])) == pytest.approx(0.25)


def test_values_above_a_constant_or_a_top_point_mass_are_drift() -> None:
    # at training: c constant at 0, b a 0/1 flag (15% ones); tonight half the c are 5 and
    # 30% of the b are a value (7) the training never saw
    n = 1000
    features = pd.DataFrame({"c": np.zeros(n), "b": np.r_[np.zeros(850), np.ones(150)]})
    flat, stages = np.full(n, 0.3), pd.Series(["active"] * n)
    counter = DriftCounter(make_reference(features, flat, stages, "2025-01-01"))
    later = {
        "c": np.r_[np.zeros(500), np.full(500, 5.0)],
        "b": np.r_[np.zeros(700), np.full(300, 7.0)],
    }
    counter.add(pd.DataFrame(later), flat, stages)
    by_name = {f["name"]: f for f in drift_report(counter, DriftSettings())["features"]}
    # c: shares (1, 0) against (0.5, 0.5) on {0, above 0}, the empty bin floored at 1e-4
    expected = (0.5 - 1) * math.log(0.5) + (0.5 - 1e-4) * math.log(0.5 / 1e-4)
    assert by_name["c"]["psi"] == pytest.approx(expected, rel=1e-6)
    assert by_name["c"]["level"] == "alert"
    # b: (0.85, 0.15, 0) against (0.7, 0, 0.3): the 7s are not counted as 1s
    expected = (0.7 - 0.85) * math.log(0.7 / 0.85) + (1e-4 - 0.15) * math.log(1e-4 / 0.15)
    expected += (0.3 - 1e-4) * math.log(0.3 / 1e-4)
    assert by_name["b"]["psi"] == pytest.approx(expected, rel=1e-6)
    # a value on the training maximum still falls with it: nothing drifts
    same = DriftCounter(make_reference(features, flat, stages, "2025-01-01"))
    same.add(features, flat, stages)
    assert max(f["psi"] for f in drift_report(same, DriftSettings())["features"]) == 0.0


def test_report_levels_and_exclusions_by_hand() -> None:
    features = pd.DataFrame({"a": [0.0, 1.0] * 50, "freq_tenure_days": np.arange(100.0)})
    scores = np.linspace(0, 1, 100, endpoint=False)
    stages = pd.Series(["active"] * 50 + ["lost"] * 50)
    ref = make_reference(features, scores, stages, "2025-01-01")
    counter = DriftCounter(ref)
    later = pd.DataFrame({"a": [1.0] * 100, "freq_tenure_days": np.arange(100.0) + 500})
    counter.add(later, scores, stages)
    report = drift_report(counter, DriftSettings())
    by_name = {f["name"]: f for f in report["features"]}
    # a: 0/1 half and half, then all 1: PSI (1e-4 - 0.5) ln(2e-4) + 0.5 ln 2 ~ 4.6: alert
    assert by_name["a"]["psi"] == pytest.approx(
        (1e-4 - 0.5) * math.log(2e-4) + 0.5 * math.log(2), rel=1e-4
    )
    assert by_name["a"]["level"] == "alert"
    # tenure grows with time: far above the alert, but excluded by default
    assert by_name["freq_tenure_days"]["psi"] > 1 and by_name["freq_tenure_days"]["excluded"]
    assert by_name["freq_tenure_days"]["level"] == "ok"
    assert report["level"] == "alert" and report["raised_by"] == ["feature a"]
    assert report["score"] == {"psi": 0.0, "ks": 0.0}
    metrics = drift_metrics(report)
    assert metrics["drift_level"] == 2 and metrics["drift_psi_a"] == by_name["a"]["psi"]


def test_the_bundle_keeps_the_training_reference(churn_bundle: Path) -> None:
    model, _ = load_bundle(churn_bundle, "churn")
    reference = model_reference(model)
    assert reference is not None and reference["as_of"] == AS_OF
    assert set(reference["features"]) == set(model.feature_names_in_)
    for kept in (*reference["features"].values(), reference["score"]):
        assert kept["shares"].sum() == pytest.approx(1.0)
    assert sum(reference["stages"].values()) == pytest.approx(1.0)


def _features(events: pd.DataFrame, day: date) -> pd.DataFrame:
    return build_features(events, day)


@pytest.fixture(scope="module")
def stable_business() -> tuple[pd.DataFrame, date]:
    return generate_events(customers=1500, days=600, seed=5, start=date(2024, 1, 1)), date(
        2025, 2, 1
    )


def _compare(reference_frame: pd.DataFrame, later: pd.DataFrame) -> dict:
    flat = np.full(len(reference_frame), 0.3)
    ref = make_reference(reference_frame, flat, pd.Series(["active"] * len(flat)), "x")
    counter = DriftCounter(ref)
    counter.add(later, np.full(len(later), 0.3), pd.Series(["active"] * len(later)))
    return drift_report(counter, DriftSettings())


def test_a_stable_business_three_months_after_training_raises_no_alert(stable_business) -> None:
    events, day = stable_business
    report = _compare(_features(events, day), _features(events, day + timedelta(days=91)))
    assert report["level"] != "alert", report["raised_by"]
    by_name = {f["name"]: f for f in report["features"]}
    # the tenure features would have alerted: they grow with time by construction
    assert max(by_name[n]["psi"] for n in ("freq_tenure_days", "rfm_tenure_days")) >= 0.1
    assert all(by_name[n]["excluded"] for n in ("freq_tenure_days", "rfm_tenure_days"))


@pytest.mark.parametrize("seed", [3, 6])
def test_a_shift_of_the_median_cycle_is_no_alert(seed: int) -> None:
    """A third of the customers (one purchase each) sit on the population's median cycle;
    on these seeds the median moved by about half a day in 91 days and carried them across
    a decile cut of cycle_days (PSI 1.4 and 1.2, an alert on a stable business)."""
    events = generate_events(customers=1500, days=600, seed=seed, start=date(2024, 1, 1))
    day = date(2025, 2, 1)
    report = _compare(_features(events, day), _features(events, day + timedelta(days=91)))
    assert report["level"] != "alert", report["raised_by"]
    cycle = {f["name"]: f for f in report["features"]}["cycle_days"]
    assert cycle["psi"] > 1 and cycle["excluded"]  # still reported


def _doubled_marketing(events: pd.DataFrame) -> pd.DataFrame:
    """Every marketing touch sent twice, seven minutes apart (not an exact duplicate)."""
    touches = events[events["event_type"] == "marketing"].copy()
    touches["timestamp"] = touches["timestamp"] + pd.Timedelta(minutes=7)
    return pd.concat([events, touches]).sort_values("timestamp").reset_index(drop=True)


def test_doubled_marketing_touches_flag_the_fatigue_features(stable_business) -> None:
    events, day = stable_business
    later = day + timedelta(days=91)
    report = _compare(_features(events, day), _features(_doubled_marketing(events), later))
    assert report["level"] == "alert"
    alerting = {f["name"] for f in report["features"] if f["level"] == "alert"}
    assert set(FATIGUE) <= alerting
    assert all(n.startswith("fatigue_") for n in alerting), alerting


def test_scoring_the_training_log_raises_no_alert(churn_bundle, sample_log_path, tmp_path):
    result = score(sample_log_path, AS_OF, tmp_path / "s.parquet", load_models(churn_bundle, None))
    drift = result.manifest["drift"]
    assert drift["checked"] and drift["level"] == "ok"
    assert drift["score"]["psi"] == pytest.approx(0.0, abs=1e-9)  # the very same population


def test_fail_on_drift_writes_nothing_and_exits_3(
    churn_bundle, sample_events: pd.DataFrame, sample_log_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "scores.parquet"
    models = load_models(churn_bundle, None)
    score(sample_log_path, AS_OF, out, models)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    doubled = tmp_path / "doubled.parquet"
    _doubled_marketing(sample_events).to_parquet(doubled)
    with pytest.raises(DriftError) as caught:
        score(doubled, AS_OF, out, models, fail_on_drift=True)
    assert "fatigue_touches_30d" in str(caught.value) and "No scores were written" in str(
        caught.value
    )
    args = ["score", str(doubled), "--as-of", AS_OF, "--out", str(out), "--model"]
    args += [str(churn_bundle), "--segments", "none", "--no-track", "--fail-on-drift"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 3, result.output
    assert "drift against the training population" in result.output
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k != doubled.name} == before
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []  # no work folder left
    # without the flag the run writes, and its manifest says what alerted
    written = score(doubled, AS_OF, out, models)
    assert written.manifest["drift"]["level"] == "alert"


def test_an_old_bundle_without_a_reference_scores_and_says_drift_was_not_checked(
    churn_bundle: Path, sample_log_path: Path, tmp_path: Path
) -> None:
    copy = tmp_path / "models" / churn_bundle.name
    shutil.copytree(churn_bundle, copy)
    models = load_models(copy, None)
    delattr(models.loaded["churn"].model, "drift_reference_")  # as loaded from an old bundle
    result = score(sample_log_path, AS_OF, tmp_path / "s.parquet", models, fail_on_drift=True)
    assert result.manifest["drift"]["checked"] is False
    assert "not checked" in result.manifest["drift"]["reason"]


def test_the_tracked_run_holds_drift_and_history_metrics(
    churn_bundle: Path, sample_log_path: Path, tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from churnlens.jobs import score_job

    out = tmp_path / "scores.parquet"
    models = load_models(churn_bundle, None)
    score(sample_log_path, "2025-01-04", out, models)
    result = score_job(sample_log_path, AS_OF, out, models, track=True)
    client = MlflowClient()
    (run,) = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string="tags.kind = 'score'",
    )
    metrics = run.data.metrics
    drift = result.manifest["drift"]
    assert metrics["drift_level"] == 0 and metrics["drift_score_psi"] == drift["score"]["psi"]
    by_name = {f["name"]: f["psi"] for f in drift["features"]}
    assert metrics["drift_psi_fatigue_touches_30d"] == by_name["fatigue_touches_30d"]
    assert len([k for k in metrics if k.startswith("drift_psi_")]) == len(by_name)
    assert metrics["history_matched"] == result.manifest["history"]["matched"] > 0


def test_drift_counted_over_partitions_is_the_single_pass(
    churn_bundle: Path, sample_log_path: Path, tmp_path: Path
) -> None:
    models = load_models(churn_bundle, None)
    one = score(sample_log_path, AS_OF, tmp_path / "one.parquet", models, partitions=1)
    four = score(sample_log_path, AS_OF, tmp_path / "four.parquet", models, partitions=4)
    assert four.manifest["partitions"] == 4
    drift_one, drift_four = one.manifest["drift"], four.manifest["drift"]
    assert drift_four["customers"] == drift_one["customers"] == one.manifest["rows"]
    assert drift_four == drift_one
