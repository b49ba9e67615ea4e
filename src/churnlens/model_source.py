"""Where a scoring job gets its models: a local bundle or the MLflow registry.

``--model`` is a bundle directory written by ``train`` (no server needed) or a
``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` URI. The segment model comes from
``--segments`` the same way, or, by default, from beside the churn model: the newest
segments bundle in the same folder, or the registry's segments champion. Every check that
can fail (files, hashes, versions, feature names) runs here, before any data is read.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from churnlens import __version__
from churnlens.bundle import load_bundle, read_manifest
from churnlens.config import Settings, load_settings, settings_from_dict
from churnlens.errors import ModelError
from churnlens.features import feature_names
from churnlens.models.churn import ChurnModel
from churnlens.models.segments import SegmentModel

AUTO = "auto"


@dataclass(frozen=True)
class ScoringModels:
    """A churn model with the settings it was trained with, and optionally segments."""

    churn: ChurnModel
    settings: Settings
    version: str
    uri: str
    segments: SegmentModel | None = None
    segments_version: str | None = None
    trained_as_of: str | None = None


def _check_version(found: str | None, where: str) -> None:
    if found is not None and found != __version__:
        raise ModelError(
            f"{where} was written by churnlens {found}, but this is churnlens {__version__}; "
            f"retrain it with this version, or score with churnlens=={found}"
        )


def _check_features(model: ChurnModel, settings: Settings, where: str) -> None:
    expected = feature_names(settings)
    trained = list(model.feature_names_in_)
    if trained != expected:
        missing = [c for c in trained if c not in expected]
        extra = [c for c in expected if c not in trained]
        raise ModelError(
            f"{where}: the model's {len(trained)} features do not match the "
            f"{len(expected)} that its settings build (missing {missing[:3]}, unexpected "
            f"{extra[:3]}); retrain the model with this version's feature settings"
        )


def _from_bundle(path: Path) -> tuple[Any, dict[str, Any]]:
    payload, manifest = load_bundle(path)
    if not isinstance(payload, dict) or "model" not in payload:
        raise ModelError(f"{path}: the bundle holds no model")
    _check_version(manifest.get("versions", {}).get("churnlens"), f"the bundle {path}")
    return payload, manifest


def _from_registry(uri: str, settings: Settings) -> tuple[Any, Settings, str, str | None]:
    """The model behind a ``models:/`` URI, its training settings and its version."""
    import mlflow
    from mlflow import MlflowClient

    from churnlens import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri(settings))
    client = MlflowClient()
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
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(
            f"{uri}: cannot load from the MLflow store {tracking.tracking_uri(settings)} "
            f"({first}); train a model first, check `churnlens models list`, or pass "
            "--model models/BUNDLE_DIR"
        ) from None
    _check_version(run.data.tags.get("churnlens_version"), f"{uri} (version {version.version})")
    trained = _registry_settings(client, version.run_id, uri)
    return model, trained, f"{name}/{version.version}", run.data.params.get("as_of")


def _registry_settings(client: Any, run_id: str, uri: str) -> Settings:
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


def _newest_segments_bundle(folder: Path) -> Path | None:
    bundles = [p for p in folder.glob("segments-*") if (p / "manifest.json").is_file()]
    if not bundles:
        return None
    return max(bundles, key=lambda p: read_manifest(p).get("created", ""))


def load_models(
    model: str | Path | None = None,
    segments: str | Path | None = AUTO,
    settings: Settings | None = None,
) -> ScoringModels:
    """Load and check the churn model (and segments) a scoring job uses.

    Parameters
    ----------
    model
        A bundle directory or a ``models:/`` URI; ``None``: the registry champion.
    segments
        A segments bundle directory, a ``models:/`` URI, ``"auto"`` (beside the churn
        model, when there is one) or ``None`` (no segments).
    settings
        Where the registry is (``tracking``); the model's own settings drive features.
    """
    settings = settings or Settings()
    if model is None:
        model = f"models:/{settings.tracking.churn_model_name}@champion"
    text = str(model)
    if text.startswith("models:/"):
        churn, trained, version, as_of = _from_registry(text, settings)
        uri = text
    else:
        path = Path(model)
        if not path.is_dir():
            raise ModelError(
                f"{path}: no such model bundle directory; give one written by `churnlens "
                "train` (under models/) or a models:/NAME@champion URI"
            )
        payload, manifest = _from_bundle(path)
        churn = payload["model"]
        trained = settings_from_dict(manifest["settings"], source=f"{path}/manifest.json")
        version, uri, as_of = f"bundle:{path.name}", str(path.resolve()), manifest.get("as_of")
    if not isinstance(churn, ChurnModel):
        raise ModelError(f"{text}: not a churnlens churn model ({type(churn).__name__})")
    _check_features(churn, trained, text)
    # where to track and how DuckDB runs are the caller's; features follow the model
    trained = trained.with_overrides(
        tracking=settings.tracking.model_dump(), engine=settings.engine.model_dump()
    )
    seg_model, seg_version = _load_segments(segments, text, trained)
    return ScoringModels(churn, trained, version, uri, seg_model, seg_version, as_of)


def _load_segments(
    segments: str | Path | None, churn_ref: str, settings: Settings
) -> tuple[SegmentModel | None, str | None]:
    if segments is None:
        return None, None
    if str(segments) == AUTO:
        if churn_ref.startswith("models:/"):
            uri = f"models:/{settings.tracking.segment_model_name}@champion"
            try:
                return _load_segments(uri, churn_ref, settings)
            except ModelError:
                return None, None
        found = _newest_segments_bundle(Path(churn_ref).parent)
        return _load_segments(found, churn_ref, settings) if found else (None, None)
    text = str(segments)
    if text.startswith("models:/"):
        model, _, version, _ = _from_registry(text, settings)
    else:
        payload, _ = _from_bundle(Path(segments))
        model, version = payload["model"], f"bundle:{Path(segments).name}"
    if not isinstance(model, SegmentModel):
        raise ModelError(f"{text}: not a churnlens segment model ({type(model).__name__})")
    return model, version
