"""MLflow wiring: runs with params, tags, metrics and plots; registered, aliased models.

The tracking URI is, in order: ``settings.tracking.uri``, ``$MLFLOW_TRACKING_URI``, and
the embedded default ``sqlite:///mlflow.db`` in the working directory. Writes are retried
while another process holds the SQLite file, so trainings started at the same time are
all recorded. The ``champion`` alias of a registered model moves to a new version only
when it beats the current champion on the new run's validation data, unless forced.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from churnlens import __version__
from churnlens.config import Settings
from churnlens.errors import TrackingError

DEFAULT_URI = "sqlite:///mlflow.db"
CHAMPION = "champion"
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


@contextmanager
def tracked_run(settings: Settings, run_name: str) -> Iterator[Any]:
    """An active MLflow run in the configured store and experiment."""
    import mlflow

    try:
        mlflow.set_tracking_uri(tracking_uri(settings))
        with _store_lock(tracking_uri(settings)):
            retry(lambda: _ensure_experiment(settings))
        run = retry(lambda: mlflow.start_run(run_name=run_name))
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking at {tracking_uri(settings)} failed: {exc}".splitlines()[0]
        ) from None
    try:
        yield run
    except Exception:
        retry(lambda: mlflow.end_run(status="FAILED"))
        raise
    else:
        retry(lambda: mlflow.end_run())


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


def _ensure_experiment(settings: Settings) -> None:
    import mlflow
    from mlflow import MlflowClient

    name = settings.tracking.experiment
    client = MlflowClient()
    if client.get_experiment_by_name(name) is None:
        try:
            client.create_experiment(
                name, artifact_location=artifact_location(tracking_uri(settings))
            )
        except Exception as exc:
            if "already exists" not in str(exc).lower():
                raise
    mlflow.set_experiment(name)


def log_common(settings: Settings, params: dict[str, Any], tags: dict[str, str]) -> None:
    """Flattened settings and run params, and the tags every run carries."""
    import mlflow

    all_params = {
        **flatten(settings.model_dump(mode="json")),
        **{k: str(v) for k, v in params.items()},
    }
    items = list(all_params.items())
    for start in range(0, len(items), 100):
        chunk = dict(items[start : start + 100])
        retry(lambda chunk=chunk: mlflow.log_params(chunk))
    base = {"churnlens_version": __version__}
    commit = git_commit()
    if commit:
        base["git_commit"] = commit
    retry(lambda: mlflow.set_tags({**base, **tags}))


def log_metric_table(table: pd.DataFrame, prefix: str = "") -> None:
    """Each cell of a (score x metric) table as metric ``{prefix}{score}_{metric}``."""
    import mlflow

    metrics = {
        f"{prefix}{row}_{col}": float(value)
        for row, values in table.iterrows()
        for col, value in values.items()
        if np.isfinite(value)
    }
    retry(lambda: mlflow.log_metrics(metrics))


def log_figures(figures: Mapping[str, Any], folder: str = "plots") -> None:
    import matplotlib.pyplot as plt
    import mlflow

    for name, fig in figures.items():
        retry(lambda fig=fig, name=name: mlflow.log_figure(fig, f"{folder}/{name}"))
        plt.close(fig)


def log_model(
    model: Any,
    name: str,
    example: pd.DataFrame,
    registered_name: str,
    predict: str = "predict_proba",
) -> str:
    """Log and register ``model`` with a signature and an input example; its version."""
    from mlflow.models import infer_signature

    output = getattr(model, predict)(example)
    output = output[:, 1] if predict == "predict_proba" else np.asarray(output)
    signature = infer_signature(example, output)
    requirements = [f"churnlens=={__version__}", "lightgbm", "scikit-learn", "pandas"]
    # MLflow prints "Successfully registered model ..." straight to stderr; the CLI
    # reports the registered version itself.
    with contextlib.redirect_stderr(io.StringIO()):
        info = _log_sklearn(model, name, signature, example, registered_name, requirements, predict)
    return str(info.registered_model_version)


def _log_sklearn(
    model: Any,
    name: str,
    signature: Any,
    example: pd.DataFrame,
    registered_name: str,
    requirements: list[str],
    predict: str,
) -> Any:
    import mlflow

    return retry(
        lambda: mlflow.sklearn.log_model(
            model,
            name=name,
            signature=signature,
            input_example=example,
            registered_model_name=registered_name,
            pip_requirements=requirements,
            pyfunc_predict_fn=predict,
            serialization_format="cloudpickle",
        )
    )


@dataclass(frozen=True)
class AliasDecision:
    moved: bool
    reason: str


def update_champion(
    registered_name: str,
    version: str,
    new_score: float,
    score_champion: Callable[[Any, Any], float | None],
    force: bool = False,
) -> AliasDecision:
    """Move the ``champion`` alias to ``version`` when it scores better (or is forced).

    ``score_champion`` receives the loaded champion model and the MLflow run that
    produced it, and returns its score on the new run's validation data (higher is
    better), or None when no fair comparison exists.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    try:
        current = retry(lambda: client.get_model_version_by_alias(registered_name, CHAMPION))
    except Exception:
        current = None
    if current is not None and str(current.version) == str(version):
        return AliasDecision(False, "already the champion")
    if current is None or force:
        retry(lambda: client.set_registered_model_alias(registered_name, CHAMPION, version))
        return AliasDecision(True, "forced" if force else "first registered version")
    champion = mlflow.sklearn.load_model(f"models:/{registered_name}@{CHAMPION}")
    champion_run = retry(lambda: client.get_run(current.run_id)) if current.run_id else None
    old_score = score_champion(champion, champion_run)
    if old_score is None:
        return AliasDecision(
            False, f"no fair comparison with version {current.version} on this data"
        )
    if new_score > old_score:
        retry(lambda: client.set_registered_model_alias(registered_name, CHAMPION, version))
        return AliasDecision(
            True, f"{new_score:.4f} beats version {current.version} ({old_score:.4f})"
        )
    return AliasDecision(
        False, f"{new_score:.4f} does not beat version {current.version} ({old_score:.4f})"
    )


