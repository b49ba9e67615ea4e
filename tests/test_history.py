"""Changes since the last run: the history columns and the transition matrix on a
two-night example by hand, the nurture rule with and without history, and two real
nights of ``score`` on the same output path."""

from __future__ import annotations

from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from churnlens.actions import Policy, decide
from churnlens.errors import InputError
from churnlens.history import (
    UNSEEN,
    add_history,
    history_manifest,
    previous_at,
    read_previous,
    transition_matrix,
)
from churnlens.jobs import build_scores_report
from churnlens.model_source import load_models
from churnlens.scoring import score
from tests.conftest import AS_OF
from tests.test_actions import CUTS, scored

NIGHT_1 = pd.DataFrame(
    {
        "customer_id": ["a", "b", "c", "d"],
        "as_of": pd.to_datetime(["2025-01-01"] * 4).date,
        "churn_probability": [0.10, 0.50, 0.80, 0.30],
        "lifecycle_stage": ["active", "active", "silent", "lost"],
        "action": ["no_action", "nurture", "nurture", "let_go"],
    }
)
# night 2: a rose 25 points and went silent, b fell 10 points, c stayed, d is gone, e is new
NIGHT_2 = pd.DataFrame(
    {
        "churn_probability": [0.35, 0.40, 0.80, 0.20],
        "lifecycle_stage": ["silent", "active", "silent", "new"],
    },
    index=pd.Index(["a", "b", "c", "e"], name="customer_id"),
)


@pytest.fixture
def night_1(tmp_path: Path) -> Path:
    path = tmp_path / "night-1.parquet"
    NIGHT_1.to_parquet(path)
    return path


def test_history_columns_by_hand(night_1: Path) -> None:
    previous = read_previous(night_1)
    assert previous.as_of == "2025-01-01" and previous.customers == 4
    out = add_history(NIGHT_2, previous)
    assert out["previous_churn_probability"].tolist()[:3] == [0.10, 0.50, 0.80]
    assert np.isnan(out.loc["e", "previous_churn_probability"])
    assert out["churn_probability_change"].round(6).tolist()[:3] == [0.25, -0.10, 0.0]
    assert np.isnan(out.loc["e", "churn_probability_change"])
    assert out["previous_stage"].tolist() == ["active", "active", "silent", UNSEEN]
    assert out["previous_action"].tolist()[:3] == ["no_action", "nurture", "nurture"]
    assert pd.isna(out.loc["e", "previous_action"])


def test_transition_matrix_and_manifest_counts_by_hand(night_1: Path) -> None:
    previous = read_previous(night_1)
    now = add_history(NIGHT_2, previous).assign(action=["nurture", "nurture", "nurture", "x"])
    matrix = transition_matrix(now.reset_index())
    # rows: the stage of night 1 (and unseen), columns: the stage now
    assert matrix.loc["active"].to_dict() == {"new": 0, "active": 1, "silent": 1}
    assert matrix.loc["silent"].to_dict() == {"new": 0, "active": 0, "silent": 1}
    assert matrix.loc[UNSEEN].to_dict() == {"new": 1, "active": 0, "silent": 0}
    con = duckdb.connect()
    con.register("night_2", now.reset_index())
    counts = history_manifest(con, "night_2", previous)
    assert counts["transitions"] == {
        "active": {"active": 1, "silent": 1},
        "silent": {"silent": 1},
        UNSEEN: {"new": 1},
    }
    assert (counts["matched"], counts["new"], counts["gone"]) == (3, 1, 1)
    assert counts["stage_changed"] == 1  # a: active -> silent (e was unseen)
    assert counts["action_changed"] == 1  # a: no_action -> nurture
    assert counts["risk_rose_5_points"] == 1 and counts["risk_fell_5_points"] == 1
    assert counts["mean_change"] == pytest.approx((0.25 - 0.10 + 0.0) / 3)


