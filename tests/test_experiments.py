"""Control groups: hash-stable assignment, the budget cut in both groups, the design."""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from churnlens.actions import Policy
from churnlens.config import ExperimentSettings
from churnlens.experiments import assign_groups, design, design_sql, uniform
from churnlens.ranking import rank_sql

CONTACT = Policy().contact_actions()
DAY = "2025-02-03"  # the scoring day: the campaign, unless experiment.campaign names one


def _ids(n: int) -> np.ndarray:
    return np.array([f"c{i:06d}" for i in range(n)], dtype=object)


def test_uniform_depends_only_on_id_and_name() -> None:
    ids = _ids(1000)
    u = uniform(ids, "spring")
    assert ((u >= 0) & (u < 1)).all()
    order = np.random.default_rng(0).permutation(len(ids))
    assert np.array_equal(uniform(ids[order], "spring"), u[order])  # row order
    halves = np.concatenate([uniform(ids[:400], "spring"), uniform(ids[400:], "spring")])
    assert np.array_equal(halves, u)  # partitions
    assert not np.array_equal(uniform(ids, "autumn"), u)  # a new name, new groups
    # uniform: a Kolmogorov-Smirnov test that fails about one run in a million
    assert stats.kstest(uniform(_ids(20000), "spring"), "uniform").pvalue > 1e-6


@pytest.mark.parametrize("share", [0.1, 0.3])
def test_control_share_within_binomial_noise(share: float) -> None:
    n = 20000
    groups = assign_groups(
        _ids(n), np.full(n, "nurture"), CONTACT, ExperimentSettings(control_share=share), DAY
    )
    controls = int((groups == "control").sum())
    # a two-sided binomial test at 1e-4: the share is the configured one
    assert stats.binomtest(controls, n, share).pvalue > 1e-4


def test_non_contact_actions_are_none_and_overrides_and_holdout_apply() -> None:
    n = 30000
    actions = np.array(["nurture", "reactivation_discount", "let_go", "do_not_disturb"] * (n // 4))
    design = ExperimentSettings(
        control_share=0.1, control_shares={"reactivation_discount": 0.5}, global_control_share=0.2
    )
    groups = assign_groups(_ids(n), actions, CONTACT, design, DAY)
    assert set(groups[np.isin(actions, ["let_go", "do_not_disturb"])]) == {"none"}
    nurture = groups[actions == "nurture"]
    discount = groups[actions == "reactivation_discount"]
    # independent hashes: P(control) = 1 - (1 - share)(1 - global)
    assert stats.binomtest(int((nurture == "control").sum()), len(nurture), 0.28).pvalue > 1e-4
    assert stats.binomtest(int((discount == "control").sum()), len(discount), 0.6).pvalue > 1e-4
    # the campaign's holdout is the same customers whatever their action
    held = uniform(_ids(n), f"churnlens:{DAY}:global") < 0.2
    assert (groups[held & np.isin(actions, CONTACT)] == "control").all()


def test_each_campaign_draws_its_groups_afresh() -> None:
    """Who reaches a contact action in the next campaign depends on the last one's
    contacts (here: half of the customers treated last time are now over-contacted and
    left out). Kept groups would make the next campaign's controls of that action 1/3 of
    it (0.2 / 0.6) instead of the design's 0.2; drawn afresh, they are 0.2 again."""
    n = 40000
    ids = _ids(n)
    design = ExperimentSettings(control_share=0.2)
    first = assign_groups(ids, np.full(n, "nurture"), CONTACT, design, "2025-01-06")
    rested = np.random.default_rng(3).random(n) < 0.5
    eligible = (first == "control") | rested  # the other treated are do_not_disturb now
    actions = np.where(eligible, "nurture", "do_not_disturb")
    second = assign_groups(ids, actions, CONTACT, design, "2025-02-03")
    controls = int((second[eligible] == "control").sum())
    assert stats.binomtest(controls, int(eligible.sum()), 0.2).pvalue > 1e-4
    # one campaign named for several days keeps its groups from day to day
    named = design.model_copy(update={"campaign": "spring"})
    kept = [
        assign_groups(ids, np.full(n, "nurture"), CONTACT, named, d) for d in (DAY, "2025-03-01")
    ]
    assert np.array_equal(kept[0], kept[1])
    assert not np.array_equal(
        first, assign_groups(ids, np.full(n, "nurture"), CONTACT, design, DAY)
    )


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31 - 1), st.integers(1, 300))
def test_assignment_is_stable_across_runs_partitions_and_row_order(seed: int, n: int) -> None:
    rng = np.random.default_rng(seed)
    ids = np.array([f"id-{x}" for x in rng.integers(0, 10**9, n)], dtype=object)
    actions = rng.choice(["nurture", "vip_care", "let_go"], n)
    design = ExperimentSettings(control_share=0.3)
    whole = assign_groups(ids, actions, CONTACT, design, DAY)
    cut = int(rng.integers(0, n + 1))
    parts = np.concatenate(
        [assign_groups(ids[:cut], actions[:cut], CONTACT, design, DAY),
         assign_groups(ids[cut:], actions[cut:], CONTACT, design, DAY)]
    )  # fmt: skip
    order = rng.permutation(n)
    shuffled = assign_groups(ids[order], actions[order], CONTACT, design, DAY)
    assert np.array_equal(parts, whole)
    assert np.array_equal(shuffled, whole[order])


