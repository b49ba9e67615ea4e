"""The registered MLflow model: churnlens's pyfunc around the bundle. Its signature says what
predict returns, integers are accepted where floats are meant, an event log scores exactly
as `churnlens score` does, the registry copy is verified like a local bundle, and it loads in
a fresh environment built from its own requirements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from churnlens import build_features
from churnlens.bundle import load_bundle
from churnlens.cli import app
from churnlens.model_source import load_models
from churnlens.scoring import score
from tests.conftest import AS_OF, SETTINGS

runner = CliRunner()


# one worker builds the module's fixture once (with --dist loadgroup)
pytestmark = pytest.mark.xdist_group("pyfunc")


@pytest.fixture(scope="module")
def registered(sample_log_path: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Train with tracking into a store of this module's own; the churn model's folder as
    MLflow serves it, its bundle and the features as of AS_OF."""
    import mlflow

    from churnlens.training import train

    root = tmp_path_factory.mktemp("pyfunc")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    settings = SETTINGS.with_overrides(tracking={"uri": uri})
    trained = train(sample_log_path, AS_OF, settings, root / "models", track=True)
    mlflow.set_tracking_uri(uri)
    folder = mlflow.artifacts.download_artifacts(
        artifact_uri="models:/churnlens-churn/1", dst_path=str(root / "served")
    )
    return {
        "uri": uri,
        "settings": settings,
        "folder": Path(folder),
        "bundle": trained.bundle,
        "features": build_features(pd.read_parquet(sample_log_path), AS_OF, SETTINGS),
    }


def _load(folder: Path):
    import mlflow.pyfunc

    return mlflow.pyfunc.load_model(str(folder))


def test_the_signature_says_exactly_what_predict_returns(registered) -> None:
    model = _load(registered["folder"])
    signature = model.metadata.signature
    out = model.predict(registered["features"].reset_index())
    # the value model trained with the churn model is served with it
    assert list(out.columns) == [
        "customer_id", "churn_probability", "reasons", "expected_value", "value_if_retained"
    ]  # fmt: skip
    assert signature.outputs.input_names() == list(out.columns)
    types = {c.name: str(c.type).removeprefix("DataType.") for c in signature.outputs.inputs}
    assert types["churn_probability"] == "double" and types["customer_id"] == "string"
    assert types["expected_value"] == types["value_if_retained"] == "double"
    assert "string" in types["reasons"] and types["reasons"] != "string"
    assert isinstance(out["reasons"].iloc[0], list | np.ndarray)
    assert out["churn_probability"].dtype == np.float64
    assert all(not c.required for c in signature.inputs.inputs)
    assert [p.name for p in signature.params.params] == ["as_of"]
    # logged from code: nothing of the model is pickled
    assert (
        "loader_module: mlflow.pyfunc.loaders.code_model"
        in (registered["folder"] / "MLmodel").read_text()
    )
    assert not list(registered["folder"].rglob("*.pkl")) and not list(
        registered["folder"].rglob("*.joblib")
    )


def test_integer_inputs_are_accepted_and_score_like_the_bundle(registered) -> None:
    X = registered["features"]
    ints = X.copy()
    whole = [c for c in X if X[c].notna().all() and (X[c] == X[c].round()).all()]
    ints[whole] = ints[whole].astype("int64")
    assert len(whole) >= 5
    out = _load(registered["folder"]).predict(ints.reset_index()).set_index("customer_id")
    bundle_model, _ = load_bundle(registered["bundle"])
    expected = bundle_model.predict_columns(X)["churn_probability"]
    np.testing.assert_allclose(out["churn_probability"], expected.loc[out.index], atol=1e-12)
    also = _load(registered["folder"]).predict(ints)  # customer_id as the index
    assert list(also["customer_id"]) == list(out.index)


def test_an_event_log_scores_exactly_as_churnlens_score(
    registered, sample_log_path: Path, tmp_path: Path
) -> None:
    events = pd.read_parquet(sample_log_path)
    out = _load(registered["folder"]).predict(events, params={"as_of": AS_OF})
    scored = score(
        sample_log_path, AS_OF, tmp_path / "s.parquet", load_models(registered["bundle"])
    )
    assert scored is not None
    scores = pd.read_parquet(tmp_path / "s.parquet").set_index("customer_id")
    got = out.set_index("customer_id")["churn_probability"]
    assert set(got.index) == set(scores.index)
    np.testing.assert_allclose(got, scores.loc[got.index, "churn_probability"], atol=1e-12)
    for column in ("expected_value", "value_if_retained"):
        values = out.set_index("customer_id")[column]
        np.testing.assert_allclose(values, scores.loc[values.index, column], rtol=1e-12)