def _rising(**columns: list) -> pd.DataFrame:
    return scored(lifecycle_stage=["active"] * 4, **columns)


def test_nurture_without_history_is_the_risk_band_and_says_so() -> None:
    out = decide(_rising(churn_probability=[0.1, 0.35, 0.7, 0.2]), Policy(), CUTS)
    assert out["action"].tolist() == ["no_action", "nurture", "nurture", "no_action"]
    assert out["reasons"].iloc[1][-1] == (
        "risk rising while still engaged (medium risk band; no earlier score to compare)"
    )


def test_nurture_with_history_is_a_rise_of_five_points() -> None:
    frame = _rising(churn_probability=[0.1, 0.35, 0.7, 0.2])
    # 0.1 rose 6 points (low band, but rising): nurture; 0.35 rose 1 point: not; 0.7 fell:
    # not; 0.2 has no earlier score (new since): the band decides (low: no)
    frame["churn_probability_change"] = [0.06, 0.01, -0.05, np.nan]
    out = decide(frame, Policy(), CUTS)
    assert out["action"].tolist() == ["nurture", "no_action", "no_action", "no_action"]
    assert out["reasons"].iloc[0][-1] == (
        "risk rising while still engaged (risk +6.0 points since the last run)"
    )
    frame["churn_probability_change"] = [0.0, 0.0, 0.0, np.nan]
    frame["churn_probability"] = [0.1, 0.1, 0.1, 0.5]  # the new customer's band: medium
    assert decide(frame, Policy(), CUTS)["action"].tolist()[-1] == "nurture"


