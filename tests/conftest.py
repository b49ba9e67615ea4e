"""Shared fixtures: small logs, the sample generator's data and the CDNOW log, one trained
churn model (and segments) on the sample log, and a private MLflow store per test.

Shared fixtures are built once per session (once per xdist worker) and are read-only:
a test that changes a bundle works on a copy (``shutil.copytree``).

Markers: ``slow`` marks the end-to-end tests that take more than a few seconds (the kill
tests, the CDNOW backtest, concurrent and repeated tracked trainings, the demo, Spark
against a JVM, and the notebooks, marked by :func:`pytest_collection_modifyitems`).
``make test`` runs them all, slow ones first so that the two workers finish together;
``pytest -m "not slow"`` is the quick loop while working.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from churnlens import Settings
from churnlens.config import ModelSettings, TrainingSettings

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


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the notebooks (collected by nbmake) run every step of the library end to end
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.slow)
    # the slow tests first (in collection order), so that with -n 2 the short ones fill
    # in at the end instead of one worker finishing a long test alone
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.hookimpl(tryfirst=True)  # before an xdist worker sends the node ids it collected
def pytest_collection_finish(session: pytest.Session) -> None:
    _keep_xdist_groups(session.config, session.items)


def _keep_xdist_groups(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With ``--dist loadgroup`` pytest-xdist sends the tests of one ``xdist_group`` to
    one worker by appending ``@group`` to their node ids; since pytest 9.2 node ids are
    structured and the suffix xdist 3.8 sets is lost (pytest-dev/pytest-xdist#1386), so
    the Spark tests were spread over both workers, each starting its own JVM. Set the
    suffix where pytest keeps the node id (nothing to do once xdist sets it itself)."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist's workers only
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest < 9.2: xdist's suffix works
        return
    for item in items:
        names = {
            str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
            for mark in item.iter_markers("xdist_group")
        }
        suffix = "@" + "_".join(sorted(names))
        if names and not item.nodeid.endswith(suffix) and hasattr(item, "_id"):
            item._id = NodeId.parse(item.nodeid + suffix)


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
# small, fast settings for the models trained on the sample log
SETTINGS = Settings(
    training=TrainingSettings(horizon_days=60, snapshot_step_days=60, min_history_days=60),
    model=ModelSettings(n_estimators=80, min_child_samples=40),
)
AS_OF = "2025-02-03"  # the sample log's last day


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
def sample_log_path(sample_events: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample log as a Parquet file (under a name no module overrides)."""
    path = tmp_path_factory.mktemp("log") / "events.parquet"
    sample_events.to_parquet(path)
    return path


@pytest.fixture(scope="session")
def events_path(sample_log_path: Path) -> Path:
    """The sample log as a Parquet file."""
    return sample_log_path


@pytest.fixture(scope="session")
def churn_bundle(sample_log_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The churn bundle ``train`` writes for the sample log as of ``AS_OF`` with
    ``SETTINGS``, in a folder of its own with whatever else the training writes there
    (no segments). Shared: never write into this folder; copy it."""
    from churnlens.training import train

    trained = train(sample_log_path, AS_OF, SETTINGS, tmp_path_factory.mktemp("trained"))
    assert trained.bundle is not None
    return trained.bundle


@pytest.fixture(scope="session")
def trained_bundles(
    churn_bundle: Path, sample_log_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """The churn and segments bundles of ``train`` then ``segment`` (k=3) into one folder
    (scoring finds the segments beside the churn model): a copy of ``churn_bundle``'s
    folder, segmented. Shared: never write into this folder; copy it."""
    from churnlens.segmenting import segment

    folder = tmp_path_factory.mktemp("models")
    shutil.copytree(churn_bundle.parent, folder, dirs_exist_ok=True)
    segments = segment(sample_log_path, AS_OF, SETTINGS, folder, k=3)
    assert segments.bundle is not None
    return folder / churn_bundle.name, segments.bundle


@pytest.fixture(scope="session")
def cdnow_path() -> Path:
    if not CDNOW_PATH.exists():
        pytest.fail(f"{CDNOW_PATH} is missing: run `make data` to fetch it")
    return CDNOW_PATH


@pytest.fixture(scope="session")
def _mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow store whose schema is made (the migrations take seconds), once."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "template.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()  # makes the schema
    return path


@pytest.fixture(autouse=True)
def _private_mlflow_store(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _mlflow_template: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Path]:
    """Every test gets its own MLflow store: a copy of the empty template, with its runs
    and artifacts in a folder of its own (beside tmp_path, which stays as the test left
    it). A copy that was never written is removed after the test."""
    name = re.sub(r"\W", "_", request.node.name)[:30]
    db = tmp_path_factory.mktemp(f"mlflow-{name}") / "mlflow.db"
    shutil.copyfile(_mlflow_template, db)
    copied = db.stat()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    yield db
    with contextlib.suppress(OSError):
        now = db.stat()
        unused = [p.name for p in db.parent.iterdir()] == [db.name] and (
            (now.st_size, now.st_mtime_ns) == (copied.st_size, copied.st_mtime_ns)
        )
        if unused:  # keep only the stores a test wrote to, to look at
            shutil.rmtree(db.parent)
