"""Uplift: the Qini and uplift curves by hand, their properties, and the per-action uplift
model (DR- and T-learner) on data whose effect depends on one feature."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from churnlens.actions import Policy
from churnlens.errors import ModelError
from churnlens.models.uplift import UpliftModel
from churnlens.models.uplift_calibration import calibration, common_effect, risk_shape, shrunk
from churnlens.ranking import with_ranking
from churnlens.uplift_metrics import (
    auuc,
    qini_at,
    qini_coefficient,
    random_qini,
    ranking_check,
    uplift_curve,
    uplift_plot,
    uplift_summary,
)

# ----------------------------------------------------------------------------- metrics

# Ten customers, given in this (original) order. Sorted by score, highest first, they are
# (rank: group, outcome):
#   1 T 1 | 2 C 0 | 3 T 1 | 4 T 0 | 5 C 1 | 6 T 0 | 7 C 0 | 8 T 1 | 9 C 1 | 10 T 1
# ranks 6 and 7 tie at 0.5: rank 6 (position 1) comes first as it comes first in the input.
SCORE = [0.8, 0.5, 0.95, 0.2, 0.5, 0.9, 0.1, 0.7, 0.3, 0.6]
TREATED = [1, 1, 1, 0, 0, 0, 1, 1, 1, 0]
OUTCOME = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]


def test_curves_by_hand_on_ten_customers() -> None:
    curve = uplift_curve(SCORE, TREATED, OUTCOME)
    assert len(curve) == 11  # the origin and ten cuts
    assert curve["n_t"].tolist() == [0, 1, 1, 2, 3, 3, 4, 4, 5, 5, 6]
    assert curve["n_c"].tolist() == [0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4]
    assert curve["y_t"].tolist() == [0, 1, 1, 2, 2, 2, 2, 2, 3, 3, 4]
    assert curve["y_c"].tolist() == [0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
    # qini(k) = Y_t - Y_c * n_t / n_c (0 while there is no control):
    # k=1: no control -> 0; k=2: 1 - 0 = 1; k=3: 2; k=4: 2; k=5: 2 - 1*3/2 = 0.5;
    # k=6: 2 - 1*4/2 = 0; k=7: 2 - 1*4/3 = 2/3; k=8: 3 - 1*5/3 = 4/3; k=9: 3 - 2*5/4 = 0.5;
    # k=10: 4 - 2*6/4 = 1
    qini = [0, 0, 1, 2, 2, 0.5, 0, 2 / 3, 4 / 3, 0.5, 1]
    assert curve["qini"].to_numpy() == pytest.approx(qini)
    # uplift(k) = (Y_t/n_t - Y_c/n_c) * (n_t + n_c) (0 while a group is empty):
    # k=2: (1 - 0)*2 = 2; k=3: (1 - 0)*3 = 3; k=4: (2/3)*4 = 8/3; k=5: (2/3 - 1/2)*5 = 5/6;
    # k=6: (1/2 - 1/2)*6 = 0; k=7: (1/2 - 1/3)*7 = 7/6; k=8: (3/5 - 1/3)*8 = 32/15;
    # k=9: (3/5 - 1/2)*9 = 0.9; k=10: (4/6 - 2/4)*10 = 5/3
    uplift = [0, 0, 2, 3, 8 / 3, 5 / 6, 0, 7 / 6, 32 / 15, 0.9, 5 / 3]
    assert curve["uplift"].to_numpy() == pytest.approx(uplift)
    assert curve["fraction"].to_numpy() == pytest.approx(np.arange(11) / 10)
    assert curve["qini_random"].to_numpy() == pytest.approx(np.arange(11) / 10 * 1.0)

    # trapezoids 0.1 wide: area = 0.1 * (q1 + ... + q9 + (q0 + q10) / 2)
    # q1..q9 sum to 0 + 1 + 2 + 2 + 0.5 + 0 + 2/3 + 4/3 + 0.5 = 8, so area = 0.1 * 8.5 = 0.85;
    # the random line from (0, 0) to (1, qini(10) = 1) has area 0.5; coefficient 0.35
    assert random_qini(SCORE, TREATED, OUTCOME) == pytest.approx(0.5)
    assert qini_coefficient(SCORE, TREATED, OUTCOME) == pytest.approx(0.35)
    # uplift area = 0.1 * (u1 + ... + u9 + (u0 + u10) / 2)
    #   u1..u9 = 0 + 2 + 3 + 8/3 + 5/6 + 0 + 7/6 + 32/15 + 0.9 = 12.7; (0 + 5/3) / 2 = 5/6
    #   area = 0.1 * (12.7 + 5/6) = 1.353333..., AUUC = area / N = 0.1353333...
    assert auuc(SCORE, TREATED, OUTCOME) == pytest.approx(0.1 * (12.7 + 5 / 6) / 10)
    summary = uplift_summary(SCORE, TREATED, OUTCOME)
    assert summary["auuc_random"] == pytest.approx((5 / 3) / 2 / 10)  # uplift(N) / (2N)
    assert summary["incremental"] == pytest.approx(1.0)
    # the top 30 %: k = 3, qini(3) = 2; the top 25 %: 2.5 rounds half up to k = 3
    assert qini_at(SCORE, TREATED, OUTCOME, 0.3) == pytest.approx(2.0)
    assert qini_at(SCORE, TREATED, OUTCOME, 0.25) == pytest.approx(2.0)
    assert qini_at(SCORE, TREATED, OUTCOME, 0.0) == 0.0
    assert qini_at(SCORE, TREATED, OUTCOME, 1.0) == pytest.approx(1.0)


def test_ties_keep_the_original_order() -> None:
    # move rank 7 (a control, no purchase) before rank 6 (treated, no purchase) in the
    # input: at k = 6 there are now 3 treated with 2 buyers and 3 controls with 1 buyer,
    # qini(6) = 2 - 1*3/3 = 1 instead of 0
    order = [0, 4, 2, 3, 1, 5, 6, 7, 8, 9]
    swapped = uplift_curve(*(np.asarray(a)[order] for a in (SCORE, TREATED, OUTCOME)))
    assert swapped["qini"].iloc[6] == pytest.approx(1.0)
    assert uplift_curve(SCORE, TREATED, OUTCOME)["qini"].iloc[6] == pytest.approx(0.0)


def _experiment(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The true uplift (+0.3 or -0.1), randomised treatment and the outcome."""
    rng = np.random.default_rng(seed)
    tau = np.where(rng.random(n) < 0.5, 0.3, -0.1)
    treated = rng.random(n) < 0.5
    outcome = (rng.random(n) < 0.3 + treated * tau).astype(int)
    return tau, treated, outcome


