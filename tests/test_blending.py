"""Choosing the churn model's blend of trees and logistic RFM, and its calibration, out of
time: the baseline's own log-odds at weight 0, the baseline picked (or a blend no worse)
where it is truly best, the earlier guard snapshot in the choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import _SigmoidCalibration
from sklearn.metrics import log_loss

from churnlens.models.blending import Snapshot, choose, cross_fitted, fit_sigmoid
from churnlens.models.churn import RFM_COLUMNS, ChurnModel, logistic_rfm_baseline
from churnlens.models.fitting import time_split


def _snapshots(days: int, n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Snapshots where churn is exactly logistic in log recency and log frequency (the
    baseline's own form), plus five noise columns the trees can overfit."""
    rng = np.random.default_rng(seed)
    frames, labels = [], []
    for d in range(days):
        recency = rng.gamma(2.0, 60.0, n)
        frequency = rng.poisson(3.0, n)
        frame = pd.DataFrame(
            {
                "rfm_recency_days": recency,
                "freq_tenure_days": recency + rng.gamma(2.0, 100.0, n),
                "rfm_frequency": frequency.astype(float),
                "rfm_monetary_total": frequency * rng.gamma(3.0, 20.0, n),
                **{f"noise_{j}": rng.normal(size=n) for j in range(5)},
            },
            index=pd.MultiIndex.from_arrays(
                [
                    np.full(n, pd.Timestamp("2024-01-01") + pd.Timedelta(days=30 * d)),
                    [f"c{d}-{i}" for i in range(n)],
                ],
                names=["as_of", "customer_id"],
            ),
        )
        logit = 0.012 * (recency - 120) - 0.35 * (frequency - 3)
        labels.append((rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int))
        frames.append(frame)
    return pd.concat(frames), np.concatenate(labels)


def test_at_weight_zero_the_model_is_the_logistic_baseline_exactly() -> None:
    X, y = _snapshots(3, 800, 1)
    model = ChurnModel(n_estimators=30, min_child_samples=20, calibration="none",
                       tree_weights=(0.0,)).fit(X, y)  # fmt: skip
    assert model.tree_weight_ == 0.0
    baseline = logistic_rfm_baseline().fit(X, y)
    np.testing.assert_allclose(
        model.predict_proba(X)[:, 1], baseline.predict_proba(X)[:, 1], rtol=1e-9, atol=1e-12
    )
    assert list(RFM_COLUMNS) == list(X.columns[:4])


def test_where_logistic_is_truly_best_the_choice_never_loses_to_it() -> None:
    """Deep trees on noise lose to the true (logistic) model; the chosen blend must not be
    worse than the baseline on the validation snapshot, out of sample."""
    X, y = _snapshots(4, 1500, 2)
    model = ChurnModel(n_estimators=300, learning_rate=0.1, num_leaves=63,
                       min_child_samples=5, reg_lambda=0.0).fit(X, y)  # fmt: skip
    train, valid = time_split(X)
    baseline = logistic_rfm_baseline().fit(X[train], y[train]).predict_proba(X[valid])[:, 1]
    chosen = log_loss(y[valid], model.validation_scores_)
    full_trees = model.selection_.query("weight == 1.0")["log_loss_validation"].min()
    assert model.tree_weight_ <= 0.5
    assert chosen <= log_loss(y[valid], baseline) + 0.002
    assert chosen < full_trees
    # the guard: an earlier snapshot scored by a model fitted before it
    assert {"log_loss_validation", "log_loss_guard", "mean"} <= set(model.selection_.columns)
    assert model.validation_["guard_rows"] == 1500


def test_the_choice_minimises_the_mean_over_both_snapshots_by_hand() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(400) < 0.4).astype(int)
    offset = np.where(y == 1, 0.5, -0.5) + rng.normal(0, 1, 400)
    noise = rng.normal(0, 3, 400)  # trees that only add noise
    first = Snapshot(offset, noise, y)
    second = Snapshot(offset[::-1].copy(), noise, y[::-1].copy())
    choice = choose([first, second], (0.0, 0.5, 1.0), ("none",), seed=0)
    table = choice.table.set_index("weight")
    for w in (0.0, 0.5, 1.0):
        expected = np.mean(
            [
                log_loss(
                    s.y,
                    np.clip(cross_fitted("none", s.offset + w * s.trees, s.y, 0), 1e-6, 1 - 1e-6),
                )
                for s in (first, second)
            ]
        )
        assert table.loc[w, "mean"] == pytest.approx(expected)
    assert choice.weight == 0.0 and choice.method == "none"


