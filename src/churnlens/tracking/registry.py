"""The MLflow model registry: registered versions, the ``champion`` alias, loading them.

Every model kind is registered under its own name (``tracking.churn_model_name``,
``tracking.segment_model_name``). The ``champion`` alias moves to a new version only when
it beats the current champion on the new run's validation data (or when forced), and
never because the registry could not be read: a read error stops the move and says why.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from churnlens.config import Settings
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
    bundle: Path,
    companions: dict[str, Path] | None = None,
) -> str:
    """Log and register ``model`` as churnlens's pyfunc around its ``bundle`` and the
    ``companions`` (kind -> bundle, e.g. the value model trained with a churn model; see
    :mod:`churnlens.tracking.pyfunc`), with a signature and an input example; its version."""
    import mlflow

    from churnlens.bundle import load_bundle, read_manifest
    from churnlens.tracking import pyfunc

    companions = companions or {}
    manifest = read_manifest(bundle)
    loaded = {kind: load_bundle(path, kind)[0] for kind, path in companions.items()}
    signature = pyfunc.signature_for(model, manifest, example, loaded)
    entry = Path(pyfunc.__file__).with_name("pyfunc_entry.py")
    artifacts = {pyfunc.BUNDLE: str(bundle), **{k: str(p) for k, p in companions.items()}}
    with tempfile.TemporaryDirectory() as tmp:
        code = shutil.copytree(
            pyfunc.code_folder(),
            Path(tmp) / "churnlens",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        # MLflow prints "Successfully registered model ..." straight to stderr; the CLI
        # reports the registered version itself.
        with contextlib.redirect_stderr(io.StringIO()):
            info = retry(
                lambda: mlflow.pyfunc.log_model(
                    name=name,
                    python_model=str(entry),
                    artifacts=artifacts,
                    code_paths=[str(code)],
                    signature=signature,
                    input_example=example.reset_index().head(5),
                    registered_model_name=registered_name,
                    pip_requirements=pyfunc.requirements(),
                )
            )
    return str(info.registered_model_version)


def describe_version(name: str, version: str, description: str, tags: dict[str, str]) -> None:
    """A registered version's description and tags (as-of, validation scores, data
    fingerprint, the champion decision and why)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    if description:
        retry(lambda: client.update_model_version(name, version, description=description))
    for key, value in tags.items():
        retry(lambda k=key, v=value: client.set_model_version_tag(name, version, k, str(v)))


@contextlib.contextmanager
def registered_bundle(name: str, version: str) -> Iterator[Path]:
    """The bundle of a registered version, downloaded into a temporary folder (removed
    afterwards); the caller loads it with :func:`~churnlens.bundle.load_bundle`."""
    import mlflow

    from churnlens.bundle import MANIFEST
    from churnlens.tracking.pyfunc import BUNDLE

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=tmp
            )
        )
        bundle = _artifact(folder, BUNDLE)
        if bundle is None or not (bundle / MANIFEST).is_file():
            raise ModelError(
                f"models:/{name}/{version} holds no churnlens bundle where its MLmodel says "
                "(registered in the old pickle format, or changed since); retrain to register "
                "a new version"
            )
        yield bundle


def _artifact(folder: Path, name: str) -> Path | None:
    """The local folder of the pyfunc artifact ``name`` in a downloaded model (MLmodel is
    read as plain YAML); None unless it is a folder inside the downloaded model."""
    import yaml

    mlmodel = folder / "MLmodel"
    if not mlmodel.is_file():
        return None
    try:
        described = yaml.safe_load(mlmodel.read_text(encoding="utf-8"))
        relative = described["flavors"]["python_function"]["artifacts"][name]["path"]
    except (yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError):
        return None
    if not isinstance(relative, str) or Path(relative).is_absolute():
        return None
    found = (folder / relative).resolve()
    inside = found.is_relative_to(folder.resolve()) and found != folder.resolve()
    return found if inside and found.is_dir() and not (folder / relative).is_symlink() else None


def load_version(name: str, version: str, kind: str | None = None) -> Any:
    """The model of a registered version, loaded and checked like a local bundle."""
    from churnlens.bundle import load_bundle

    with registered_bundle(name, version) as bundle:
        return load_bundle(bundle, kind)[0]


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
    kind: str | None = None,
) -> AliasDecision:
    """Move the ``champion`` alias to ``version`` when it scores better (or is forced).

    ``score_champion`` receives the loaded champion model and its run's params and
    metrics, and returns its score on the new run's validation data (higher is better),
    or None when no fair comparison exists.
    """
    from mlflow import MlflowClient

    client = MlflowClient()
    current = current_champion(client, registered_name)
    if current is not None and str(current.version) == str(version):
        return AliasDecision(False, "already the champion")
    if current is None or force:
        retry(lambda: client.set_registered_model_alias(registered_name, CHAMPION, version))
        return AliasDecision(True, "forced" if force else "first registered version")
    try:
        champion = load_version(registered_name, str(current.version), kind)
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
            tags = dict(v.tags or {})
            rows.append(
                {
                    "name": v.name,
                    "version": int(v.version),
                    "aliases": ", ".join(aliases.get(str(v.version), [])),
                    "as_of": tags.get("as_of", ""),
                    "val_roc_auc": tags.get("val_roc_auc", ""),
                    "val_brier": tags.get("val_brier", ""),
                    "run_id": v.run_id,
                    "created": pd.Timestamp(v.creation_timestamp, unit="ms"),
                }
            )
    columns = [
        "name", "version", "aliases", "as_of", "val_roc_auc", "val_brier", "run_id", "created",
    ]  # fmt: skip
    return pd.DataFrame(rows, columns=columns).sort_values(["name", "version"], ignore_index=True)


@dataclass(frozen=True)
class RegisteredVersion:
    """A registered version: its label and what its run recorded."""

    name: str
    number: str
    as_of: str | None

    @property
    def label(self) -> str:
        return f"{self.name}/{self.number}"


def find_version(uri: str, settings: Settings) -> RegisteredVersion:
    """The version behind a ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` URI; raises
    :class:`ModelError` saying how to fix a miss."""
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
    except Exception as exc:
        raise ModelError(
            f"{uri}: cannot load from the MLflow store {tracking_uri(settings)} "
            f"({first_line(exc)}); train a model first, check `churnlens models list`, or "
            "pass --model models/BUNDLE_DIR"
        ) from None
    return RegisteredVersion(name, str(version.version), run.data.params.get("as_of"))


def load_champion(settings: Settings, registered_name: str, kind: str) -> Any | None:
    """The champion model of a registered name, or None when there is none (or the store
    cannot give it: the caller then starts afresh)."""
    try:
        client = use_store(settings)
        current = current_champion(client, registered_name)
        if current is None:
            return None
        return load_version(registered_name, str(current.version), kind)
    except Exception:
        return None