def test_the_input_example_read_back_with_plain_pandas_predicts(registered) -> None:
    example = json.loads((registered["folder"] / "input_example.json").read_text())
    frame = pd.DataFrame(example["data"], columns=example["columns"])
    out = _load(registered["folder"]).predict(frame)
    assert len(out) == len(frame) and out["churn_probability"].between(0, 1).all()


def test_a_tampered_registry_copy_is_refused_like_a_local_bundle(
    registered, events_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", registered["uri"])
    mlflow.set_tracking_uri(registered["uri"])
    version = mlflow.MlflowClient().get_model_version("churnlens-churn", "1")
    logged = mlflow.get_logged_model(version.source.removeprefix("models:/"))
    stored = Path(logged.artifact_location.removeprefix("file://"))
    target = stored / "artifacts" / registered["bundle"].name / "model.json"  # not the value's
    original = target.read_bytes()
    try:
        target.write_bytes(original + b" ")
        args = ["score", str(events_path), "--as-of", AS_OF, "--out", str(tmp_path / "s.csv"),
                "--model", "models:/churnlens-churn/1", "--no-track"]  # fmt: skip
        result = runner.invoke(app, args)
        assert result.exit_code == 1
        assert "does not match the SHA-256" in " ".join(result.output.split())
        assert "models:/churnlens-churn/1" in result.output
        assert not (tmp_path / "s.csv").exists()
    finally:
        target.write_bytes(original)
    # an MLmodel pointing the bundle outside the downloaded model is refused too
    mlmodel = stored / "MLmodel"
    described = mlmodel.read_text()
    elsewhere = registered["bundle"].resolve()
    relative = target.parent.relative_to(stored)
    try:
        mlmodel.write_text(described.replace(f"path: {relative}", f"path: {elsewhere}"))
        assert str(elsewhere) in mlmodel.read_text()
        result = runner.invoke(app, args)
        assert result.exit_code == 1 and "holds no churnlens bundle" in result.output, result.output
    finally:
        mlmodel.write_text(described)


@pytest.mark.slow
def test_the_registered_model_loads_in_a_fresh_environment_from_its_requirements(
    registered, sample_log_path: Path, tmp_path: Path
) -> None:
    """A virtual environment with nothing but the model's requirements.txt (churnlens is
    not installed: its code comes with the model) scores as the bundle does here."""
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    requirements = str(registered["folder"] / "requirements.txt")
    pip = [str(env / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-compile",
           "--disable-pip-version-check", "-r", requirements]  # fmt: skip
    subprocess.run(pip, check=True, capture_output=True, timeout=900)
    script = tmp_path / "load.py"
    script.write_text(
        "import importlib.metadata as md, sys, json\n"
        "import mlflow.pyfunc, pandas as pd\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "import churnlens\n"
        "out = model.predict(pd.read_parquet(sys.argv[2]), params={'as_of': sys.argv[3]})\n"
        "out[['customer_id', 'churn_probability']].to_parquet(sys.argv[4])\n"
        "try:\n    md.version('churnlens'); installed = True\n"
        "except md.PackageNotFoundError:\n    installed = False\n"
        "print(json.dumps({'installed': installed, 'code': churnlens.__file__}))\n"
    )
    result_path = tmp_path / "out.parquet"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(
        [str(env / "bin" / "python"), str(script), str(registered["folder"]),
         str(sample_log_path), AS_OF, str(result_path)],
        capture_output=True, text=True, timeout=600, env=clean, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    told = json.loads(done.stdout.strip().splitlines()[-1])
    assert told["installed"] is False and str(registered["folder"]) in told["code"]
    fresh = pd.read_parquet(result_path).set_index("customer_id")["churn_probability"]
    bundle_model, _ = load_bundle(registered["bundle"])
    here = bundle_model.predict_columns(registered["features"])["churn_probability"]
    np.testing.assert_allclose(fresh, here.loc[fresh.index], atol=1e-12)
