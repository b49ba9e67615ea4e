"""The campaign continuation of the synthetic log: continuity, determinism, neutral
effects, the direction and heterogeneity of the true effects, the realised world, and a
second cycle continuing the world that happened in the first."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib

import numpy as np
import pandas as pd
import pytest

from churnlens.sample import COLUMNS, generate_events, simulate_log
from churnlens.sample import campaign as campaign_module
from churnlens.sample.campaign import (
    CAMPAIGN_STREAM,
    CONTACT_ACTIONS,
    FORMAT_STREAM,
    Campaign,
    Effects,
    random_stream,
    simulate_campaign,
)
from churnlens.sample.output import customer_ids, to_frame
from churnlens.sample.weeks import run_history

START = dt.date(2024, 1, 1)
DAYS, SEED, HORIZON = 730, 7, 90
CUSTOMERS = 3000


def rule_scores(events: pd.DataFrame, days: int, start: dt.date, seed: int = 1) -> pd.DataFrame:
    """A simple scoring rule on the log: win back lapsed buyers, nurture recent ones, care
    for the top spenders, and rest or nurture the most-touched customers; a random half
    of the contact actions is contacted."""
    day = (events["timestamp"] - pd.Timestamp(start)).dt.days
    ids = pd.Index(np.sort(events["customer_id"].unique()))
    buys = events["event_type"] == "purchase"
    buyer = events.loc[buys, "customer_id"]
    since = days - 1 - day[buys].groupby(buyer).max().reindex(ids)
    spend = events.loc[buys, "amount"].groupby(buyer).sum().reindex(ids, fill_value=0.0)
    recent = (events["event_type"] == "marketing") & (day >= days - 28)
    touches = events.loc[recent, "customer_id"].value_counts().reindex(ids, fill_value=0)
    rng = np.random.default_rng(seed)
    action = pd.Series("no_action", index=ids, dtype=object)
    action[since.between(60, 200)] = "reactivation_discount"
    action[since < 30] = "nurture"
    action[spend >= spend.quantile(0.9)] = "vip_care"
    most = (touches >= touches.quantile(0.9)).to_numpy()
    coin = rng.random(ids.size) < 0.5
    action[most & coin] = "do_not_disturb"
    action[most & ~coin] = "nurture"
    contact = action.isin(CONTACT_ACTIONS).to_numpy() & (rng.random(ids.size) < 0.5)
    return pd.DataFrame({"customer_id": ids, "action": action.to_numpy(), "contact": contact})


@pytest.fixture(scope="module")
def scores() -> pd.DataFrame:
    return rule_scores(generate_events(CUSTOMERS, DAYS, SEED, START), DAYS, START)


@pytest.fixture(scope="module")
def campaign(scores: pd.DataFrame) -> Campaign:
    return simulate_campaign(CUSTOMERS, DAYS, SEED, START, scores, HORIZON)


def _small(**kwargs: object) -> Campaign:
    """400 customers, 200 days (not whole weeks), a 30-day window."""
    events = generate_events(400, 200, 3, START)
    args = {"scores": rule_scores(events, 200, START), "horizon_days": 30, "replicates": 4}
    return simulate_campaign(400, 200, 3, START, **(args | kwargs))


# ---------------------------------------------------------------------- continuity


def test_the_rerun_is_the_generated_log() -> None:
    history = run_history(400, 200, 3, START)
    frame = to_frame(history.rng, history.log, history.traits, customer_ids(400), 200, START)
    pd.testing.assert_frame_equal(frame, generate_events(400, 200, 3, START))


def test_the_window_continues_the_log() -> None:
    campaign = _small(effects=Effects.none())
    _, truth = simulate_log(400, 200, 3, START)
    assert campaign.as_of == START + dt.timedelta(days=199)
    ts = campaign.events["timestamp"]
    assert ts.min() >= pd.Timestamp(START + dt.timedelta(days=200))
    assert ts.max() < pd.Timestamp(START + dt.timedelta(days=230))
    assert tuple(campaign.events.columns) == COLUMNS
    assert campaign.truth.index.equals(truth.index)
    # the state carried over is the log's: the same decisions to leave and churn days
    for column in ("onset_day", "churn_day"):
        seen = truth[column] < 200
        assert seen.any()
        pd.testing.assert_series_equal(campaign.truth.loc[seen, column], truth.loc[seen, column])
    # customers gone before the scoring day stay gone: marketing and stray support only
    gone = truth.index[truth["churn_day"] < 200]
    kinds = set(campaign.events.loc[campaign.events["customer_id"].isin(gone), "event_type"])
    assert kinds <= {"marketing", "support"}
    assert "marketing" in kinds
    bought = campaign.events.loc[campaign.events["event_type"] == "purchase", "customer_id"]
    assert bought.nunique() > 50


# --------------------------------------------------------------------- determinism


def test_same_arguments_give_the_same_campaign() -> None:
    first, second = _small(), _small()
    pd.testing.assert_frame_equal(first.events, second.events)
    pd.testing.assert_frame_equal(first.truth, second.truth)
    other = _small(campaign_seed=1)
    assert not other.events.equals(first.events)


def _fingerprint(frame: pd.DataFrame) -> str:
    values = pd.util.hash_pandas_object(frame, index=True).to_numpy()
    return hashlib.sha256(values.tobytes()).hexdigest()[:16]


def test_a_fixed_seed_gives_the_same_campaign_as_before() -> None:
    """The first cycle is pinned: the second cycle's machinery changes none of its draws."""
    campaign = _small()
    assert campaign.cycle == 1
    assert _fingerprint(campaign.events) == "9f08d7d495413e47"
    assert _fingerprint(campaign.truth) == "f62992f91f2a53f9"


