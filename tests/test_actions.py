"""The action policy: precedence, conditions, channels, budget and validation."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churnlens import ConfigError
from churnlens.actions import Policy, chosen_uplift, decide, load_policy, value_cuts
from churnlens.contacts import FatigueRules, contact_profile
from churnlens.events import load_events
from churnlens.ranking import rank_sql
from tests.conftest import make_log

ROOT = Path(__file__).resolve().parents[1]
CUTS = (100.0, 1000.0)  # value if retained where the medium and high tiers start


def scored(**overrides: list) -> pd.DataFrame:
    """Scored customers with harmless defaults; ``overrides`` replace whole columns."""
    n = len(next(iter(overrides.values()))) if overrides else 1
    base = {
        "lifecycle_stage": ["active"] * n,
        "churn_probability": [0.1] * n,
        "value_if_retained": [50.0] * n,
        "segment_id": [0] * n,
        "segment_name": ["loyal"] * n,
        "over_contacted": [False] * n,
        "preferred_channel": ["web"] * n,
        "fatigued_channels": [""] * n,
        "reasons": [["no purchase for 9 days"]] * n,
    }
    base.update(overrides)
    frame = pd.DataFrame(base, index=[f"c{i}" for i in range(n)])
    frame["value_at_risk"] = frame["churn_probability"] * frame["value_if_retained"]
    return frame


def test_shipped_policy_file_is_the_default_policy() -> None:
    assert load_policy(ROOT / "configs" / "actions.yaml") == Policy()


def test_each_default_rule_fires_on_its_customers() -> None:
    frame = scored(
        lifecycle_stage=["active", "new", "silent", "active", "silent", "sleeping", "lost", "lost"],
        churn_probability=[0.9, 0.9, 0.9, 0.1, 0.4, 0.5, 0.9, 0.9],
        value_if_retained=[5000, 10, 5000, 5000, 10, 10, 10, 5000],
        over_contacted=[True, False, False, False, False, False, False, False],
    )
    out = decide(frame, Policy(), CUTS)
    assert out["action"].tolist() == [
        "do_not_disturb",  # over-contacted beats everything below it
        "onboarding_guide",
        "vip_winback_offer",
        "vip_care",
        "nurture",
        "reactivation_discount",
        "let_go",
        "seasonal_winback",  # lost but high value: the next seasonal campaign
    ]
    assert out["rule"].iloc[-2:].tolist() == ["lost", "lost_high_value"]
    assert out["value_tier"].astype(str).tolist()[:4] == ["high", "low", "high", "high"]
    # the rule's reason follows the model's reasons
    assert out["reasons"].iloc[1] == ["no purchase for 9 days", "new customer"]


def test_lost_customers_split_at_the_high_value_cut_and_every_customer_has_a_rule() -> None:
    frame = scored(
        lifecycle_stage=["lost", "lost", "lost", "active", "silent"],
        churn_probability=[0.9, 0.9, 0.9, 0.1, 0.2],
        value_if_retained=[1000.0, 999.99, 5000.0, 10.0, 500.0],  # the high cut is 1000
    )
    out = decide(frame, Policy(), CUTS)
    assert out["action"].tolist() == [
        "seasonal_winback",  # on the cut is above it
        "let_go",
        "seasonal_winback",
        "no_action",
        "no_action",
    ]
    assert out["rule"].tolist() == [
        "lost_high_value",
        "lost",
        "lost_high_value",
        "steady",
        "steady",
    ]
    assert out["action_channel"].isna().all()  # no one-to-one contact for any of them
    assert not any("no rule matched" in r for reasons in out["reasons"] for r in reasons)
    assert out["reasons"].iloc[3][-1].startswith("no rule above applies")


def test_first_matching_rule_wins() -> None:
    policy = Policy.model_validate(
        {
            "rules": [
                {
                    "name": "any_high_risk",
                    "when": {"min_churn_probability": 0.5},
                    "action": "nurture",
                },
                {"name": "active", "when": {"stage": ["active"]}, "action": "vip_care"},
            ]
        }
    )
    out = decide(scored(churn_probability=[0.6, 0.4]), policy, CUTS)
    assert out["rule"].tolist() == ["any_high_risk", "active"]


def test_segment_condition_matches_ids_and_names() -> None:
    policy = Policy.model_validate(
        {"rules": [{"name": "seg", "when": {"segment": [3, "vip"]}, "action": "vip_care"}]}
    )
    frame = scored(segment_id=[3, 1, 2], segment_name=["x", "vip", "y"])
    assert decide(frame, policy, CUTS)["action"].tolist() == ["vip_care", "vip_care", "no_action"]


def test_channel_is_preferred_unless_fatigued_and_none_for_non_contact() -> None:
    frame = scored(
        lifecycle_stage=["new", "new", "new", "lost"],
        preferred_channel=["app", None, None, "web"],
        fatigued_channels=["", "", "email,web", ""],
    )
    out = decide(frame, Policy(), CUTS)
    assert out["action_channel"].tolist()[:2] == ["app", "email"]  # default when unknown
    # preferred unknown and the default email is fatigued: no channel is left
    assert out["action"].iloc[2] == "do_not_disturb"
    assert out["action_channel"].iloc[2] is None
    assert out["action"].iloc[3] == "let_go" and out["action_channel"].iloc[3] is None


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["new", "active", "silent", "sleeping", "lost"]),
            st.floats(0, 1),
            st.sampled_from([None, "web", "app", "email", "phone"]),
            st.sets(st.sampled_from(["web", "app", "email", "phone"])),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_channel_is_never_a_fatigued_one(rows: list) -> None:
    frame = scored(
        lifecycle_stage=[r[0] for r in rows],
        churn_probability=[r[1] for r in rows],
        preferred_channel=[r[2] for r in rows],
        fatigued_channels=[",".join(sorted(r[3])) for r in rows],
    )
    out = decide(frame, Policy(), CUTS)
    for channel, tired, action in zip(
        out["action_channel"], [r[3] for r in rows], out["action"], strict=True
    ):
        assert channel is None or channel not in tired
        assert (channel is not None) == Policy().actions[action].contact


def _rank(frame: pd.DataFrame, max_contacts: int | None) -> pd.DataFrame:
    con = duckdb.connect()
    decided = frame.reset_index(names="customer_id")
    if "group" not in decided.columns:  # no control group: every contact is treated
        contacting = decided["action"].isin(Policy().contact_actions())
        decided["group"] = np.where(contacting, "treatment", "none")
    con.register("decided", decided)
    query = rank_sql("decided", list(decided.columns), Policy(), max_contacts)
    return con.execute(query).df().set_index("customer_id")


def test_budget_keeps_the_highest_value_at_risk_and_priority_ranks_within_action() -> None:
    frame = decide(
        scored(
            lifecycle_stage=["new", "new", "sleeping", "lost", "new"],
            churn_probability=[0.5, 0.9, 0.8, 0.9, 0.2],
            value_if_retained=[100.0, 100.0, 200.0, 10.0, 100.0],
        ),
        Policy(),
        CUTS,
    )
    ranked = _rank(frame, max_contacts=2)
    # value at risk: c0 50, c1 90, c2 160, c4 20 contactable; c3 is let_go (no contact)
    assert ranked.loc["c2", "action"] == "reactivation_discount"
    assert ranked.loc["c1", "action"] == "onboarding_guide"
    for cid in ("c0", "c4"):
        assert ranked.loc[cid, "action"] == "no_action"
        assert ranked.loc[cid, "rule"] == "budget"
        assert ranked.loc[cid, "action_channel"] is None or pd.isna(
            ranked.loc[cid, "action_channel"]
        )
        assert "over the contact budget of 2" in list(ranked.loc[cid, "reasons"])
    assert ranked.loc["c3", "action"] == "let_go"
    # priority within no_action: c0 (VaR 50) before c4 (VaR 20)
    assert ranked.loc["c0", "priority"] < ranked.loc["c4", "priority"]
    unbounded = _rank(frame, max_contacts=None)
    assert (unbounded["rule"] != "budget").all()
    assert unbounded.loc["c1", "priority"] == 1 and unbounded.loc["c0", "priority"] == 2


def test_value_cuts_are_quantiles_of_positive_values() -> None:
    values = np.array([0.0, 0.0, 10.0, 20.0, 30.0, 40.0, 50.0])
    assert value_cuts(values, Policy()) == pytest.approx((30.0, 42.0))
    assert value_cuts(np.zeros(3), Policy()) == (np.inf, np.inf)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("rules:\n  - {name: a, when: {stage: [asleep]}, action: nurture}\n", "stage"),
        ("rules:\n  - {name: a, action: send_flowers}\n", "unknown action 'send_flowers'"),
        (
            "rules:\n  - {name: a, when: {colour: red}, action: nurture}\n",
            "rules.0.when.colour: unknown key; allowed keys here: max_churn_probability",
        ),
        (
            "rules:\n  - {name: a, stage: [active], action: nurture}\n",
            "rules.0.stage: unknown key; allowed keys here: action, channel, name, reason, when",
        ),
        ("actions:\n  nurture: {contact: true, chanel: email}\n", "allowed keys here: contact"),
        ("risk_band: {medium: 0.2}\n", "allowed keys here"),
        ("risk_bands: {medium: 0.7, high: 0.6}\n", "must not exceed"),
        ("fallback: nurture\n", "contact: false"),
        (
            "rules:\n  - {name: a, when: {min_churn_probability: 0.8, max_churn_probability: 0.2},"
            " action: nurture}\n",
            "can never match",
        ),
        (
            "rules:\n  - {name: everyone, action: nurture}\n"
            "  - {name: lost, when: {stage: [lost]}, action: let_go}\n",
            "the rules after it never apply",
        ),
    ],
)
def test_bad_policies_get_clear_errors(tmp_path: Path, document: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(document)
    with pytest.raises(ConfigError, match=message) as info:
        load_policy(path)
    assert str(path) in str(info.value)
    assert "Value error" not in str(info.value)
    if "unknown action" in message:  # a check of the whole file: not the whole file again
        assert "(got" not in str(info.value)


def test_contact_profile_counts_touches_and_finds_fatigued_channels() -> None:
    log = make_log(
        [
            # customer a: 5 unanswered emails in the window, uses the app most
            *[("a", f"2025-03-{d:02d}", "email", "marketing", 0.0) for d in (2, 5, 9, 12, 20)],
            ("a", "2025-01-10", "app", "visit", 0.0),
            ("a", "2025-01-11", "app", "purchase", 20.0),
            ("a", "2024-12-01", "email", "support", 0.0),
            # customer b: touched on web but answered there
            *[("b", f"2025-03-{d:02d}", "web", "marketing", 0.0) for d in (3, 6, 9, 12)],
            ("b", "2025-03-13", "web", "visit", 0.0),
            # a touch after the as-of day never counts
            ("b", "2025-04-02", "web", "marketing", 0.0),
            # customer c: two contacts on phone and store; store is the more recent
            ("c", "2025-01-02", "phone", "visit", 0.0),
            ("c", "2025-01-03", "phone", "visit", 0.0),
            ("c", "2025-01-01", "store", "visit", 0.0),
            ("c", "2025-02-01", "store", "visit", 0.0),
            # customer d: a tie on counts and time goes to the first name
            ("d", "2025-01-05 10:00", "web", "visit", 0.0),
            ("d", "2025-01-05 10:00", "app", "visit", 0.0),
        ]
    )
    table = load_events(log)
    rules = FatigueRules(
        window_days=30, max_touches=5, max_response_rate=0.25, channel_max_touches=4
    )
    out = contact_profile(table, date(2025, 3, 31), rules, pd.Index(["a", "b", "c", "d", "z"]))
    assert out.loc["a", "touches"] == 5 and out.loc["a", "responses"] == 0
    assert bool(out.loc["a", "over_contacted"])
    assert out.loc["a", "fatigued_channels"] == "email"
    assert out.loc["a", "preferred_channel"] == "app"
    assert out.loc["b", "fatigued_channels"] == "" and out.loc["b", "preferred_channel"] == "web"
    assert not bool(out.loc["b", "over_contacted"])
    assert out.loc["c", "preferred_channel"] == "store"
    assert out.loc["d", "preferred_channel"] == "app"
    assert out.loc["z", "touches"] == 0 and out.loc["z", "preferred_channel"] is None


def test_policy_notes_name_unknown_channels_and_segments() -> None:
    from types import SimpleNamespace

    policy = Policy.model_validate(
        {
            "default_channel": "fax",
            "rules": [
                {"name": "vip", "when": {"segment": ["Big spenders", 9, 1]}, "action": "nurture"},
                {
                    "name": "post",
                    "when": {"stage": ["silent"]},
                    "action": "nurture",
                    "channel": "pigeon",
                },
                {"name": "web", "when": {"stage": ["new"]}, "action": "nurture", "channel": "web"},
            ],
        }
    )
    channels = ("web", "app", "email")
    segments = SimpleNamespace(segment_ids_=[0, 1], segment_names_={0: "Loyal", 1: "Big spenders"})
    notes = policy.notes(channels, segments)
    assert len(notes) == 3
    assert notes[0].startswith("default_channel names channel 'fax'")
    assert notes[1].startswith("rule post names channel 'pigeon'")
    assert "rule vip names segments [9]" in notes[2] and "'Loyal'" in notes[2]
    without = policy.notes(channels, None)
    assert without[-1] == (
        "rule vip needs segments, but no segments model is loaded: it never matches"
    )
    assert Policy().notes(channels, segments) == []  # the shipped policy: nothing to say


def test_a_contact_action_without_an_uplift_model_gets_the_prior() -> None:
    """An action the uplift model could not learn (too few customers) is not ranked last
    as if it did nothing: a contact action takes the model's prior (what the actions do
    on average); an action that contacts nobody gets no uplift."""
    frame = pd.DataFrame({"uplift_nurture": [0.01, 0.02, 0.03], "uplift__prior": [0.5, 0.6, 0.7]})
    actions = np.array(["nurture", "vip_winback_offer", "let_go"], dtype=object)
    got = chosen_uplift(frame, actions, np.array([True, True, False]))
    assert got[:2] == pytest.approx([0.01, 0.6]) and np.isnan(got[2])
    without = chosen_uplift(frame[["uplift_nurture"]], actions, np.ones(3, dtype=bool))
    assert without[0] == pytest.approx(0.01) and np.isnan(without[1:]).all()
