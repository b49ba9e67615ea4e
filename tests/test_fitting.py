"""Fitting on stacked snapshots: the row cap by whole customers, fits side by side."""

from __future__ import annotations

import threading
from datetime import date

import numpy as np
import pandas as pd
import pytest

from churnlens import ModelError, Settings
from churnlens.config import ModelSettings, TrainingSettings
from churnlens.labels import make_snapshots
from churnlens.models.churn import ChurnModel
from churnlens.models.fitting import (
    Background,
    cap_rows,
    customer_buckets,
    customer_ids,
    side_by_side,
)

SETTINGS = Settings(
    training=TrainingSettings(horizon_days=60, snapshot_step_days=60, min_history_days=60),
    model=ModelSettings(n_estimators=40, min_child_samples=40),
)
DAYS = [date(2024, 5, 2), date(2024, 7, 1), date(2024, 8, 30), date(2024, 10, 29)]


@pytest.fixture(scope="module")
def snaps(sample_events: pd.DataFrame):
    return make_snapshots(sample_events, DAYS, SETTINGS)


def test_side_by_side_gives_each_result_by_name_and_runs_in_threads() -> None:
    seen: dict[str, str] = {}

    def task(name: str, value: int):
        def run() -> int:
            seen[name] = threading.current_thread().name
            return value * value

        return run

    out = side_by_side({name: task(name, i) for i, name in enumerate("abcde")})
    assert out == {"a": 0, "b": 1, "c": 4, "d": 9, "e": 16}
    assert list(out) == list("abcde")
    assert set(seen) == set("abcde")


def test_side_by_side_raises_a_tasks_exception() -> None:
    def fails() -> int:
        raise ValueError("task b failed")

    with pytest.raises(ValueError, match="task b failed"):
        side_by_side({"a": lambda: 1, "b": fails})


def test_the_churn_model_is_the_same_fitted_side_by_side_or_one_after_the_other(
    snaps, monkeypatch: pytest.MonkeyPatch
) -> None:
    import churnlens.models.fitting as fitting

    together = ChurnModel.from_settings(SETTINGS.model, 60).fit(snaps.X, snaps.y)
    monkeypatch.setattr(fitting, "cores", lambda: 1)  # one after the other
    alone = ChurnModel.from_settings(SETTINGS.model, 60).fit(snaps.X, snaps.y)
    assert together.tree_weight_ == alone.tree_weight_
    assert together.calibration_method_ == alone.calibration_method_
    np.testing.assert_array_equal(together.validation_scores_, alone.validation_scores_)
    np.testing.assert_array_equal(together.predict_proba(snaps.X), alone.predict_proba(snaps.X))


def test_beyond_max_rows_each_fit_sees_a_sample_of_whole_customers(snaps) -> None:
    X, y = snaps.X, snaps.y.to_numpy()
    rows = len(X)
    assert rows > 800
    full = ChurnModel.from_settings(SETTINGS.model, 60).fit(X, y)
    within = ChurnModel(**{**SETTINGS.model.model_dump(), "max_rows": rows}, horizon_days=60)
    np.testing.assert_array_equal(within.fit(X, y).predict_proba(X), full.predict_proba(X))
    capped = ChurnModel(**{**SETTINGS.model.model_dump(), "max_rows": 500}, horizon_days=60)
    capped.fit(X, y)
    # the final fit is exactly the booster fitted on the capped customers' rows
    buckets = customer_buckets(customer_ids(X), SETTINGS.model.seed)
    kept = cap_rows(np.ones(rows, dtype=bool), buckets, 500)
    assert 300 <= kept.sum() <= 700
    per_customer = pd.Series(kept).groupby(customer_ids(X)).agg(["min", "max"])
    assert (per_customer["min"] == per_customer["max"]).all()  # all of a customer or none
    alone = capped._booster().fit(X[kept], y[kept])
    np.testing.assert_array_equal(
        capped.booster_.parts(X)[1], alone.parts(X)[1]
    )  # the trees' log-odds
    assert not np.array_equal(capped.predict_proba(X), full.predict_proba(X))
    # the validation snapshot is scored in full
    assert capped.validation_["rows"] == full.validation_["rows"]


def test_a_background_task_gives_its_value_or_its_exception() -> None:
    release = threading.Event()
    waiting = Background(lambda: release.wait(10) and 42)
    assert not waiting.done()
    release.set()
    assert waiting.result() == 42
    assert waiting.done()

    def fails() -> int:
        raise ModelError("too little data to train")

    with pytest.raises(ModelError, match="too little data"):
        Background(fails).result()
