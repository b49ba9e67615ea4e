"""Where a scoring job gets its models: a local bundle or the MLflow registry.

``--model`` is a bundle directory written by ``train`` (no server needed) or a
``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` URI. The segment model comes from
``--segments`` the same way, or, by default, from beside the churn model: the newest
segments bundle in the same folder, or the registry's segments champion. Every check that
can fail (files, hashes, kinds, versions, feature names, segments built with other
features) runs here, before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from churnlens import __version__
from churnlens.bundle import KEY_VARIABLE, load_bundle, read_manifest, signing_key
from churnlens.config import Settings, settings_from_dict
from churnlens.errors import ModelError
from churnlens.features import feature_names
from churnlens.models.base import ChurnlensModel, model_kinds

AUTO = "auto"


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to score with, and where it came from."""

    model: ChurnlensModel
    version: str  # bundle:NAME or NAME/VERSION
    uri: str
    trained_as_of: str | None = None
    signed: bool = False  # its bundle's signature verified with CHURNLENS_SIGNING_KEY


@dataclass(frozen=True)
class ScoringModels:
    """The models a scoring job uses, by kind (churn first), with the settings the churn
    model was trained with (its features and lifecycle rules drive scoring)."""

    settings: Settings
    loaded: dict[str, LoadedModel] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what the caller should know (say, ignored settings)

    @property
    def signed(self) -> bool:
        """Whether every model's bundle was signed and verified."""
        return all(found.signed for found in self.loaded.values())

    @property
    def churn(self) -> ChurnlensModel:
        return self.loaded["churn"].model

    @property
    def version(self) -> str:
        return self.loaded["churn"].version

    @property
    def uri(self) -> str:
        return self.loaded["churn"].uri

    @property
    def trained_as_of(self) -> str | None:
        return self.loaded["churn"].trained_as_of

    @property
    def segments(self) -> ChurnlensModel | None:
        found = self.loaded.get("segments")
        return found.model if found else None

    @property
    def segments_version(self) -> str | None:
        found = self.loaded.get("segments")
        return found.version if found else None

    @property
    def value(self) -> ChurnlensModel | None:
        found = self.loaded.get("value")
        return found.model if found else None

    @property
    def value_version(self) -> str | None:
        found = self.loaded.get("value")
        return found.version if found else None

    @property
    def uplift(self) -> ChurnlensModel | None:
        found = self.loaded.get("uplift")
        return found.model if found else None

    @property
    def uplift_version(self) -> str | None:
        found = self.loaded.get("uplift")
        return found.version if found else None


def _check_version(found: str | None, where: str) -> None:
    if found is not None and found != __version__:
        raise ModelError(
            f"{where} was written by churnlens {found}, but this is churnlens {__version__}; "
            f"retrain it with this version, or score with churnlens=={found}"
        )


def _check_features(model: ChurnlensModel, settings: Settings, where: str) -> None:
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


def _load(ref: str, kind: str, settings: Settings) -> tuple[LoadedModel, Settings]:
    """A model of ``kind`` from a bundle folder or a ``models:/`` URI (whose bundle is
    downloaded and checked exactly like a local one), with the settings it was trained
    with."""
    if ref.startswith("models:/"):
        from churnlens.tracking import find_version, registered_bundle

        found = find_version(ref, settings)
        with registered_bundle(found.name, found.number) as path:
            return _from_bundle(path, kind, found.label, ref, f"{ref} ({found.label})")
    path = Path(ref)
    if not path.is_dir():
        raise ModelError(
            f"{path}: no such model bundle directory; give one written by `churnlens "
            "train` (under models/) or a models:/NAME@champion URI"
        )
    return _from_bundle(
        path, kind, f"bundle:{path.name}", str(path.resolve()), f"the bundle {path}"
    )


def _from_bundle(
    path: Path, kind: str, version: str, uri: str, where: str
) -> tuple[LoadedModel, Settings]:
    try:
        model, manifest = load_bundle(path, kind)
    except ModelError as exc:
        raise ModelError(str(exc).replace(str(path), where)) from None
    _check_version(manifest.get("versions", {}).get("churnlens"), where)
    if not manifest.get("settings"):
        raise ModelError(f"{where}: its manifest records no settings; retrain it")
    trained = settings_from_dict(manifest["settings"], source=f"{where}: manifest.json")
    signed = signing_key() is not None  # load_bundle verified the signature then
    return LoadedModel(model, version, uri, manifest.get("as_of"), signed), trained


def _newest_bundle(folder: Path, kind: str) -> Path | None:
    """The newest readable bundle of ``kind`` in ``folder`` (leftover folders with a
    broken manifest are passed over)."""
    found: list[tuple[str, Path]] = []
    for path in folder.glob(f"{kind}-*"):
        try:  # with a signing key, only a bundle whose signature verifies is considered
            manifest = read_manifest(path, verify=True)
        except ModelError:
            continue
        if manifest.get("kind") == kind:
            found.append((str(manifest.get("created", "")), path))
    return max(found)[1] if found else None


