"""The MLflow tracking store: where it is, retries while it is busy, and its failures.

The tracking URI is, in order: ``settings.tracking.uri``, ``$MLFLOW_TRACKING_URI``, and
the embedded default ``sqlite:///mlflow.db`` in the working directory. Writes are retried
while another process holds the SQLite file, so trainings started at the same time are
all recorded. Any failure of the store becomes one
:class:`~churnlens.errors.TrackingError` saying what was kept (:func:`failures`).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from churnlens.config import Settings
from churnlens.errors import TrackingError

DEFAULT_URI = "sqlite:///mlflow.db"
T = TypeVar("T")


def tracking_uri(settings: Settings) -> str:
    """Where runs go: config, then $MLFLOW_TRACKING_URI, then ./mlflow.db."""
    return settings.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def retry(action: Callable[[], T], attempts: int = 30, delay: float = 0.2) -> T:
    """Run ``action``, retrying while the SQLite store is locked by another writer."""
    for attempt in range(attempts):
        try:
            return action()
        except Exception as exc:
            text = str(exc).lower()
            busy = "locked" in text or "busy" in text or "unique constraint" in text
            if not busy or attempt == attempts - 1:
                raise
            time.sleep(delay * (1 + attempt % 5))
    raise AssertionError("unreachable")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@contextmanager
def failures(kept: str) -> Iterator[None]:
    """Any failure of the tracking store becomes one TrackingError naming what was kept."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(f"MLflow tracking failed ({first_line(exc)}); {kept}") from None


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as flat ``section.key`` params (MLflow keeps strings)."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(list(value) if isinstance(value, tuple) else value)[:500]
    return flat


def git_commit() -> str | None:
    """The current git commit of the working directory, when there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts go in ``mlartifacts/`` beside the database file."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///")).resolve()
    return (db.parent / "mlartifacts").as_uri()


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise the first use of a SQLite store: MLflow creates its schema on first
    connect, and two processes doing that at once collide."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri.removeprefix("sqlite:///")).resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def use_store(settings: Settings) -> Any:
    """Point MLflow at the configured store; an MlflowClient of it (making the client
    makes the store's schema on first use: :func:`tracked_run` serialises that)."""
    import mlflow
    from mlflow import MlflowClient

    uri = tracking_uri(settings)
    mlflow.set_tracking_uri(uri)
    return MlflowClient()


STAGES = ("training", "scoring")


def experiment_name(settings: Settings, stage: str) -> str:
    """The experiment of a stage's runs: ``<tracking.experiment>-training`` (train,
    backtest, segment, the value and uplift models) or ``-scoring`` (score, outcomes)."""
    if stage not in STAGES:
        raise ValueError(f"stage {stage!r} is not one of {STAGES}")
    return f"{settings.tracking.experiment}-{stage}"


def _ensure_experiment(settings: Settings, stage: str) -> str:
    import mlflow

    name = experiment_name(settings, stage)
    client = use_store(settings)
    if client.get_experiment_by_name(name) is None:
        try:
            client.create_experiment(
                name,
                artifact_location=artifact_location(tracking_uri(settings)),
                # the MLflow UI opens it as model training (not GenAI)
                tags={
                    "mlflow.experimentKind": "custom_model_development",
                    "mlflow.note.content": f"churnlens {stage} runs",
                },
            )
        except Exception as exc:
            if "already exists" not in str(exc).lower():
                raise
    return str(mlflow.set_experiment(name).experiment_id)


@contextmanager
def tracked_run(
    settings: Settings, run_name: str, stage: str, started: float | None = None
) -> Iterator[Any]:
    """An active MLflow run in the configured store and the ``stage``'s experiment (see
    :func:`experiment_name`), started at ``started`` (seconds since the epoch; default
    now) so that its duration covers the work before the logging; ended FAILED when the
    block raises."""
    import mlflow

    def start(experiment: str) -> Any:
        if started is None:
            return mlflow.start_run(run_name=run_name)
        made = mlflow.MlflowClient().create_run(
            experiment, start_time=int(started * 1000), run_name=run_name
        )
        return mlflow.start_run(run_id=made.info.run_id)

    try:
        mlflow.set_tracking_uri(tracking_uri(settings))
        with _store_lock(tracking_uri(settings)):  # the client makes the schema: serialised
            experiment = retry(lambda: _ensure_experiment(settings, stage))
        run = retry(lambda: start(experiment))
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking at {tracking_uri(settings)} failed: {first_line(exc)}"
        ) from None
    try:
        yield run
    except BaseException:
        retry(lambda: mlflow.end_run(status="FAILED"))
        raise
    else:
        retry(lambda: mlflow.end_run())
