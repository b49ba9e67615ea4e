"""Path attributions: exact in total, close to SHAP in what they rank first."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from churnlens.models.attribution import PathExplainer


@pytest.fixture(scope="module")
def fitted() -> tuple[lgb.Booster, pd.DataFrame]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(3000, 6)), columns=[f"x{i}" for i in range(6)])
    X.iloc[::7, 2] = np.nan
    logit = 2 * X["x0"] - X["x1"] + 0.5 * X["x3"] * X["x4"]
    y = (rng.random(3000) < 1 / (1 + np.exp(-logit))).astype(int)
    model = lgb.LGBMClassifier(n_estimators=60, num_leaves=7, verbose=-1, n_jobs=1)
    return model.fit(X, y).booster_, X


def test_contributions_add_up_to_the_raw_score(fitted) -> None:
    booster, X = fitted
    explainer = PathExplainer.from_booster(booster)
    contrib, raw = explainer.explain(booster, X)
    np.testing.assert_allclose(raw, booster.predict(X, raw_score=True), atol=1e-12)
    np.testing.assert_allclose(explainer.bias + contrib.sum(axis=1, dtype=float), raw, atol=1e-5)


def test_unused_features_get_nothing_and_the_strongest_ranks_first(fitted) -> None:
    booster, X = fitted
    contrib, _ = PathExplainer.from_booster(booster).explain(booster, X)
    shap = booster.predict(X, pred_contrib=True)[:, :-1]
    assert np.all(contrib[:, 5] == 0) == np.all(shap[:, 5] == 0)
    mean_abs = np.abs(contrib).mean(axis=0)
    assert mean_abs.argmax() == 0
    agree = (np.abs(contrib).argmax(axis=1) == np.abs(shap).argmax(axis=1)).mean()
    assert agree > 0.8


def test_a_one_leaf_tree_only_adds_to_the_bias() -> None:
    X = pd.DataFrame({"a": np.arange(50.0)})
    y = np.r_[np.zeros(25), np.ones(25)].astype(int)
    booster = lgb.LGBMClassifier(n_estimators=3, min_child_samples=100, verbose=-1).fit(X, y)
    explainer = PathExplainer.from_booster(booster.booster_)
    contrib, raw = explainer.explain(booster.booster_, X)
    assert np.all(contrib == 0)
    np.testing.assert_allclose(raw, explainer.bias)
