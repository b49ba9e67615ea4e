"""The MLflow model registry: registered versions, the ``champion`` alias, loading them.

Every model kind is registered under its own name (``tracking.churn_model_name``,
``tracking.segment_model_name``). The ``champion`` alias moves to a new version only when
it beats the current champion on the new run's validation data (or when forced), and
never because the registry could not be read: a read error stops the move and says why.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnlens import __version__
from churnlens.config import Settings, load_settings
from churnlens.errors import ModelError, TrackingError
from churnlens.events.sql import literal
from churnlens.tracking.store import failures, first_line, retry, tracking_uri, use_store

CHAMPION = "champion"
# (the champion model, its run's params, its run's metrics) -> its score, or None
ChampionScore = Callable[[Any, dict[str, str], dict[str, float]], float | None]


def log_model(
    model: Any,
    name: str,
    example: pd.DataFrame,
    registered_name: str,
    predict: str = "predict_proba",
) -> str:
    """Log and register ``model`` with a signature and an input example; its version."""
    import mlflow
    from mlflow.models import infer_signature

    output = getattr(model, predict)(example)
    output = output[:, 1] if predict == "predict_proba" else np.asarray(output)
    signature = infer_signature(example, output)
    requirements = [f"churnlens=={__version__}", "lightgbm", "scikit-learn", "pandas"]
    # MLflow prints "Successfully registered model ..." straight to stderr; the CLI
    # reports the registered version itself.
    with contextlib.redirect_stderr(io.StringIO()):
        info = retry(
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
    return str(info.registered_model_version)


@dataclass(frozen=True)
class AliasDecision:
    moved: bool
    reason: str


def _no_champion(exc: Exception) -> bool:
    """Whether a failed alias lookup means "no champion yet" (and not a broken store)."""
    code = getattr(exc, "error_code", "")
    text = str(exc).lower()
    return code == "RESOURCE_DOES_NOT_EXIST" or (
        code == "INVALID_PARAMETER_VALUE" and "alias" in text and "not found" in text
    )


def current_champion(client: Any, registered_name: str) -> Any | None:
    """The champion's model version, or None when there is none yet; raises
    :class:`TrackingError` when the registry cannot be read."""
    try:
        return retry(lambda: client.get_model_version_by_alias(registered_name, CHAMPION))
    except Exception as exc:
        if _no_champion(exc):
            return None
        raise TrackingError(
            f"cannot read the champion of '{registered_name}' ({first_line(exc)}); "
            "the champion alias was not moved"
        ) from None


def update_champion(
    registered_name: str,
    version: str,
    new_score: float,
    score_champion: ChampionScore,
    force: bool = False,
) -> AliasDecision:
    """Move the ``champion`` alias to ``version`` when it scores better (or is forced).

    ``score_champion`` receives the loaded champion model and its run's params and
    metrics, and returns its score on the new run's validation data (higher is better),
    or None when no fair comparison exists.
    """
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient()
    current = current_champion(client, registered_name)
    if current is not None and str(current.version) == str(version):
        return AliasDecision(False, "already the champion")
    if current is None or force:
        retry(lambda: client.set_registered_model_alias(registered_name, CHAMPION, version))
        return AliasDecision(True, "forced" if force else "first registered version")
    try:
        champion = mlflow.sklearn.load_model(f"models:/{registered_name}@{CHAMPION}")
        run = retry(lambda: client.get_run(current.run_id)) if current.run_id else None
    except Exception as exc:
        raise TrackingError(
            f"cannot load champion version {current.version} of '{registered_name}' "
            f"({first_line(exc)}); the champion alias was not moved"
        ) from None
    params = dict(run.data.params) if run is not None else {}
    metrics = dict(run.data.metrics) if run is not None else {}
    old_score = score_champion(champion, params, metrics)
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
    with failures("the champion alias was not moved"):
        _promote(settings, registered_name, version)


def _promote(settings: Settings, registered_name: str, version: str) -> None:
    client = use_store(settings)
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
    with failures("nothing was changed"):
        return _list_models(settings)


def _list_models(settings: Settings) -> pd.DataFrame:
    client = use_store(settings)
    rows = []
    for model in retry(lambda: client.search_registered_models()):
        aliases: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        where = f"name = {literal(model.name)}"
        for v in retry(lambda where=where: client.search_model_versions(where)):
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


@dataclass(frozen=True)
class RegisteredModel:
    """A registered version, loaded: the model, the settings its run logged, its label."""

    model: Any
    settings: Settings
    version: str  # NAME/VERSION
    as_of: str | None
    churnlens_version: str | None


def load_registered(uri: str, settings: Settings) -> RegisteredModel:
    """The model behind a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI, with
    the settings its run logged; raises :class:`ModelError` saying how to fix a miss."""
    import mlflow

    client = use_store(settings)
    ref = uri.removeprefix("models:/")
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = ref.rsplit("/", 1)
            version = client.get_model_version(name, number)
        run = client.get_run(version.run_id)
        model = mlflow.sklearn.load_model(f"models:/{name}/{version.version}")
    except Exception as exc:
        raise ModelError(
            f"{uri}: cannot load from the MLflow store {tracking_uri(settings)} "
            f"({first_line(exc)}); train a model first, check `churnlens models list`, or "
            "pass --model models/BUNDLE_DIR"
        ) from None
    trained = _run_settings(client, version.run_id, uri)
    return RegisteredModel(
        model,
        trained,
        f"{name}/{version.version}",
        run.data.params.get("as_of"),
        run.data.tags.get("churnlens_version"),
    )


def _run_settings(client: Any, run_id: str, uri: str) -> Settings:
    """The settings a registered model was trained with: its run's logged config file."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            folder = Path(client.download_artifacts(run_id, "config", tmp))
        except Exception:
            raise ModelError(f"{uri}: its run logged no configuration; retrain it") from None
        files = sorted(folder.glob("*.y*ml"))
        if not files:
            raise ModelError(f"{uri}: its run logged no configuration; retrain it")
        return load_settings(files[0])


def load_champion(settings: Settings, registered_name: str) -> Any | None:
    """The champion model of a registered name, or None when there is none (or the store
    cannot give it: the caller then starts afresh)."""
    import mlflow

    try:
        use_store(settings)
        return mlflow.sklearn.load_model(f"models:/{registered_name}@{CHAMPION}")
    except Exception:
        return None