def test_the_world_that_happened_does_not_depend_on_the_replicates() -> None:
    one, four = _small(replicates=1), _small()
    pd.testing.assert_frame_equal(one.events, four.events)
    assert one.truth["retained"].equals(four.truth["retained"])
    assert set(one.truth["p_treated"].unique()) <= {0.0, 1.0}


# ----------------------------------------------------------------- neutral effects


def test_neutral_effects_change_nothing() -> None:
    campaign = _small(effects=Effects.none())
    truth = campaign.truth
    assert truth["treated"].any()
    for column in ("effect", "revenue_effect"):
        assert (truth[column] == 0.0).all(), column
    assert truth["p_treated"].equals(truth["p_untreated"])
    assert truth["retained_if_treated"].equals(truth["retained_if_untreated"])
    nobody = pd.DataFrame({"customer_id": truth.index[:0], "action": []})
    untouched = _small(effects=Effects.none(), scores=nobody)
    pd.testing.assert_frame_equal(campaign.events, untouched.events)


def test_actions_without_effects_and_absent_customers_change_nothing(
    campaign: Campaign,
) -> None:
    truth = campaign.truth
    idle = truth["action"] == "no_action"
    assert idle.sum() > 100
    assert (truth.loc[idle, "effect"] == 0.0).all()
    assert (truth.loc[idle, "revenue_effect"] == 0.0).all()
    assert not truth.loc[idle, "treated"].any()


# -------------------------------------------------------- direction, heterogeneity


def test_reactivation_brings_back_leavers_heterogeneously(campaign: Campaign) -> None:
    truth = campaign.truth
    offered = truth[truth["action"] == "reactivation_discount"]
    leavers = offered[offered["decided_to_leave"]]
    assert len(leavers) > 100
    assert leavers["effect"].mean() > 0.03
    assert leavers["effect"].nunique() > 5
    sensitive = leavers["price_sensitivity"] > leavers["price_sensitivity"].median()
    assert leavers.loc[sensitive, "effect"].mean() > 2 * leavers.loc[~sensitive, "effect"].mean()
    # the discount costs spend for the customers who were not leaving
    stayers = offered[~offered["decided_to_leave"]]
    assert len(stayers) > 30
    assert stayers["revenue_effect"].mean() < 0