def load_models(
    model: str | Path | None = None,
    segments: str | Path | None = AUTO,
    settings: Settings | None = None,
    value: str | Path | None = AUTO,
    uplift: str | Path | None = AUTO,
) -> ScoringModels:
    """Load and check the models a scoring job uses: churn, and segments and value.

    Parameters
    ----------
    model
        A bundle directory or a ``models:/`` URI; ``None``: the registry champion.
    segments, value, uplift
        A bundle directory, a ``models:/`` URI, ``"auto"`` (beside the churn model: the
        newest bundle of that kind in its folder, or the registry's champion) or ``None``
        (without).
    settings
        Where the registry is (``tracking``); the model's own settings drive features.
    """
    settings = settings or Settings()
    champion = f"models:/{settings.tracking.churn_model_name}@champion"
    ref = str(model) if model is not None else champion
    churn, trained = _load(ref, "churn", settings)
    _check_features(churn.model, trained, ref)
    # where to track, how DuckDB runs, the experiment and the drift thresholds are the
    # caller's; features follow the model
    trained = trained.with_overrides(
        tracking=settings.tracking.model_dump(),
        engine=settings.engine.model_dump(),
        experiment=settings.experiment.model_dump(),
        drift=settings.drift.model_dump(),
    )
    loaded = {"churn": churn}
    names = {
        "segments": trained.tracking.segment_model_name,
        "value": trained.tracking.value_model_name,
        "uplift": trained.tracking.uplift_model_name,
    }
    for kind, given in (("segments", segments), ("value", value), ("uplift", uplift)):
        companion = _companion_ref(given, ref, kind, names[kind])
        if companion is None:
            continue
        try:
            loaded[kind], _ = _load(companion, kind, trained)
        except ModelError:
            if given != AUTO or not companion.startswith("models:/"):
                raise
            continue
        _check_companion(loaded[kind].model, trained, companion, kind)
    _check_score_inputs(loaded)
    order = {kind: i for i, kind in enumerate(model_kinds())}
    ordered = dict(sorted(loaded.items(), key=lambda kv: order[kv[0]]))
    notes = setting_conflicts(settings, trained)
    if signing_key() is None:
        notes.append(
            f"the model bundles are unsigned ({KEY_VARIABLE} is not set): their hashes catch "
            "corruption, not a deliberate change; set the key when training and scoring"
        )
    return ScoringModels(trained, ordered, tuple(notes))


FROM_MODEL = ("events", "features", "training", "lifecycle", "model", "segments", "value")


def setting_conflicts(given: Settings, trained: Settings) -> list[str]:
    """What a scoring run's configuration sets, differently from the model, in the
    sections scoring takes from the model (they shape its features and stages)."""
    default = Settings()
    differ = [
        section
        for section in FROM_MODEL
        if getattr(given, section) != getattr(trained, section)
        and getattr(given, section) != getattr(default, section)
    ]
    if not differ:
        return []
    return [
        f"the configuration's {', '.join(differ)} section(s) differ from the model's and "
        "are not used: scoring takes them from the model it scores with (they shape its "
        "features and stages); retrain with this configuration to use them"
    ]


def _check_companion(model: ChurnlensModel, settings: Settings, where: str, kind: str) -> None:
    known = {*feature_names(settings), *model.score_inputs}  # score inputs: other models'
    missing = [c for c in model.feature_names_in_ if c not in known]
    if missing:
        raise ModelError(
            f"{where}: the {kind} model was built on features this churn model's settings "
            f"do not build ({missing[:3]}); fit it with the same configuration, or score "
            f"with --{kind} none"
        )


def _check_score_inputs(loaded: dict[str, LoadedModel]) -> None:
    """A model that takes other models' outputs (``score_inputs``) needs the models that
    give them: without the value model, ``value_if_retained`` would be empty and the
    uplift model would read it as 0."""
    import pandas as pd

    from churnlens.models.base import model_class

    for kind, found in loaded.items():
        taken = [c for c in found.model.score_inputs if c in found.model.feature_names_in_]
        if not taken:
            continue
        for other in (k for k in model_kinds() if k not in loaded):
            gives = set(model_class(other).empty_columns(pd.Index([])).columns)
            missing = [c for c in taken if c in gives]
            if missing:
                raise ModelError(
                    f"the {kind} model takes {', '.join(missing)} from the {other} model, "
                    f"which this scoring run does not load; score with a {other} model "
                    f"beside it, or without the {kind} model"
                )


def _companion_ref(given: str | Path | None, churn_ref: str, kind: str, name: str) -> str | None:
    if given is None:
        return None
    if str(given) != AUTO:
        return str(given)
    if churn_ref.startswith("models:/"):
        return f"models:/{name}@champion"
    found = _newest_bundle(Path(churn_ref).parent, kind)
    return str(found) if found else None