def promote(settings: Settings, registered_name: str, version: str) -> None:
    """Force the ``champion`` alias onto a version."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri(settings))
    client = MlflowClient()
    try:
        retry(lambda: client.get_model_version(registered_name, version))
    except Exception:
        raise TrackingError(
            f"no version {version} of registered model '{registered_name}' at "
            f"{tracking_uri(settings)}; see `churnlens models list`"
        ) from None
    retry(lambda: client.set_registered_model_alias(registered_name, CHAMPION, version))


def list_models(settings: Settings) -> pd.DataFrame:
    """Every version of every registered model: name, version, aliases, run, created."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri(settings))
    client = MlflowClient()
    rows = []
    for model in retry(lambda: client.search_registered_models()):
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for v in retry(lambda model=model: client.search_model_versions(f"name='{model.name}'")):
            rows.append(
                {
                    "name": v.name,
                    "version": int(v.version),
                    "aliases": ", ".join(aliases.get(str(v.version), [])),
                    "run_id": v.run_id,
                    "created": pd.Timestamp(v.creation_timestamp, unit="ms"),
                }
            )
    columns = ["name", "version", "aliases", "run_id", "created"]
    return pd.DataFrame(rows, columns=columns).sort_values(["name", "version"], ignore_index=True)


def log_config_file(path: str | Path | None, settings: Settings) -> None:
    """The YAML file the run used, or the effective settings when none was given."""
    import mlflow
    import yaml

    if path is not None and Path(path).is_file():
        retry(lambda: mlflow.log_artifact(str(path), "config"))
    else:
        text = yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False)
        retry(lambda: mlflow.log_text(text, "config/effective.yaml"))