def test_a_perfect_ranking_beats_random_and_its_reverse_loses() -> None:
    tau, treated, outcome = _experiment(20_000, 1)
    model = qini_coefficient(tau, treated, outcome)
    assert model > 0
    assert model + random_qini(tau, treated, outcome) > random_qini(tau, treated, outcome)
    s = uplift_summary(tau, treated, outcome)
    assert s["auuc"] > s["auuc_random"]
    assert qini_coefficient(-tau, treated, outcome) < 0
    # a ranking unrelated to the effect stays close to random
    noise = np.random.default_rng(2).random(len(tau))
    assert abs(qini_coefficient(noise, treated, outcome)) < model / 4


def test_a_monotone_transform_of_the_score_changes_nothing() -> None:
    tau, treated, outcome = _experiment(5_000, 3)
    score = tau + np.random.default_rng(4).normal(0, 0.2, len(tau))
    transformed = np.exp(3 * score) + 5  # strictly increasing
    pd.testing.assert_frame_equal(
        uplift_curve(score, treated, outcome), uplift_curve(transformed, treated, outcome)
    )
    assert qini_coefficient(transformed, treated, outcome) == qini_coefficient(
        score, treated, outcome
    )
    assert auuc(transformed, treated, outcome) == auuc(score, treated, outcome)


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="length"):
        uplift_curve([1, 2], [True], [0, 1])
    with pytest.raises(ValueError, match="no customers"):
        uplift_curve([], [], [])
    with pytest.raises(ValueError, match="NaN"):
        uplift_curve([np.nan], [True], [1])
    with pytest.raises(ValueError, match="outcome"):
        uplift_curve([1.0], [True], [np.nan])
    # infinite scores rank first or last
    ranked = uplift_curve([-np.inf, 0.0, np.inf], [True, False, True], [0, 1, 1])
    assert ranked["y_t"].tolist() == [0, 1, 1, 1]
    with pytest.raises(ValueError, match="fraction"):
        qini_at(SCORE, TREATED, OUTCOME, 1.5)