def test_the_discount_cuts_order_values_and_nothing_else() -> None:
    discount = Effects().discount
    assert 0.05 <= discount <= 0.5
    only = dataclasses.replace(Effects.none(), discount=discount)
    truth = _small(effects=only).truth
    offered = truth["action"] == "reactivation_discount"
    assert (truth.loc[~offered, "revenue_effect"] == 0).all()
    assert (truth["effect"] == 0).all()
    spent = truth[offered & (truth["spend_untreated"] > 20)]
    assert len(spent) > 10
    ratio = spent["spend_treated"] / spent["spend_untreated"]
    np.testing.assert_allclose(ratio, 1 - discount, atol=0.01)


def test_contacting_over_contacted_customers_hurts(campaign: Campaign) -> None:
    truth = campaign.truth
    care = truth["action"].isin(["nurture", "vip_care"])
    over = truth[care & truth["over_contacted"]]
    assert len(over) > 50
    assert over["effect"].mean() < 0
    calm = truth[care & ~truth["over_contacted"] & ~truth["decided_to_leave"]]
    assert calm["effect"].mean() > over["effect"].mean()


def test_rest_helps_over_contacted_customers(campaign: Campaign) -> None:
    truth = campaign.truth
    rested = truth[(truth["action"] == "do_not_disturb") & truth["over_contacted"]]
    assert len(rested) > 50
    assert rested["effect"].mean() > 0
    assert (rested["effect"] >= 0).mean() > 0.9
    assert rested["treated"].all()  # no group column: every do_not_disturb is rested


# -------------------------------------------------------------- the realised world


def test_retained_is_the_world_that_happened(campaign: Campaign, scores: pd.DataFrame) -> None:
    truth = campaign.truth
    treated = truth["treated"]
    expected = truth["retained_if_treated"].where(treated, truth["retained_if_untreated"])
    assert truth["retained"].equals(expected)
    contacted = scores.set_index("customer_id")["contact"].reindex(truth.index, fill_value=False)
    rested = truth["action"] == "do_not_disturb"
    assert treated.equals(contacted | rested)
    assert (truth["retained_if_treated"] != truth["retained_if_untreated"]).any()


def test_events_agree_with_retained_and_spend(campaign: Campaign) -> None:
    events, truth = campaign.events, campaign.truth
    purchases = events[events["event_type"] == "purchase"]
    buyers = set(purchases["customer_id"])
    assert buyers == set(truth.index[truth["retained"]])
    spend = purchases.groupby("customer_id")["amount"].sum().reindex(truth.index, fill_value=0)
    np.testing.assert_allclose(spend.to_numpy(), truth["spend"].to_numpy(), atol=1e-6)
    # every contacted customer got the contact itself: a send on the window's first day
    first_day = events["timestamp"].dt.normalize() == pd.Timestamp(campaign.as_of) + pd.Timedelta(
        days=1
    )
    sent = set(events.loc[first_day & (events["event_type"] == "marketing"), "customer_id"])
    contacted = truth.index[truth["treated"] & truth["action"].isin(CONTACT_ACTIONS)]
    assert set(contacted) <= sent


# ------------------------------------------------------------------------- scores


def test_scores_semantics() -> None:
    ids = customer_ids(400)
    scores = pd.DataFrame(
        {
            "customer_id": ids[:4],
            "action": ["nurture", "do_not_disturb", "do_not_disturb", "let_go"],
            "group": ["treatment", "treatment", "control", "none"],
        }
    )
    truth = _small(scores=scores).truth
    assert truth["treated"].iloc[:4].tolist() == [True, True, False, False]
    assert (truth["action"].iloc[4:] == "no_action").all()
    assert not truth["treated"].iloc[4:].any()
    with pytest.raises(ValueError, match="not in the log"):
        _small(scores=pd.DataFrame({"customer_id": ["C9999999"], "action": ["nurture"]}))
    with pytest.raises(ValueError, match="duplicate"):
        _small(scores=pd.DataFrame({"customer_id": [ids[0]] * 2, "action": ["nurture"] * 2}))
    with pytest.raises(ValueError, match="discount"):
        Effects(discount=1.0)


# -------------------------------------------------------------------- second cycle

N2, DAYS2, SEED2, H1, H2 = 600, 300, 5, 30, 40  # neither the log nor the windows whole weeks
WINBACK = ("reactivation_discount", "vip_winback_offer")
NOBODY = pd.DataFrame({"customer_id": [], "action": []})  # nobody scored
STRONG = Effects(winback=1.0, vip_winback=1.0, memory_days=1000.0)


