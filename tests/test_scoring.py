"""Batch scoring end to end: the scores contract, partitions, manifest, the CLI, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churnlens import ModelError
from churnlens.bundle import load_bundle, write_bundle
from churnlens.cli import app
from churnlens.features import build_features
from churnlens.history import HISTORY_COLUMNS
from churnlens.model_source import load_models
from churnlens.scoring import EXTRA_COLUMNS, SCORE_COLUMNS, score
from tests.conftest import AS_OF, make_log

runner = CliRunner()


@pytest.fixture(scope="module")
def bundles(trained_bundles: tuple[Path, Path]) -> tuple[Path, Path]:
    """The churn and segments bundles trained on ``events_path`` (shared, read-only)."""
    return trained_bundles


@pytest.fixture(scope="module")
def scored(events_path: Path, bundles, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("scores") / "scores.parquet"
    return score(events_path, AS_OF, out, load_models(bundles[0]), keep_scores=True)


def test_scores_file_has_every_contract_column_and_one_row_per_customer(
    scored, sample_events: pd.DataFrame
) -> None:
    frame = pd.read_parquet(scored.path)
    # the history columns (null on a first run: the same columns every night)
    assert list(frame.columns) == [*SCORE_COLUMNS, *EXTRA_COLUMNS, *HISTORY_COLUMNS]
    assert frame[list(HISTORY_COLUMNS)].isna().all().all()
    assert frame["customer_id"].is_unique
    assert set(frame["customer_id"]) == set(sample_events["customer_id"])
    assert frame["churn_probability"].between(0, 1).all()
    assert set(frame["lifecycle_stage"]) <= {"new", "active", "silent", "sleeping", "lost"}
    assert frame["segment_id"].notna().all()  # found beside the churn bundle
    lost = frame["lifecycle_stage"] == "lost"
    np.testing.assert_allclose(  # value at risk: of the customers who can still be kept
        frame["value_at_risk"],
        np.where(lost, 0.0, frame["churn_probability"] * frame["value_if_retained"]),
    )
    assert (frame.loc[lost, "winback_value"] == frame.loc[lost, "value_if_retained"]).all()
    assert frame.loc[~lost, "winback_value"].isna().all()
    assert (frame["value_if_retained"] >= frame["expected_value"] - 1e-9).all()
    # priority is 1..n within each action
    for _, group in frame.groupby("action"):
        assert sorted(group["priority"]) == list(range(1, len(group) + 1))
        assert group.sort_values("priority")["value_at_risk"].is_monotonic_decreasing
    # every row explains itself: the rule's reason comes last
    assert all(len(r) >= 1 for r in frame["reasons"])


def test_manifest_describes_the_run(scored, events_path: Path, bundles) -> None:
    manifest = json.loads(scored.manifest_path.read_text())
    assert manifest["rows"] == len(pd.read_parquet(scored.path))
    assert manifest["as_of"] == AS_OF
    assert manifest["model_version"] == f"bundle:{bundles[0].name}"
    assert manifest["segments_version"] == f"bundle:{bundles[1].name}"
    assert sum(manifest["stages"].values()) == manifest["rows"]
    assert sum(manifest["actions"].values()) == manifest["rows"]
    from churnlens.events import load_events

    assert manifest["input_fingerprint"] == load_events(events_path).fingerprint()


def test_partitions_do_not_change_any_score(scored, events_path: Path, bundles, tmp_path) -> None:
    again = score(events_path, AS_OF, tmp_path / "s.parquet", load_models(bundles[0]), partitions=4)
    assert again.manifest["partitions"] == 4
    one = scored.scores.set_index("customer_id").sort_index()
    four = pd.read_parquet(again.path).set_index("customer_id").sort_index()
    pd.testing.assert_frame_equal(one[four.columns], four, check_dtype=False)


def test_more_partitions_than_customers_score_the_same(scored, bundles, tmp_path) -> None:
    """Partitions no customer hashes into are passed over (they failed the model), and
    the command line refuses a count beyond 10,000 at once."""
    log = make_log([(c, "2025-01-10", "web", "purchase", 20) for c in "abcde"])
    few = score(log, AS_OF, tmp_path / "few.parquet", load_models(bundles[0]), partitions=64)
    assert few.manifest["rows"] == 5 and few.manifest["partitions"] == 64
    one = score(log, AS_OF, tmp_path / "one.parquet", load_models(bundles[0]), partitions=1)
    pd.testing.assert_frame_equal(
        pd.read_parquet(few.path).set_index("customer_id").sort_index(),
        pd.read_parquet(one.path).set_index("customer_id").sort_index(),
    )
    result = runner.invoke(app, ["score", "e.parquet", "--as-of", AS_OF, "--out", "s.parquet",
                                 "--partitions", "100000"])  # fmt: skip
    assert result.exit_code == 2 and "--partitions" in result.output


def test_scores_match_the_model_on_the_full_feature_frame(scored, events_path, bundles) -> None:
    models = load_models(bundles[0])
    X = build_features(events_path, AS_OF, models.settings)
    expected = models.churn.predict_proba(X)[:, 1]
    got = scored.scores.set_index("customer_id")["churn_probability"].reindex(X.index)
    np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-12)


def test_csv_output_joins_reasons(events_path: Path, bundles, tmp_path: Path) -> None:
    result = score(events_path, AS_OF, tmp_path / "s.csv", load_models(bundles[0], None))
    frame = pd.read_csv(result.path)
    assert len(frame) == result.manifest["rows"]
    assert frame["reasons"].str.contains("; ").any()
    assert frame["segment_id"].isna().all()  # segments=None


def test_model_from_another_version_is_rejected_before_any_work(bundles, tmp_path: Path) -> None:
    payload, manifest = load_bundle(bundles[0])
    manifest = {k: v for k, v in manifest.items() if k != "files"}
    manifest["versions"] = {**manifest["versions"], "churnlens": "0.0.1"}
    old = write_bundle(tmp_path / "old", payload, manifest)
    with pytest.raises(ModelError, match=r"churnlens 0\.0\.1.*retrain"):
        load_models(old)


def test_model_whose_features_do_not_match_its_settings_is_rejected(bundles, tmp_path) -> None:
    payload, manifest = load_bundle(bundles[0])
    manifest = {k: v for k, v in manifest.items() if k != "files"}
    manifest["settings"]["features"]["channels"] = ["web", "app"]
    odd = write_bundle(tmp_path / "odd", payload, manifest)
    with pytest.raises(ModelError, match="features do not match"):
        load_models(odd)


def test_cli_score_and_report_end_to_end(events_path: Path, bundles, tmp_path: Path) -> None:
    out, html = tmp_path / "out" / "scores.parquet", tmp_path / "report.html"
    args = ["score", str(events_path), "--as-of", AS_OF, "--out", str(out)]
    args += ["--model", str(bundles[0]), "--max-contacts", "25", "--report", str(html)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "lifecycle stage" in result.output and "value at risk" in result.output
    frame = pd.read_parquet(out)
    assert frame["contact"].sum() == 25  # treated; the controls cut at the same rank
    assert (frame.loc[frame["contact"], "group"] == "treatment").all()
    assert (frame["rule"] == "budget").any()
    assert html.read_text().startswith("<!DOCTYPE html>")
    # the scoring run is in MLflow with the report
    import mlflow

    runs = mlflow.search_runs(experiment_names=["churnlens-scoring"])
    run = runs[runs["tags.kind"] == "score"].iloc[0]
    # scoring runs have an experiment of their own, beside the training runs'
    assert len(runs) == 1
    # and a duration that covers the scoring, not only the logging after it
    manifest = json.loads(out.with_name(out.name + ".manifest.json").read_text())
    created = pd.Timestamp(manifest["created"])
    assert run["start_time"] < created < run["end_time"]
    assert not mlflow.search_runs(
        experiment_names=["churnlens-training"], filter_string="tags.kind = 'score'"
    ).shape[0]
    assert run["metrics.customers_active"] == (frame["lifecycle_stage"] == "active").sum()
    files = mlflow.artifacts.list_artifacts(run_id=run["run_id"], artifact_path="report")
    assert [f.path for f in files] == ["report/report.html"]
    again = runner.invoke(
        app, ["report", str(out), "--events", str(events_path), "--out", str(tmp_path / "r.html")]
    )
    assert again.exit_code == 0, again.output
    assert (tmp_path / "r.html").stat().st_size > 10_000
    # a log that was not scored (another company's: no scored id in it) is refused
    other = pd.read_parquet(events_path).assign(customer_id=lambda f: "x" + f["customer_id"])
    other.to_parquet(tmp_path / "other.parquet")
    refused = runner.invoke(
        app, ["report", str(out), "--events", str(tmp_path / "other.parquet"),
              "--out", str(tmp_path / "other.html")],
    )  # fmt: skip
    flat = " ".join(refused.output.split())
    assert refused.exit_code == 1 and "scored customers have no event on or before" in flat
    assert not (tmp_path / "other.html").exists()


def test_an_order_number_pasted_into_amount_is_noted(
    sample_events: pd.DataFrame, scored, bundles, tmp_path: Path
) -> None:
    """Under the contract's 1e18 limit, so valid; but one customer's value then moves the
    value tiers of everyone: the manifest and the command say so."""
    log = sample_events.copy()
    first = log.index[log["event_type"] == "purchase"][0]
    log.loc[first, "amount"] = 123456789012.0
    orders = log[(log["customer_id"] == log.loc[first, "customer_id"]) & (log["amount"] > 0)]
    mean = orders["amount"].mean()
    result = score(log, AS_OF, tmp_path / "s.parquet", load_models(bundles[0]))
    said = [n for n in result.manifest["notes"] if "mean order is over 100,000 times" in n]
    assert len(said) == 1 and f"{mean:,.4g}" in said[0], (mean, result.manifest["notes"])
    assert not [n for n in scored.manifest["notes"] if "mean order" in n]  # the clean log


def test_report_refuses_a_scores_file_edited_by_hand(scored, events_path, tmp_path) -> None:
    """Values ``churnlens score`` never writes: a traceback or a "750.0%" card before."""
    frame = pd.read_parquet(scored.path)
    cases = [
        ("segment_id", "x", "not a segment number"),
        ("churn_probability", 7.5, "not a number within [0, 1]"),
        ("churn_probability", "abc", "not a number within [0, 1]"),
        ("as_of", "<script>", "not a day"),
        ("lifecycle_stage", "gone", "not one of new, active"),
    ]
    page = tmp_path / "r.html"
    for column, value, said in cases:
        edited = tmp_path / "edited.csv"
        changed = frame.astype({column: object})
        changed.loc[changed.index[0], column] = value
        changed.to_csv(edited, index=False)
        code, out = _report(edited, events_path, page)
        assert code == 1 and said in out and f"column '{column}'" in out, (column, out)
    frame.head(0).to_csv(tmp_path / "empty.csv", index=False)
    code, out = _report(tmp_path / "empty.csv", events_path, page)
    assert code == 1 and "holds no customer" in out, out
    # a manifest whose drift record was edited (the scores still pair with it)
    copy = tmp_path / "copy.parquet"
    shutil.copyfile(scored.path, copy)
    manifest = json.loads(scored.manifest_path.read_text())
    assert manifest["drift"]["checked"]
    manifest["drift"]["level"] = "<b>x"
    copy.with_name("copy.parquet.manifest.json").write_text(json.dumps(manifest))
    code, out = _report(copy, events_path, page)
    assert code == 1 and "drift record is not one churnlens writes" in out, out
    assert not page.exists()


def _report(scores: Path, events: Path, page: Path) -> tuple[int, str]:
    result = runner.invoke(
        app, ["report", str(scores), "--events", str(events), "--out", str(page)]
    )
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def test_cli_score_with_a_missing_model_exits_1_without_traceback(events_path, tmp_path) -> None:
    out = tmp_path / "scores.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "churnlens.cli", "score", str(events_path), "--as-of", AS_OF,
         "--out", str(out), "--model", str(tmp_path / "nowhere")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no such model bundle directory" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr + done.stdout
    assert not out.exists()


def test_cli_score_with_an_empty_registry_says_what_to_do(events_path, tmp_path) -> None:
    result = runner.invoke(
        app, ["score", str(events_path), "--as-of", AS_OF, "--out", str(tmp_path / "s.csv")]
    )
    assert result.exit_code == 1
    assert "train a model first" in " ".join(result.output.split())


@pytest.mark.slow
def test_killed_scoring_leaves_the_earlier_output_intact(
    events_path: Path, bundles, tmp_path: Path
) -> None:
    out = tmp_path / "scores.parquet"
    first = score(events_path, AS_OF, out, load_models(bundles[0]))
    before = out.read_bytes()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "churnlens.cli", "score", str(events_path), "--as-of", AS_OF,
         "--out", str(out), "--model", str(bundles[0]), "--partitions", "40", "--no-track"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # kill it once it has scored a partition
            if list(tmp_path.glob(".scores.parquet.work.*/scored/part-*.parquet")):
                break
            assert proc.poll() is None, "the scoring finished before it could be killed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert out.read_bytes() == before
    assert json.loads(first.manifest_path.read_text())["rows"] == first.manifest["rows"]
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".scores.parquet.") and p.is_file()
    ]


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo", "--customers", "600", "--days", "400"])
    assert result.exit_code == 0, result.output
    assert "mlflow ui --backend-store-uri" in result.output
    assert (tmp_path / "demo" / "report.html").is_file()
    frame = pd.read_parquet(tmp_path / "demo" / "scores.parquet")
    assert frame["customer_id"].is_unique and len(frame) > 500
    # two campaign cycles, each measured against its control group beside the truth
    assert "Outcomes of" in result.output and "Outcomes report" in result.output
    for n in (1, 2):
        table = pd.read_csv(tmp_path / "demo" / f"outcomes-{n}.csv")
        assert table["action"].iloc[-1] == "all" and (table["n_control"] > 0).any()
        assert (tmp_path / "demo" / f"outcomes-{n}.html").is_file()
    second = pd.read_parquet(tmp_path / "demo" / "scores-2.parquet")
    kept = frame.merge(second, on="customer_id")
    both = kept[(kept["group_x"] != "none") & (kept["group_y"] != "none")]
    # each campaign draws its groups afresh (a customer in both keeps theirs with chance
    # 0.82 at the demo's 10% controls: all of 50 or more alike by chance about 1 in 20,000)
    assert len(both) >= 50 and (both["group_x"] != both["group_y"]).any()
    campaigns = [
        json.loads((tmp_path / "demo" / f"{name}.manifest.json").read_text())["experiment"]
        for name in ("scores.parquet", "scores-2.parquet")
    ]
    assert [c["campaign"] for c in campaigns] == [
        str(frame["as_of"].iloc[0]),
        str(second["as_of"].iloc[0]),
    ]
    # the second campaign is ranked as --rank-by auto chose from the uplift model's check
    chosen = json.loads((tmp_path / "demo" / "scores-2.parquet.manifest.json").read_text())
    assert chosen["rank_by"] in ("incremental_value", "value_at_risk")
    assert "as ranked" in " ".join(result.output.split())


def test_a_segments_bundle_built_on_other_features_is_refused_before_any_work(
    trained_bundles, tmp_path: Path
) -> None:
    """The newest segments bundle beside the model was built with another configuration:
    refused when the models load (no data read), suggesting --segments none; a leftover
    segments folder with a broken manifest is passed over."""
    from churnlens.bundle import load_bundle, write_bundle
    from churnlens.errors import ModelError
    from churnlens.model_source import load_models

    folder = tmp_path / "models"
    shutil.copytree(trained_bundles[0].parent, folder)
    broken = folder / "segments-29990101-leftover"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    assert load_models(folder / trained_bundles[0].name).segments is not None  # passed over
    model, manifest = load_bundle(trained_bundles[1], "segments")
    model.feature_names_in_ = np.array([*model.feature_names_in_, "rfm_x_other"], dtype=object)
    manifest = {**manifest, "created": "2999-01-01T00:00:00+00:00"}
    write_bundle(folder / "segments-29990102-other", model, manifest)
    with pytest.raises(ModelError, match="--segments none"):
        load_models(folder / trained_bundles[0].name)


def test_score_says_which_configured_sections_come_from_the_model(
    events_path: Path, bundles, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("lifecycle: {lost_after_cycles: 5.0}\nevents: {purchase_types: [buy]}\n")
    out = tmp_path / "scores.parquet"
    args = ["score", str(events_path), "--as-of", AS_OF, "--out", str(out), "--model",
            str(bundles[0]), "--config", str(config), "--no-track"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "note: the configuration's events, lifecycle section(s) differ from the model's" in text
    manifest = json.loads(out.with_name("scores.parquet.manifest.json").read_text())
    assert manifest["notes"] and "not used" in manifest["notes"][0]
    plain = runner.invoke(app, [a for a in args if a not in ("--config", str(config))])
    assert plain.exit_code == 0 and "differ from the model" not in plain.output
    # the bundles are unsigned (no CHURNLENS_SIGNING_KEY): the log and the manifest say so
    assert "bundles are unsigned" in " ".join(plain.output.split())
    assert manifest["models_signed"] is False


def test_an_as_of_day_years_after_the_log_is_noted(
    events_path: Path, bundles, tmp_path: Path
) -> None:
    """--as-of 9999-12-31 scores (nothing forbids a late day) but says what it did."""
    out = tmp_path / "far.parquet"
    args = ["score", str(events_path), "--as-of", "9999-12-31", "--out", str(out), "--model",
            str(bundles[0]), "--no-track"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "note: the log's newest purchase is" in text and "check --as-of" in text
    assert (pd.read_parquet(out)["lifecycle_stage"] == "lost").all()
    near = score(events_path, AS_OF, tmp_path / "near.parquet", load_models(bundles[0]))
    assert not [n for n in near.manifest["notes"] if "newest purchase" in n]