def test_uplift_plot_draws_each_ranking_and_the_random_line() -> None:
    curves = {
        "model": uplift_curve(SCORE, TREATED, OUTCOME),
        "reversed": uplift_curve(-np.asarray(SCORE), TREATED, OUTCOME),
    }
    fig = uplift_plot(curves, "Qini: nurture")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ["model", "reversed", "random"]
    assert ax.get_title() == "Qini: nurture"
    fig.savefig(io.BytesIO(), format="png")


# ------------------------------------------------------------------------------- model

FEATURES = ["x1", "x2", "x3", "x4", "x5"]


def _customers(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """x1 > 0: treatment adds 0.3 to P(buy), else takes 0.1 off; x2 moves the baseline;
    x3..x5 are noise. Treated with probability 0.7."""
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(rng.normal(size=(n, len(FEATURES))), columns=FEATURES)
    X.index = pd.Index([f"c{seed}-{i}" for i in range(n)], name="customer_id")
    tau = np.where(X["x1"] > 0, 0.3, -0.1)
    treated = rng.random(n) < 0.7
    p = 0.3 + 0.2 * (X["x2"].to_numpy() > 0) + treated * tau
    outcome = (rng.random(n) < p).astype(int)
    return X, treated, outcome, tau


def _training(seed: int = 1) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """4,000 nurture customers (P(treated) = 0.7) and 300 of a winback offer with only 5
    controls."""
    X, treated, outcome, _ = _customers(4_000, seed)
    Xw, tw, yw, _ = _customers(300, seed + 1000)
    tw = np.arange(300) >= 5  # the first 5 are the controls
    action = np.array(["nurture"] * 4_000 + ["vip_winback_offer"] * 300, dtype=object)
    propensity = np.r_[np.full(4_000, 0.7), np.full(300, 0.96)]
    return (
        pd.concat([X, Xw]),
        action,
        np.r_[treated, tw],
        np.r_[outcome, yw],
        propensity,
    )


def _fit(learner: str, seed: int = 7) -> UpliftModel:
    return UpliftModel(learner=learner, n_estimators=80, seed=seed).fit(*_training())


@pytest.fixture(scope="module", params=["dr", "t"])
def fitted(request: pytest.FixtureRequest) -> UpliftModel:
    return _fit(request.param)


def test_learns_an_effect_that_depends_on_one_feature(fitted: UpliftModel) -> None:
    X, _, _, tau = _customers(3_000, 99)  # fresh customers
    u = fitted.predict_uplift(X)["uplift_nurture"].to_numpy()
    assert u[tau > 0].mean() > 0.15
    assert u[tau < 0].mean() < 0
    assert (np.sign(u) == np.sign(tau)).mean() > 0.75
    assert np.corrcoef(u, tau)[0, 1] > 0.6
    assert u.min() >= -1 and u.max() <= 1


def test_out_of_fold_qini_beats_random(fitted: UpliftModel) -> None:
    ev = fitted.evaluation_["nurture"]
    assert ev["qini"] > 0
    assert ev["auuc"] > ev["auuc_random"]
    assert ev["rows"] == ev["treated"] + ev["control"] == 4_000
    assert ev["propensity"] == pytest.approx(0.7)
    assert fitted.validation_score(pd.DataFrame()) == pytest.approx(ev["qini"])
    oof = fitted.oof_uplift_
    assert oof.iloc[:4_000].notna().all() and oof.iloc[4_000:].isna().all()
    # the out-of-fold uplift ranks the held-out customers: the x1 > 0 half scores higher
    X = _training()[0].iloc[:4_000]
    assert oof.iloc[:4_000][X["x1"] > 0].mean() > oof.iloc[:4_000][X["x1"] <= 0].mean()
    curve = fitted.curves_["nurture"]
    assert curve["fraction"].iloc[0] == 0 and curve["fraction"].iloc[-1] == 1
    assert len(curve) == 101


def test_an_action_with_too_few_controls_is_skipped_with_the_counts(
    fitted: UpliftModel,
) -> None:
    assert fitted.skipped_ == {"vip_winback_offer": "5 controls, needs 10"}
    assert list(fitted.models_) == ["nurture"]
    X = _customers(10, 5)[0]
    # the skipped action's customers get the prior: with one action, its own shrunk effect
    columns = fitted.predict_columns(X, num_threads=2)
    assert list(columns.columns) == ["uplift_nurture", "uplift__prior"]
    assert fitted.prior_["ate"] == pytest.approx(fitted.models_["nurture"]["ate"])
    meta = fitted.metadata()
    json.dumps(meta)  # a manifest can record it
    assert meta["kind"] == "uplift" and meta["features"] == FEATURES
    assert meta["actions"] == ["nurture"]
    assert meta["skipped"] == {"vip_winback_offer": "5 controls, needs 10"}
    assert meta["evaluation"]["nurture"]["qini"] == fitted.evaluation_["nurture"]["qini"]
    treated_short = UpliftModel(min_treated=5_000, n_estimators=5).fit(*_training())
    assert treated_short.skipped_["nurture"].endswith("treated, needs 5000")
    assert treated_short.validation_score(pd.DataFrame()) is None


def test_a_model_that_learned_no_action_saves_and_loads(tmp_path: Path) -> None:
    """A first campaign too small for any action still gives a bundle scoring can load
    (it adds no uplift column)."""
    empty = UpliftModel(min_treated=5_000, n_estimators=5).fit(*_training())
    assert not empty.models_
    files = empty.save(tmp_path)
    loaded = UpliftModel.load({f: (tmp_path / f).read_bytes() for f in files}, empty.metadata())
    assert loaded.predict_columns(_customers(5, 6)[0]).columns.tolist() == []


def test_save_and_load_give_identical_predictions(fitted: UpliftModel, tmp_path: Path) -> None:
    files = fitted.save(tmp_path)
    loaded = UpliftModel.load({f: (tmp_path / f).read_bytes() for f in files}, fitted.metadata())
    assert files[:2] == ["model.json", "arrays.npz"]
    assert all(f.startswith("booster-") and f.endswith(".txt") for f in files[2:])
    X = _customers(500, 11)[0]
    pd.testing.assert_frame_equal(loaded.predict_columns(X), fitted.predict_columns(X))


def test_a_model_saved_before_the_calibrated_learner_is_refused(
    fitted: UpliftModel, tmp_path: Path
) -> None:
    """An uplift bundle of the per-action learners (no average effect, no pooled outcome
    models) says to refit rather than predicting with missing parts."""
    old = copy.deepcopy(fitted)
    old.models_ = {name: {"tau": 0.0} for name in old.models_}
    files = old.save(tmp_path)
    with pytest.raises(ModelError, match="fitted by an earlier churnlens"):
        UpliftModel.load({f: (tmp_path / f).read_bytes() for f in files}, old.metadata())


def test_the_same_seed_gives_the_same_model() -> None:
    X = _customers(200, 12)[0]

    def fit(seed: int) -> UpliftModel:  # small: determinism needs no accuracy
        return UpliftModel(learner="dr", n_estimators=15, seed=seed).fit(*_training())

    a, b = fit(3), fit(3)
    pd.testing.assert_series_equal(a.oof_uplift_, b.oof_uplift_)
    pd.testing.assert_frame_equal(a.predict_uplift(X), b.predict_uplift(X))
    assert a.evaluation_ == b.evaluation_
    other = fit(4).predict_uplift(X)
    assert not np.allclose(other.to_numpy(), a.predict_uplift(X).to_numpy())
    # on one thread or two alike (small: OpenMP threads crawl on shared cores)
    one, two = (
        UpliftModel(n_estimators=10, seed=3).fit(*_training(), num_threads=threads)
        for threads in (1, 2)
    )
    pd.testing.assert_frame_equal(one.predict_uplift(X), two.predict_uplift(X, num_threads=2))


def test_columns_without_a_model_and_with_missing_features() -> None:
    index = pd.Index(["a", "b"], name="customer_id")
    empty = UpliftModel.empty_columns(index)
    assert empty.columns.empty and empty.index.equals(index)
    model = UpliftModel(n_estimators=5, min_treated=10, min_control=10).fit(*_training())
    with pytest.raises(ModelError, match="lacks 1 feature"):
        model.predict_uplift(_customers(5, 1)[0].drop(columns="x3"))
    with pytest.raises(ModelError, match="learner"):
        UpliftModel(learner="x").fit(*_training())
    X, action, treated, outcome, _ = _training()
    with pytest.raises(ModelError, match="propensity"):
        UpliftModel().fit(X, action, treated, outcome, 1.0)


# ------------------------------------------------------------------------- calibration


def test_shrinkage_and_calibration_by_hand() -> None:
    assert shrunk(0.1, 0.05) == pytest.approx(0.1 * (1 - 0.25))
    assert shrunk(-0.1, 0.05) == pytest.approx(-0.075)
    assert shrunk(0.1, 0.2) == 0.0 and shrunk(0.0, 0.1) == 0.0
    phi = np.array([1.0, -1.0, 3.0, 1.0])
    score = np.array([0.0, 0.0, 2.0, 2.0])
    fitted = calibration(phi, score)
    # ate: mean 1, sd (ddof 1) sqrt(8/3), se = sqrt(8/3) / 2
    assert fitted["ate_raw"] == pytest.approx(1.0)
    assert fitted["ate_se"] == pytest.approx(np.sqrt(8 / 3) / 2)
    assert fitted["ate"] == pytest.approx(1.0 * (1 - (8 / 3) / 4))
    # slope: centred score c = (-1, -1, 1, 1), c.phi - ate = (0 - 2 + 2 + 0) / 4 = 1.0 ... by hand
    c = score - 1.0
    slope = (c @ (phi - 1.0)) / (c @ c)
    assert fitted["slope_raw"] == pytest.approx(slope) == pytest.approx(1.0)
    resid = phi - 1.0 - slope * c  # (1, -1, 1, -1)
    se = np.sqrt(((c * resid) ** 2).sum()) / (c @ c)  # sqrt(4) / 4 = 0.5
    assert fitted["slope_se"] == pytest.approx(se) == pytest.approx(0.5)
    # z = 2: one-sided p = 0.0228, under 5% alone, not over three actions (0.05 / 3)
    assert fitted["slope_p"] == pytest.approx(0.02275, abs=1e-5)
    assert fitted["slope"] == pytest.approx(1.0 * (1 - 0.25))
    assert calibration(phi, score, tests=3)["slope"] == 0.0
    assert fitted["center"] == pytest.approx(1.0)
    # a customer in two campaigns: the standard errors sum within customers first
    grouped = calibration(phi, score, clusters=np.array(["a", "a", "b", "b"]))
    assert grouped["ate_se"] == pytest.approx(np.sqrt((-2) ** 2 + 2**2) / 4)
    terms = np.array([c[0] * resid[0] + c[1] * resid[1], c[2] * resid[2] + c[3] * resid[3]])
    assert grouped["slope_se"] == pytest.approx(np.sqrt((terms**2).sum()) / (c @ c))
    flat = calibration(phi, np.zeros(4))  # a constant score: no slope to estimate
    assert flat["slope"] == 0.0 and flat["slope_raw"] == 0.0 and flat["slope_p"] == 1.0
    json.dumps(flat, allow_nan=False)  # strict JSON in a manifest
    steep = calibration(np.array([0.0, 0.0, 10.0, 10.0]), score)  # slope 5, kept at 1
    assert steep["slope"] == 1.0


def test_the_average_effect_spreads_by_the_room_each_customer_has_for_it() -> None:
    """A contact can raise the chance to buy only of a customer who would not buy
    otherwise: a positive average effect spreads as risk / mean risk, a negative one as
    (1 - risk) / (1 - mean risk); without a risk, or one that cannot carry it, evenly."""
    risk = np.array([0.1, 0.2, 0.6, np.nan])
    assert risk_shape(risk, 0.05, 0.3) == pytest.approx([1 / 3, 2 / 3, 2.0, 1.0])
    assert risk_shape(risk, -0.05, 0.3) == pytest.approx([0.9 / 0.7, 0.8 / 0.7, 0.4 / 0.7, 1])
    assert risk_shape(risk, 0.0, 0.3) == 1.0
    assert risk_shape(None, 0.05, None) == 1.0 and risk_shape(risk, 0.05, None) == 1.0
    assert risk_shape(np.zeros(3), 0.05, 0.0) == 1.0  # nobody at risk: no shape to spread by
    assert risk_shape(np.array([1.5, -0.5]), 0.05, 0.5) == pytest.approx([2.0, 0.0])
    # the slope is fitted to what the shape leaves: phi = ate x shape exactly -> slope 0
    risk = np.array([0.1, 0.3, 0.5, 0.3])  # mean 0.3
    phi = 0.2 * risk / 0.3
    fitted = calibration(phi, np.array([0.0, 1.0, 2.0, 1.0]), risk=risk)
    assert fitted["ate_raw"] == pytest.approx(0.2) and fitted["risk_mean"] == pytest.approx(0.3)
    assert fitted["slope_raw"] == pytest.approx(0.0, abs=1e-12)
    assert fitted["shape_weight_raw"] == pytest.approx(1.0) and fitted["shape_weight"] == 1.0
    # ... while, spread evenly, the same pseudo-outcomes show a slope of 0.2 / 3 per unit
    c = np.array([-1.0, 0.0, 1.0, 0.0])
    assert calibration(phi, c)["slope_raw"] == pytest.approx((c @ (phi - 0.2)) / (c @ c))
    assert calibration(phi, c)["slope_raw"] == pytest.approx(0.2 * 0.4 / 0.3 / 2)
    assert calibration(phi, c)["risk_mean"] is None


def test_the_data_overrule_a_risk_shape_they_contradict() -> None:
    """Lost causes: the customers most at risk leave whatever is done (true uplift
    0.16 x (1 - risk)). The shape, spreading the effect by risk, would rank them first;
    regressed on the pseudo-outcomes its weight falls to 0 and the uplift is the average
    for everyone, no longer ranking against the truth."""
    rng = np.random.default_rng(3)
    n = 8_000
    risk = rng.uniform(0.2, 0.9, n)
    X = pd.DataFrame({"churn_probability": risk, "x1": rng.normal(size=n)})
    treated = rng.random(n) < 0.9
    outcome = (rng.random(n) < 1 - risk + treated * 0.16 * (1 - risk)).astype(int)
    model = UpliftModel(learner="t", n_estimators=60, seed=3)
    model.fit(X, np.full(n, "nurture"), treated, outcome, 0.9)
    fitted = model.evaluation_["nurture"]
    assert fitted["shape_weight_raw"] < 0 and fitted["shape_weight"] == 0.0
    predicted = model.predict_uplift(X)["uplift_nurture"].to_numpy()
    assert np.ptp(predicted) < 1e-12 or np.corrcoef(predicted, 1 - risk)[0, 1] > 0


def test_the_ranking_check_by_hand() -> None:
    """Ten customers, the top 20% (two) by each ranking: incremental value picks rows 0
    and 1 (pseudo-outcomes 1 and 0: 0.5 a contact), value at risk rows 8 and 9 (0 and 0);
    the paired error of the difference sums over the rows only one ranking picks."""
    phi = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    uplift = np.array([0.5, 0.4, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    risk = np.linspace(0.1, 1.0, 10)
    check = ranking_check(phi, uplift, risk, np.ones(10))
    assert check["customers"] == 2
    assert check["incremental_value"] == pytest.approx(0.5) and check["value_at_risk"] == 0.0
    centred = phi - 0.1
    se = np.sqrt(((0.5 * centred[[0, 1]]) ** 2).sum() + ((0.5 * centred[[8, 9]]) ** 2).sum())
    assert check["difference_se"] == pytest.approx(se) and check["ranks_by_increment"]
    # ties of incremental value fall back on value at risk: nothing learned, the same top
    flat = ranking_check(phi, np.zeros(10), risk, np.ones(10))
    assert flat["incremental_value"] == flat["value_at_risk"] and not flat["ranks_by_increment"]
    assert ranking_check(phi, uplift, None, np.ones(10)) is None


def test_auto_ranks_by_value_at_risk_when_the_uplift_ranking_lost_its_check() -> None:
    class Lost:
        def ranks_by_increment(self) -> bool:
            return False

    assert with_ranking(Policy(), Lost()).rank_by == "value_at_risk"
    assert with_ranking(Policy(), True).rank_by == "incremental_value"  # no check recorded
    assert with_ranking(Policy(), Lost(), "incremental_value").rank_by == "incremental_value"
    assert with_ranking(Policy(), None).rank_by == "value_at_risk"


def test_the_prior_of_an_action_without_a_model_by_hand() -> None:
    """What the actions do on average per unit of risk: the precision-weighted mean of
    ate / mean risk, shrunk toward 0 by its own standard error."""
    # per unit of risk (risk means 0.5 and 0.25): theta = (0.2, 0.0), se = (0.02, 0.1)
    got = common_effect(np.array([0.1, 0.0]), np.array([0.01, 0.025]), np.array([0.5, 0.25]))
    w = np.array([1 / 0.02**2, 1 / 0.1**2])  # 2500, 100
    mean, se = (w @ [0.2, 0.0]) / w.sum(), 1 / np.sqrt(w.sum())  # 0.1923, 0.0196
    assert got == pytest.approx(mean * (1 - (se / mean) ** 2))
    # without a churn probability: the raw effects
    assert common_effect(np.array([0.1]), np.array([0.05]), np.array([np.nan])) == (
        pytest.approx(shrunk(0.1, 0.05))
    )
    assert common_effect(np.array([0.01, -0.01]), np.array([0.05, 0.05]), np.ones(2)) == 0.0


def test_an_average_effect_lands_on_the_customers_at_risk() -> None:
    """A contact that wins back a third of the customers who would not buy (true uplift
    risk / 3): with no slope shown on 1,500 customers, the prediction is the average
    effect spread by the risk, so ranking one action's customers by incremental value is
    ranking them by value at risk; without a churn probability, nothing to spread by."""
    rng = np.random.default_rng(0)
    n = 1_500
    risk = rng.beta(2, 3, size=n)
    X = pd.DataFrame({"churn_probability": risk, "noise": rng.normal(size=n)})
    treated = rng.random(n) < 0.5
    outcome = (rng.random(n) < 1 - risk + treated * risk / 3).astype(int)
    action = np.full(n, "nurture")
    model = UpliftModel(learner="t", seed=0).fit(X, action, treated, outcome, 0.5)
    fitted = model.models_["nurture"]
    assert fitted["slope"] == 0.0  # p = 0.33: no heterogeneity shown beyond the risk
    assert fitted["risk_mean"] == pytest.approx(risk.mean())
    predicted = model.predict_uplift(X)["uplift_nurture"].to_numpy()
    assert predicted == pytest.approx(fitted["ate"] * risk / risk.mean())
    assert np.sqrt(np.mean((predicted - risk / 3) ** 2)) < 0.02
    value = rng.lognormal(size=n)
    assert (np.argsort(-predicted * value) == np.argsort(-risk * value)).all()
    renamed = X.rename(columns={"churn_probability": "p"})
    flat = UpliftModel(learner="t", seed=0).fit(renamed, action, treated, outcome, 0.5)
    assert flat.models_["nurture"]["risk_mean"] is None  # spread evenly (its slope may not)


@pytest.mark.parametrize("learner", ["t", "dr"])
def test_without_any_effect_calibration_removes_most_of_the_noise_over_seeds(
    learner: str,
) -> None:
    """Noise does not become a priority: with no effect at all (every true uplift 0), the
    calibrated out-of-fold uplift is far closer to 0 than the raw ranking score it starts
    from, seed after seed, and nearly every slope is judged noise (0)."""
    calibrated, raw, flat = [], [], 0
    for seed in range(8):
        rng = np.random.default_rng(seed)
        n = 1_500
        X = pd.DataFrame(rng.normal(size=(n, 3)), columns=["x1", "x2", "x3"])
        treated = rng.random(n) < 0.5
        outcome = (rng.random(n) < 0.3 + 0.2 * (X["x2"] > 0)).astype(int)
        action = np.where(np.arange(n) < 1_000, "nurture", "vip_care")
        model = UpliftModel(learner=learner, seed=seed).fit(X, action, treated, outcome, 0.5)
        calibrated.append(float(np.mean(model.oof_uplift_**2)))
        raw.append(float(np.mean(model.oof_score_**2)))
        flat += sum(m["slope"] == 0.0 for m in model.models_.values())
    ratio = np.sqrt(np.array(calibrated) / np.array(raw))
    assert ratio.max() <= 0.7 and np.sqrt(np.mean(calibrated) / np.mean(raw)) <= 0.45
    # of 16 actions; without the heterogeneity test 13 (T) and 9 (DR) of them
    assert flat >= {"t": 14, "dr": 12}[learner]


def test_predictions_are_the_calibrated_refitted_score_centred_on_the_training_rows(
    fitted: UpliftModel,
) -> None:
    """uplift = ate + slope x (score - centre), the centre the refitted score's mean over
    the action's training rows: their mean predicted uplift is the average effect."""
    X = _training()[0].iloc[:4_000]
    u = fitted.predict_uplift(X)["uplift_nurture"]
    model = fitted.models_["nurture"]
    assert model["slope"] > 0  # the effect depends on x1: a real slope
    assert u.mean() == pytest.approx(model["ate"], abs=1e-9)


def test_actions_named_by_numbers_are_learned_under_their_names() -> None:
    X, treated, outcome, _ = _customers(1_200, 3)
    action = np.where(np.arange(1_200) < 600, 1, 2)  # ids, not words
    model = UpliftModel(n_estimators=10).fit(X, action, treated, outcome, 0.7)
    assert list(model.models_) == ["1", "2"] and not model.skipped_
    assert list(model.predict_uplift(X).columns) == ["uplift_1", "uplift_2", "uplift__prior"]


def test_a_customer_in_two_campaigns_keeps_one_fold() -> None:
    """Stacked campaigns: a customer's rows are never split between fitting and
    evaluation. Each customer here appears twice with the same row: with their rows in
    one fold, both get the same out-of-fold score from the same models; split at random
    between folds, they would not."""
    X, treated, outcome, _ = _customers(800, 4)
    customers = np.r_[np.arange(800), np.arange(800)].astype(str)
    stacked = (pd.concat([X, X]), np.r_[["nurture"] * 1_600], np.r_[treated, treated],
               np.r_[outcome, outcome], 0.7)  # fmt: skip
    grouped = UpliftModel(n_estimators=10).fit(*stacked, groups=customers)
    score = grouped.oof_score_.to_numpy()
    assert np.array_equal(score[:800], score[800:])
    assert grouped.evaluation_["nurture"]["rows"] == 1_600
    apart = UpliftModel(n_estimators=10).fit(*stacked).oof_score_.to_numpy()
    assert not np.array_equal(apart[:800], apart[800:])