def _cycles(
    first: Effects = STRONG, second: Effects = STRONG, **kwargs: object
) -> tuple[Campaign, Campaign]:
    """A first campaign on the log and a second one scored on the log extended by the first
    window."""
    log = generate_events(N2, DAYS2, SEED2, START)
    one = simulate_campaign(
        N2, DAYS2, SEED2, START, rule_scores(log, DAYS2, START), H1, first, replicates=3
    )
    extended = pd.concat([log, one.events], ignore_index=True)
    scores = rule_scores(extended, DAYS2 + H1, START, seed=2)
    args = {"scores": scores, "horizon_days": H2, "effects": second, "replicates": 3}
    two = simulate_campaign(N2, DAYS2, SEED2, START, after=one, **(args | kwargs))
    return one, two


@pytest.fixture(scope="module")
def cycles() -> tuple[Campaign, Campaign]:
    return _cycles()


def test_the_second_window_follows_the_first(
    cycles: tuple[Campaign, Campaign],
) -> None:
    one, two = cycles
    assert (one.cycle, two.cycle) == (1, 2)
    assert two.as_of == one.as_of + dt.timedelta(days=H1)
    assert two.horizon_days == H2
    ts = two.events["timestamp"]
    assert ts.min() >= pd.Timestamp(two.as_of + dt.timedelta(days=1))
    assert ts.max() < pd.Timestamp(two.as_of + dt.timedelta(days=H2 + 1))
    assert ts.min() > one.events["timestamp"].max()
    assert tuple(two.events.columns) == COLUMNS
    assert two.truth.index.equals(one.truth.index)
    assert tuple(two.truth.columns) == tuple(one.truth.columns)
    assert two.events["event_type"].value_counts()[["purchase", "marketing", "visit"]].min() > 50
    three = simulate_campaign(N2, DAYS2, SEED2, START, NOBODY, 7, replicates=1, after=two)
    assert three.cycle == 3
    assert three.as_of == two.as_of + dt.timedelta(days=H2)
    assert three.events["timestamp"].min() > ts.max()


def test_the_second_cycle_continues_the_world_that_happened(
    cycles: tuple[Campaign, Campaign],
) -> None:
    one, two = cycles
    first, second = one.truth, two.truth
    pd.testing.assert_series_equal(first["join_day"], second["join_day"])
    for trait in ("price_sensitivity", "receptiveness", "value"):
        pd.testing.assert_series_equal(first[trait], second[trait])
    # a decision to leave is undone only by a win-back received in the first cycle
    won_back = first["treated"] & first["action"].isin(WINBACK)
    kept = first["decided_to_leave"] & ~won_back
    assert kept.sum() > 100
    for column in ("onset_day", "churn_day"):
        pd.testing.assert_series_equal(first.loc[kept, column], second.loc[kept, column])
    assert (second["decided_to_leave"] >= first["decided_to_leave"])[~won_back].all()
    # the state is the happened world's: every purchase of the first window comes before
    # the customer's churn, including the customers won back there (gone in the other world)
    buys = one.events[one.events["event_type"] == "purchase"]
    day = (buys["timestamp"] - pd.Timestamp(START)).dt.days.to_numpy()
    assert (day < second["churn_day"].reindex(buys["customer_id"]).to_numpy()).all()
    revived = won_back & (first["churn_day"] < DAYS2) & first["retained"]
    assert revived.sum() >= 3
    assert (second.loc[revived, "churn_day"] > DAYS2).all()  # inf, or a new decision
    assert not first.loc[revived, "retained_if_untreated"].any()


