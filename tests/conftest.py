"""Shared fixtures: small logs, the sample generator's data and the CDNOW log."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
COUNTS_ENV = "CHURNLENS_TEST_COUNTS"


def pytest_configure(config: pytest.Config) -> None:
    # one folder shared by the xdist workers (they inherit the environment)
    if COUNTS_ENV not in os.environ:
        os.environ[COUNTS_ENV] = tempfile.mkdtemp(prefix="churnlens-counts-")


def record_count(kind: str, n: int) -> None:
    """Add ``n`` to a count shown at the end of the test run (fuzz cases, faults)."""
    folder = Path(os.environ[COUNTS_ENV])
    (folder / f"{uuid.uuid4().hex}.json").write_text(json.dumps({"kind": kind, "n": n}))


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    folder = Path(os.environ.get(COUNTS_ENV, ""))
    if not folder.is_dir():
        return
    totals: dict[str, int] = {}
    for file in folder.glob("*.json"):
        item = json.loads(file.read_text())
        totals[item["kind"]] = totals.get(item["kind"], 0) + int(item["n"])
    if totals:
        terminalreporter.section("churnlens guarantees exercised")
        for kind, n in sorted(totals.items()):
            terminalreporter.write_line(f"{kind}: {n:,}")


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
def events_path(sample_events: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample log as a Parquet file."""
    path = tmp_path_factory.mktemp("log") / "events.parquet"
    sample_events.to_parquet(path)
    return path


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