def test_cross_fitted_calibration_never_sees_the_row_it_scores() -> None:
    y = np.array([0, 1] * 50)
    log_odds = np.where(y == 1, 1.0, -1.0)
    # isotonic on a perfectly separated score: each half is calibrated by the other half
    p = cross_fitted("isotonic", log_odds, y, seed=0)
    assert ((p > 0.5) == (y == 1)).all()
    flipped = y.copy()
    flipped[0] = 1 - flipped[0]  # one label changed moves only the other half's scores
    q = cross_fitted("isotonic", log_odds, flipped, seed=0)
    half = np.random.default_rng(0).permutation(len(y)) % 2 == 0
    same_half = half == half[0]
    np.testing.assert_array_equal(p[same_half], q[same_half])


@pytest.mark.parametrize("seed", range(12))
def test_the_sigmoid_fit_is_scikit_learns_platt_fit(seed: int) -> None:
    """Oracle: scikit-learn's own Platt fit (L-BFGS on the same prior-smoothed targets);
    Newton's method reaches the same optimum, on easy, skewed, separable and huge scores."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 30_000))
    f = rng.normal(rng.normal(0, 2), rng.uniform(0.1, 8), n)
    if seed == 0:  # separable, and far beyond sklearn's rescaling threshold of 30
        f = np.sign(f) * (np.abs(f) + 1) * 40
    y = (rng.random(n) < 1 / (1 + np.exp(-(rng.normal() * f + rng.normal())))).astype(int)
    if seed == 1:
        y = (f > np.median(f)).astype(int)
    if seed == 2:
        f = np.full(n, 1.5)  # one score for everybody: only the intercept can move
    ours, theirs = fit_sigmoid(f, y), _SigmoidCalibration().fit(f, y)
    # (with one score, only the probability at that score is identified)
    grid = np.linspace(f.min() - 1, f.max() + 1, 101) if seed != 2 else f[:1]
    assert np.abs(ours.predict(grid) - theirs.predict(grid)).max() < 1e-6


def test_keep_level_keeps_the_slope_and_matches_the_labels_mean_by_hand() -> None:
    from sklearn.isotonic import IsotonicRegression

    from churnlens.models.blending import keep_level

    calibrator = _SigmoidCalibration()
    calibrator.a_, calibrator.b_ = -0.8, 0.4  # p = expit(0.8 f - 0.4)
    f = np.array([-2.0, -1.0, 0.0, 1.0, 3.0])
    y = np.array([0, 0, 1, 1, 1])  # mean 0.6
    kept = keep_level(calibrator, f, y)
    assert kept.a_ == -0.8 and kept is not calibrator and calibrator.b_ == 0.4
    assert kept.predict(f).mean() == pytest.approx(0.6, abs=1e-10)
    # by hand: the intercept b solving mean(expit(0.8 f - b)) = 0.6
    grid = np.linspace(-3, 3, 600_001)
    means = (1 / (1 + np.exp(-(0.8 * f[:, None] - grid[None, :])))).mean(axis=0)
    assert kept.b_ == pytest.approx(grid[np.argmin(np.abs(means - 0.6))], abs=2e-5)
    assert kept.b_ == pytest.approx(-0.4645, abs=1e-4)
    # the calibration's other forms, and labels of one class, are left as they are
    isotonic = IsotonicRegression().fit(f, y)
    assert keep_level(isotonic, f, y) is isotonic and keep_level(None, f, y) is None
    assert keep_level(calibrator, f, np.ones(5)) is calibrator


def test_a_sigmoid_calibrated_model_keeps_the_pooled_snapshots_level() -> None:
    """The slope comes from the validation snapshot; the level is that of the final
    model's own training rows, as a logistic regression on them has it: its mean
    probability over them is their churn rate (the validation snapshot's is not)."""
    X, y = _snapshots(4, 800, 5)
    y = y.copy()
    last = X.index.get_level_values("as_of") == X.index.get_level_values("as_of").max()
    flip = np.flatnonzero(last & (y == 0))[:150]
    y[flip] = 1  # a later period churns more: the validation snapshot's level differs
    model = ChurnModel(n_estimators=40, min_child_samples=20, calibration="sigmoid").fit(X, y)
    assert model.calibration_method_ == "sigmoid"
    assert model.predict_proba(X)[:, 1].mean() == pytest.approx(y.mean(), abs=1e-9)
    assert abs(model.predict_proba(X[last])[:, 1].mean() - y[last].mean()) > 0.02