def test_gone_customers_stay_gone_unless_won_back(
    cycles: tuple[Campaign, Campaign],
) -> None:
    one, two = cycles
    truth = two.truth
    gone = truth["churn_day"] <= DAYS2 + H1  # gone by the end of the first window
    won = truth["treated"] & truth["action"].isin(WINBACK)
    assert gone.sum() > 100
    assert (gone & won).sum() > 5
    assert (truth.loc[gone, "p_untreated"] == 0).all()
    assert (truth.loc[gone & ~truth["action"].isin(WINBACK), "p_treated"] == 0).all()
    buyers = set(two.events.loc[two.events["event_type"] == "purchase", "customer_id"])
    assert not buyers & set(truth.index[gone & ~won])
    assert buyers & set(truth.index[gone & won])  # a win-back brings some of them back
    assert buyers == set(truth.index[truth["retained"]])
    # and the customers who had left before the first campaign among them
    assert (gone & (one.truth["churn_day"] < DAYS2)).sum() > 50


def test_neutral_effects_in_both_cycles_change_nothing() -> None:
    _, two = _cycles(Effects.none(), Effects.none())
    truth = two.truth
    assert truth["treated"].sum() > 100
    for column in ("effect", "revenue_effect"):
        assert (truth[column] == 0.0).all(), column
    assert truth["retained_if_treated"].equals(truth["retained_if_untreated"])
    _, untouched = _cycles(Effects.none(), Effects.none(), scores=NOBODY)
    pd.testing.assert_frame_equal(two.events, untouched.events)
    # the second cycle is neutral after a first cycle with effects, too
    _, after_effects = _cycles(STRONG, Effects.none())
    assert (after_effects.truth[["effect", "revenue_effect"]] == 0.0).all().all()


def test_the_second_cycle_is_deterministic_and_leaves_the_first_alone(
    cycles: tuple[Campaign, Campaign],
) -> None:
    one, two = cycles
    assert one.continuation is not None
    assert "continuation" not in repr(one)
    before = {k: np.copy(v) for k, v in vars(one.continuation.history.state).items()}
    _, again = _cycles()
    pd.testing.assert_frame_equal(two.events, again.events)
    pd.testing.assert_frame_equal(two.truth, again.truth)
    for key, value in vars(one.continuation.history.state).items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    _, other = _cycles(campaign_seed=1)
    assert not other.events.equals(two.events)


def test_each_cycle_has_random_streams_of_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same ``campaign_seed`` in two cycles draws from different streams; the first
    cycle's are the streams of before (no cycle in the key)."""
    keys: list[tuple[int, ...]] = []

    def spy(seed: int, stream: int, campaign_seed: int, *key: int) -> np.random.Generator:
        keys.append((stream, campaign_seed, *key))
        return random_stream(seed, stream, campaign_seed, *key)

    monkeypatch.setattr(campaign_module, "random_stream", spy)
    one = simulate_campaign(400, 200, 3, START, NOBODY, 14, replicates=2)
    first, keys[:] = list(keys), []
    simulate_campaign(400, 200, 3, START, NOBODY, 14, replicates=2, after=one)
    assert first == [(CAMPAIGN_STREAM, 0, 0), (CAMPAIGN_STREAM, 0, 1), (FORMAT_STREAM, 0)]
    assert keys == [(CAMPAIGN_STREAM, 0, 0, 2), (CAMPAIGN_STREAM, 0, 1, 2), (FORMAT_STREAM, 0, 2)]


def test_after_must_continue_the_same_log(
    cycles: tuple[Campaign, Campaign],
) -> None:
    one, _ = cycles
    same = {"customers": N2, "days": DAYS2, "seed": SEED2, "start": START, "scores": NOBODY}
    for name, value in [
        ("customers", N2 + 1),
        ("days", DAYS2 - 1),
        ("seed", SEED2 + 1),
        ("start", START + dt.timedelta(days=1)),
    ]:
        with pytest.raises(ValueError, match=f"another log: {name}="):
            simulate_campaign(**(same | {name: value}), horizon_days=7, after=one)
    bare = dataclasses.replace(one, continuation=None)
    with pytest.raises(ValueError, match="no simulator state"):
        simulate_campaign(**same, horizon_days=7, after=bare)
    as_datetime = dt.datetime.combine(START, dt.time())
    chained = simulate_campaign(
        **(same | {"start": as_datetime}), horizon_days=7, replicates=1, after=one
    )
    assert chained.as_of == one.as_of + dt.timedelta(days=H1)
