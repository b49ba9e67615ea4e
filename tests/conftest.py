"""Shared fixtures: small logs, the sample generator's data and the CDNOW log."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
CDNOW_PATH = ROOT / "data" / "external" / "CDNOW_master.txt"


def make_log(rows: list[tuple]) -> pd.DataFrame:
    """A canonical frame from (customer, timestamp, channel, event_type, amount[, dir])."""
    records = [
        {
            "customer_id": r[0],
            "timestamp": pd.Timestamp(r[1]),
            "channel": r[2],
            "event_type": r[3],
            "amount": float(r[4]) if len(r) > 4 else 0.0,
            "direction": r[5] if len(r) > 5 else None,
            "duration_s": float("nan"),
        }
        for r in rows
    ]
    frame = pd.DataFrame.from_records(records)
    frame["timestamp"] = frame["timestamp"].astype("datetime64[us]")
    return frame


@pytest.fixture(scope="session")
def sample_events() -> pd.DataFrame:
    from churnlens.sample import generate_events

    return generate_events(customers=400, days=400, seed=11, start=date(2024, 1, 1))


@pytest.fixture(scope="session")
def cdnow_path() -> Path:
    if not CDNOW_PATH.exists():
        pytest.fail(f"{CDNOW_PATH} is missing: run `make data` to fetch it")
    return CDNOW_PATH


@pytest.fixture(autouse=True)
def _private_mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own MLflow store (runs and artifacts under tmp_path)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return tmp_path / "mlflow.db"
