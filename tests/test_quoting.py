"""Names that reach SQL from data, configuration or paths are text, never SQL.

A folder called ``it's data``, a spill folder with a quote, an action called ``o'brien``
and event values with quotes all work end to end (before: DuckDB parser errors, the
action's only after every partition had been scored).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from churnlens.actions import DEFAULT_RULES, Policy
from churnlens.cli import app
from churnlens.events import load_events
from churnlens.features import build_features
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


def test_an_action_named_obrien_works_end_to_end_with_a_budget(quoted: Path) -> None:
    policy = Policy().model_dump(mode="json")
    policy["actions"]["o'brien"] = {"contact": True, "description": "a name with a quote"}
    for rule in policy["rules"]:
        if rule["action"] == "nurture":
            rule["action"] = "o'brien"
    path = quoted / "it's policy.yaml"
    path.write_text(yaml.safe_dump(policy), encoding="utf-8")
    bundle = next((quoted / "it's models").glob("churn-*"))
    out = quoted / "o'brien.parquet"
    cli("score", quoted / "it's log", "--as-of", AS_OF, "--out", out, "--model", bundle,
        "--policy", path, "--max-contacts", "40", "--no-track")  # fmt: skip
    scores = pd.read_parquet(out)
    obrien = scores[scores["action"] == "o'brien"]
    assert len(obrien) > 0
    assert sorted(obrien["priority"]) == list(range(1, len(obrien) + 1))
    contacting = scores["action"].isin(["o'brien", *Policy().contact_actions()])
    assert (contacting & scores["contact"]).sum() == 40  # o'brien counted among the contacts
    assert scores.loc[scores["contact"], "action"].eq("o'brien").any()
    assert (scores.loc[contacting, "group"] != "none").all()  # controls of o'brien too
    assert any(r.action == "nurture" for r in DEFAULT_RULES)  # the rule that was renamed


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
