"""Names that reach SQL from data, configuration or paths are text, never SQL.

A folder called ``it's data``, a spill folder with a quote, an action called ``o'brien`` (refused)
and event values with quotes all work end to end (before: DuckDB parser errors, the
action's only after every partition had been scored).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from churnlens.actions import ActionSpec, Policy
from churnlens.cli import app
from churnlens.events import load_events
from churnlens.features import build_features
from churnlens.ranking import rank_sql
from churnlens.training import train
from tests.conftest import AS_OF, SETTINGS

runner = CliRunner()
# with -n 2, on one worker: the quoted workspace (its training) is made once
pytestmark = pytest.mark.xdist_group("quoting")


@pytest.fixture(scope="module")
def quoted(sample_events: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace whose every folder name holds a quote: the log, models and outputs."""
    root = tmp_path_factory.mktemp("quotes") / "it's data"
    (root / "it's log").mkdir(parents=True)
    half = len(sample_events) // 2
    sample_events.iloc[:half].to_parquet(root / "it's log" / "a'1.parquet")
    sample_events.iloc[half:].to_parquet(root / "it's log" / "b'2.parquet")
    sample_events.to_csv(root / "it's log.csv", index=False)
    trained = train(root / "it's log", AS_OF, SETTINGS, root / "it's models")
    assert trained.bundle is not None
    return root


def cli(*args: object) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_folder_named_its_data_works_end_to_end(quoted: Path) -> None:
    bundle = next((quoted / "it's models").glob("churn-*"))
    out = quoted / "it's out"
    expected = build_features(quoted / "it's log", AS_OF)
    for log in (quoted / "it's log", quoted / "it's log.csv"):
        cli("validate", log)
        cli("features", log, "--as-of", AS_OF, "--out", out / "f'eatures.parquet",
            "--temp-dir", quoted / "it's spill", "--partitions", "2")  # fmt: skip
        cli("score", log, "--as-of", AS_OF, "--out", out / "s'cores.csv", "--model", bundle,
            "--temp-dir", quoted / "it's spill", "--partitions", "2", "--no-track",
            "--report", out / "r'eport.html")  # fmt: skip
        scores = pd.read_csv(out / "s'cores.csv")
        assert len(scores) == scores["customer_id"].nunique() == len(expected)
        features = pd.read_parquet(out / "f'eatures.parquet")
        pd.testing.assert_frame_equal(features.sort_index(), expected, atol=1e-12)


INJECTION = "budget_out' || (SELECT content FROM read_text('/etc/hostname')) || '"


@pytest.mark.parametrize("name", ["o'brien", INJECTION, "Nurture", "send-flowers"])
def test_an_action_name_outside_the_rule_name_pattern_is_refused_before_any_work(
    quoted: Path, name: str
) -> None:
    """Action names are lower-case letters, digits and _: the policy is refused at load,
    with the name, before the log is read; nothing is written."""
    policy = Policy().model_dump(mode="json")
    policy["actions"][name] = {"contact": False, "description": "a name from outside"}
    policy["fallback"] = name
    path = quoted / "it's policy.yaml"
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    bundle = next((quoted / "it's models").glob("churn-*"))
    out = quoted / "scores.parquet"
    args = ["score", str(quoted / "it's log"), "--as-of", AS_OF, "--out", str(out),
            "--model", str(bundle), "--policy", str(path), "--no-track"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "names are lower-case letters, digits and _" in text and "Traceback" not in text
    assert not out.exists()


def test_rank_sql_quotes_action_names_even_past_validation() -> None:
    """Defence in depth: a policy built without validation (model_construct) still
    reaches SQL only as quoted text."""
    actions = {**Policy().actions, "o'brien": ActionSpec(contact=True)}
    actions[INJECTION] = ActionSpec(contact=False)
    policy = Policy.model_construct(**{**dict(Policy()), "actions": actions,
                                       "fallback": INJECTION})  # fmt: skip
    decided = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "action": ["o'brien", "o'brien", "nurture"],
            "action_channel": ["email"] * 3,
            "rule": "r",
            "reasons": [["x"]] * 3,
            "group": "treatment",
            "value_at_risk": [3.0, 2.0, 1.0],
            "churn_probability": 0.5,
        }
    )
    con = duckdb.connect()
    con.register("d", decided)
    ranked = con.execute(rank_sql("d", list(decided.columns), policy, 1)).df()
    by = ranked.set_index("customer_id")
    assert by.loc["a", "action"] == "o'brien" and by.loc["a", "contact"]
    assert by.loc["b", "action"] == INJECTION  # the text itself, not the host name
    assert by.loc["c", "action"] == INJECTION


def test_event_values_with_quotes_are_plain_values(tmp_path: Path) -> None:
    log = pd.DataFrame(
        {
            "customer_id": ["o'neil", "o'neil", 'say "hi"'],
            "timestamp": pd.to_datetime(["2024-01-01", "2024-02-01", "2024-01-05"]),
            "channel": ["web'site", "web'site", "app"],
            "event_type": ["purchase", "purchase", "it's a visit"],
            "amount": [10.0, 20.0, 0.0],
        }
    )
    features = build_features(log, "2024-03-01")
    assert list(features.index) == ["o'neil", 'say "hi"']
    assert features.loc["o'neil", "rfm_frequency"] == 2
    assert set(load_events(log).summary().by_channel) == {"web'site", "app"}