def test_a_previous_file_that_is_not_scores_is_refused_naming_it(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("x,y\n1,2\n")
    with pytest.raises(InputError, match="not a scores file") as caught:
        read_previous(other)
    assert "column '" not in str(caught.value)
    with pytest.raises(InputError, match="previous scores file not found"):
        read_previous(tmp_path / "missing.parquet")
    # the automatic one only says why it was not compared
    found, notes = previous_at("auto", tmp_path / "nothing-yet.parquet", "2025-01-02")
    assert found is None and "nothing to compare" in notes[0]


def test_two_nights_on_the_same_output(churn_bundle, sample_log_path, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    models = load_models(churn_bundle, None)
    first = score(sample_log_path, "2025-01-04", out, models, keep_scores=True)
    assert first.manifest["history"]["compared"] is False
    assert first.scores is not None and first.scores["previous_stage"].isna().all()
    night_1 = pd.read_parquet(out).set_index("customer_id")
    second = score(sample_log_path, AS_OF, out, models, keep_scores=True)
    assert second.scores is not None
    now = second.scores.set_index("customer_id")
    seen = now.index.isin(night_1.index)
    expected = night_1["churn_probability"].reindex(now.index[seen])
    assert np.allclose(now.loc[seen, "previous_churn_probability"], expected)
    assert np.allclose(
        now.loc[seen, "churn_probability_change"],
        now.loc[seen, "churn_probability"] - expected,
    )
    assert (now.loc[~seen, "previous_stage"] == UNSEEN).all()
    assert now.loc[~seen, "previous_churn_probability"].isna().all()
    history = second.manifest["history"]
    assert history["previous_as_of"] == "2025-01-04" and history["new"] == int((~seen).sum())
    both = pd.crosstab(
        night_1["lifecycle_stage"].reindex(now.index).fillna(UNSEEN), now["lifecycle_stage"]
    )
    by_hand = {
        before: {after: int(n) for after, n in row.items() if n} for before, row in both.iterrows()
    }
    assert history["transitions"] == by_hand
    # a rerun of the same night compares with the same previous night, not with itself
    again = score(sample_log_path, AS_OF, out, models, keep_scores=True)
    assert again.manifest["history"]["previous_as_of"] == "2025-01-04"
    assert again.scores is not None
    assert np.allclose(
        again.scores.set_index("customer_id").loc[now.index[seen], "previous_churn_probability"],
        expected,
    )
    html = build_scores_report(second.scores, sample_log_path, second.manifest)
    assert "Since 2025-01-04" in html and "Biggest movers" in html
    assert "Drift against training" in html


def test_every_command_reads_a_csv_scores_file_with_its_zero_padded_ids(tmp_path: Path) -> None:
    """report, outcomes, train-uplift and --previous read scores through one reader: a
    CSV's customer ids stay text ("00042" is not the customer 42), only the columns asked
    for are read, and a file without the needed columns is refused naming them."""
    from churnlens.scores_file import read_scores_file

    path = tmp_path / "scores.csv"
    pd.DataFrame(
        {
            "customer_id": ["00042", "7"],
            "churn_probability": [0.2, 0.7],
            "lifecycle_stage": ["active", "lost"],
            "action": ["none", "winback"],
            "reasons": ["a", "b"],
        }
    ).to_csv(path, index=False)
    frame, manifest = read_scores_file(path, ("customer_id", "action"), ("lifecycle_stage",))
    assert frame["customer_id"].tolist() == ["00042", "7"] and manifest is None
    assert sorted(frame.columns) == ["action", "customer_id", "lifecycle_stage"]
    assert read_previous(path).frame.index.tolist() == ["00042", "7"]
    with pytest.raises(InputError, match=r"not a scores file: column\(s\) segment_id missing"):
        read_scores_file(path, ("customer_id", "segment_id"))


def test_a_previous_file_with_a_customer_twice_is_refused_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "twice.csv"
    pd.concat([NIGHT_1, NIGHT_1.iloc[[1]]]).to_csv(path, index=False)
    with pytest.raises(InputError) as caught:
        read_previous(path)
    text = str(caught.value)
    assert text.startswith(f"{path}: 1 problem found")
    assert "customer_id repeated: a scores file has one row per customer; 2 rows; e.g. b" in text
    assert "Fix: give --previous a scores file written by `churnlens score`" in text


def test_a_previous_file_without_a_day_has_no_day(tmp_path: Path) -> None:
    path = tmp_path / "no-day.csv"
    NIGHT_1.drop(columns="as_of").to_csv(path, index=False)
    assert read_previous(path).as_of is None  # not the text "None"


def test_a_previous_file_of_a_later_day_is_said_or_not_compared(night_1: Path) -> None:
    # a backfill of an earlier day: the automatic one is not compared, an explicit one is
    found, notes = previous_at("auto", night_1, "2024-12-20")
    assert found is None and "later day (2025-01-01) than this run (2024-12-20)" in notes[0]
    found, notes = previous_at(str(night_1), night_1, "2024-12-20")
    assert found is not None and found.customers == 4
    assert "the changes run backwards in time" in notes[0]
    # read early by the CLI, the same-day note is still said
    found, notes = previous_at(read_previous(night_1, "2025-01-01"), night_1, "2025-01-01")
    assert found is not None and notes == (f"--previous {night_1} is of the same day 2025-01-01",)


@pytest.mark.parametrize("name", ["scores.parquet", "scores.csv"])
def test_a_rerun_keeps_the_first_attempts_history_with_customers_gone(
    churn_bundle, sample_events: pd.DataFrame, sample_log_path: Path, tmp_path: Path, name: str
) -> None:
    out = tmp_path / name
    models = load_models(churn_bundle, None)
    score(sample_log_path, "2025-01-04", out, models)
    gone = sorted(sample_events["customer_id"].unique())[:5]
    fewer = tmp_path / "fewer.parquet"
    sample_events[~sample_events["customer_id"].isin(gone)].to_parquet(fewer)
    first = score(fewer, AS_OF, out, models).manifest["history"]
    assert first["gone"] == 5 and first["previous_as_of"] == "2025-01-04"
    again = score(fewer, AS_OF, out, models).manifest["history"]
    assert again == first