def _decided(n: int, seed: int, share: float) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ids = _ids(n)
    actions = rng.choice(["nurture", "reactivation_discount", "let_go"], n)
    frame = pd.DataFrame(
        {
            "customer_id": ids,
            "action": actions,
            "action_channel": np.where(actions == "let_go", None, "email"),
            "rule": "r",
            "reasons": [["because"] for _ in range(n)],
            "value_at_risk": rng.gamma(1.0, 50.0, n).round(2),
            "churn_probability": rng.uniform(size=n),
        }
    )
    frame["group"] = assign_groups(
        ids, actions, CONTACT, ExperimentSettings(control_share=share), DAY
    )
    return frame


def _ranked(decided: pd.DataFrame, max_contacts: int | None) -> pd.DataFrame:
    con = duckdb.connect()
    con.register("decided", decided)
    query = rank_sql("decided", list(decided.columns), Policy(), max_contacts)
    return con.execute(query).df().set_index("customer_id")


@pytest.mark.parametrize("max_contacts", [0, 1, 37, 250, 10_000])
def test_budget_cuts_both_groups_at_the_same_rank(max_contacts: int) -> None:
    decided = _decided(1200, seed=max_contacts, share=0.25)
    ranked = _ranked(decided, max_contacts)
    contacting = decided.set_index("customer_id")["action"].isin(CONTACT)
    order = decided.set_index("customer_id")[contacting].sort_values(
        ["value_at_risk", "churn_probability"], ascending=False
    )
    treated = (order["group"] == "treatment").to_numpy()
    before = np.cumsum(treated) - treated  # treated customers ranked before each one
    inside = pd.Series(before < max_contacts, index=order.index)
    kept = ranked.loc[order.index]
    # within the budget both groups keep action and group; beyond it, both are cut
    assert (kept.loc[inside, "group"] == order.loc[inside, "group"]).all()
    assert (kept.loc[~inside, "group"] == "none").all()
    assert (kept.loc[~inside, "action"] == Policy().fallback).all()
    assert kept["contact"].sum() == min(max_contacts, treated.sum())
    assert (ranked["contact"] == (ranked["group"] == "treatment")).all()
    # the last contacted customer ranks above every control left out
    if (~inside).any() and kept["contact"].any():
        last = kept.loc[kept["contact"], "value_at_risk"].min()
        cut = order.loc[~inside & (order["group"] == "control"), "value_at_risk"]
        assert (cut <= last).all()


def test_budget_is_counted_on_treated_customers_only() -> None:
    decided = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "action": ["nurture"] * 5,
            "action_channel": ["email"] * 5,
            "rule": "r",
            "reasons": [["x"]] * 5,
            "value_at_risk": [50.0, 40.0, 30.0, 20.0, 10.0],
            "churn_probability": [0.5] * 5,
            "group": ["treatment", "control", "treatment", "control", "treatment"],
        }
    )
    ranked = _ranked(decided, max_contacts=2)
    # a and c are contacted; b would have been (one treated before it), d would not
    # (two before it: it would have been the third), so d is cut like e
    assert ranked["contact"].to_dict() == {"a": True, "b": False, "c": True, "d": False, "e": False}
    assert ranked["group"].to_dict() == {
        "a": "treatment", "b": "control", "c": "treatment", "d": "none", "e": "none"
    }  # fmt: skip
    for cut in ("d", "e"):
        assert ranked.loc[cut, "action"] == "no_action" and ranked.loc[cut, "rule"] == "budget"


def test_design_counts_and_standardised_differences_by_hand() -> None:
    ranked = pd.DataFrame(
        {
            "action": ["nurture"] * 5 + ["let_go"],
            "group": ["treatment", "treatment", "treatment", "control", "control", "none"],
            "contact": [True, True, False, False, False, False],
            "churn_probability": [0.2, 0.4, 0.6, 0.1, 0.3, 0.9],
            "value_if_retained": [10.0, 20.0, 30.0, 10.0, 10.0, 0.0],
            "days_since_purchase": [1.0, 2.0, 3.0, None, 5.0, 9.0],
        }
    )
    con = duckdb.connect()
    con.register("ranked", ranked)
    out = design(con.execute(design_sql("ranked")).df(), ExperimentSettings(name="x"), DAY)
    assert out["name"] == "x" and out["campaign"] == DAY
    assert out["groups"] == {"nurture": {"treatment": 3, "control": 2, "contacted": 2}}
    churn = out["balance"]["nurture"]["churn_probability"]
    # treatment mean 0.4 var 0.04; control mean 0.2 var 0.02: (0.2) / sqrt(0.03)
    assert churn["treatment"] == pytest.approx(0.4)
    assert churn["control"] == pytest.approx(0.2)
    assert churn["standardised_difference"] == pytest.approx(0.2 / np.sqrt(0.03), abs=1e-6)
    value = out["balance"]["nurture"]["value_if_retained"]
    assert value["standardised_difference"] == pytest.approx(10 / np.sqrt(50), abs=1e-6)
    days = out["balance"]["nurture"]["days_since_purchase"]  # control: one value, var 0
    assert days["control"] == 5.0
    assert days["standardised_difference"] == pytest.approx(-3 / np.sqrt(0.5), abs=1e-6)
