"""On the real CDNOW log, realised churn rises from active to lost."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from churnlens.config import load_settings
from churnlens.datasets import read_cdnow
from churnlens.events import load_events
from churnlens.features import build_features
from churnlens.features.aggregation import buyer_features
from churnlens.labels import churn_labels
from churnlens.lifecycle import assign_stages, stage_thresholds

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.cdnow


def realised_churn_by_stage(cdnow_path: Path, as_of: date) -> pd.DataFrame:
    settings = load_settings(ROOT / "configs" / "cdnow.yaml")
    table = load_events(read_cdnow(cdnow_path), settings)
    population, buyers = buyer_features(table, as_of)
    X = build_features(table, as_of, settings, population)
    stages = assign_stages(X, as_of, stage_thresholds(buyers["cycle_own_days"], settings))
    churned = pd.Series(1, index=X.index)
    churned[churned.index.isin(churn_labels(table, as_of, 91))] = 0
    frame = pd.DataFrame({"stage": stages["lifecycle_stage"], "churned": churned})
    return frame.groupby("stage", observed=False)["churned"].agg(["size", "mean"])


@pytest.mark.parametrize("as_of", [date(1997, 12, 30), date(1998, 3, 31)])
def test_realised_churn_rises_monotonically_from_active_to_lost(cdnow_path, as_of) -> None:
    rates = realised_churn_by_stage(cdnow_path, as_of)
    ordered = rates.loc[["active", "silent", "sleeping", "lost"]]
    assert (ordered["size"] > 100).all()
    assert ordered["mean"].is_monotonic_increasing
    assert ordered["mean"].diff().dropna().min() > 0.02, ordered
    print(f"\nCDNOW as of {as_of}, 91-day realised churn by stage:\n{rates}")
