"""The MLflow model churnlens registers: a pyfunc that scores with a verified bundle.

Every registered version holds the model's bundle (``artifacts/bundle``, exactly the files
``train`` wrote, with their manifest and signature), churnlens's own code (``code/``) and
requirements pinned to the versions the model was trained with. Nothing in it is pickled:
the model is logged "from code" (:mod:`churnlens.tracking.pyfunc_entry`), and loading it,
with ``mlflow.pyfunc.load_model`` in a notebook or by churnlens from the registry, goes
through :func:`~churnlens.bundle.load_bundle`, so the registry copy is verified exactly like
a local bundle (hashes, and the signature when ``CHURNLENS_SIGNING_KEY`` is set).

``predict`` takes either

- **a feature frame**: the model's feature columns (integers are accepted where a float
  is meant) and ``customer_id`` as a column or the index; or
- **an event log** (the event-log contract's columns) with ``params={"as_of": "YYYY-MM-DD"}``:
  features are built as ``churnlens score`` builds them, so the churn probabilities equal
  that command's;

and returns one row per customer: ``customer_id`` and the model kind's columns
(``churn_probability`` and ``reasons``, then ``expected_value`` and ``value_if_retained``
when the value model was trained with it; the value model's pyfunc: those two;
segments: ``segment_id`` and ``segment_name``; the uplift columns). The signature states
exactly these.
"""

from __future__ import annotations

import importlib.metadata as metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from churnlens.errors import ModelError

BUNDLE = "bundle"
EVENT_COLUMNS = ("timestamp", "channel", "event_type", "amount", "direction", "duration_s")
# what the pyfunc imports at run time (the CLI's typer, plots and statistics are not needed)
RUNTIME = (
    "numpy", "pandas", "pyarrow", "duckdb", "pydantic", "pyyaml", "rich", "scikit-learn",
    "scipy", "lightgbm", "joblib", "mlflow-skinny",
)  # fmt: skip


def requirements() -> list[str]:
    """The pyfunc's requirements, pinned to the installed (training) versions."""
    pinned = []
    for name in RUNTIME:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            if name != "mlflow-skinny":
                raise
            name, version = "mlflow-skinny", metadata.version("mlflow")
        pinned.append(f"{name}=={version}")
    return pinned


def features_of(
    models: list[Any], manifest: dict[str, Any], data: pd.DataFrame, params: dict[str, Any] | None
) -> pd.DataFrame:
    """The feature frame (indexed by customer id) the ``models`` score, from either kind of
    input."""
    names = list(dict.fromkeys(n for m in models for n in m.feature_names_in_))
    as_of = (params or {}).get("as_of")
    if as_of is not None or ("timestamp" in data.columns and "event_type" in data.columns):
        if as_of is None:
            raise ModelError("an event log needs params={'as_of': 'YYYY-MM-DD'}")
        from churnlens.config import settings_from_dict
        from churnlens.features import build_features

        settings = settings_from_dict(manifest["settings"], source="the model's manifest")
        return build_features(data, str(as_of), settings)[names]
    frame = data.set_index("customer_id") if "customer_id" in data.columns else data
    missing = [c for c in names if c not in frame.columns]
    if missing:
        raise ModelError(
            f"the input lacks {len(missing)} of the model's {len(names)} feature columns "
            f"(e.g. {missing[:3]}); pass the feature frame `churnlens features` writes, or an "
            "event log with params={'as_of': ...}"
        )
    out = frame[names].apply(pd.to_numeric, errors="raise").astype(float)
    out.index = out.index.astype(str).rename("customer_id")
    return out


def predict_frame(
    model: Any,
    manifest: dict[str, Any],
    data: pd.DataFrame,
    params: dict[str, Any] | None,
    companions: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """The pyfunc's output for ``data`` (see the module docstring): the model's columns,
    then each companion model's (the value model registered with the churn model)."""
    companions = companions or {}
    X = features_of([model, *companions.values()], manifest, data, params)
    parts = [model.predict_columns(X[list(model.feature_names_in_)])]
    for other in companions.values():
        parts.append(other.predict_columns(X[list(other.feature_names_in_)]))
    out = pd.concat(parts, axis=1).reset_index(names="customer_id")
    for name in out.columns:
        if out[name].dtype.kind in "iu":
            out[name] = out[name].astype(np.int64)
    return out


class BundleModel:
    """The pyfunc's model (the base class comes from MLflow when it is logged or loaded)."""

    def load_context(self, context: Any) -> None:
        from churnlens.bundle import load_bundle

        self.model, self.manifest = load_bundle(Path(context.artifacts[BUNDLE]))
        self.companions = {
            name: load_bundle(Path(path), name)[0]
            for name, path in sorted(context.artifacts.items())
            if name != BUNDLE
        }

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return predict_frame(self.model, self.manifest, model_input, params, self.companions)


def pyfunc_class() -> type:
    """:class:`BundleModel` as an ``mlflow.pyfunc.PythonModel``."""
    import mlflow.pyfunc

    return type("ChurnlensBundleModel", (BundleModel, mlflow.pyfunc.PythonModel), {})


def signature_for(
    model: Any, manifest: dict[str, Any], example: pd.DataFrame, companions: dict[str, Any]
) -> Any:
    """Input: the feature columns (any number type) or the event log's, all optional, and
    an optional ``as_of`` param; output: exactly what :func:`predict_frame` returns."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, ParamSchema, ParamSpec, Schema

    models = [model, *companions.values()]
    features = dict.fromkeys(n for m in models for n in m.feature_names_in_)
    names = ["customer_id", *features, *EVENT_COLUMNS]
    inputs = Schema([ColSpec(AnyType(), name, required=False) for name in names])
    output = predict_frame(model, manifest, example, None, companions)
    outputs = Schema([ColSpec(_column_type(output[c]), c) for c in output.columns])
    params = ParamSchema([ParamSpec("as_of", "string", None)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


# MLflow's column type of each numpy dtype kind with one (the rest is text or arrays)
SCALAR_TYPES = {"f": "double", "i": "long", "u": "long", "b": "boolean"}


def _column_type(values: pd.Series) -> Any:
    from mlflow.types.schema import Array

    kind = values.dtype.kind
    if kind in SCALAR_TYPES:
        return SCALAR_TYPES[kind]
    first = values.dropna().iloc[0] if values.notna().any() else ""
    return Array("string") if isinstance(first, (list, tuple, np.ndarray)) else "string"


def code_folder() -> Path:
    """churnlens's package folder (logged with the model as its code)."""
    import churnlens

    return Path(churnlens.__file__).parent
