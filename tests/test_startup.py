"""Start-up stays light: ``churnlens --version`` and ``--help`` import none of the data stack,
and the package root imports its public names only when they are first used."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import churnlens

HEAVY = (
    "pandas",
    "numpy",
    "duckdb",
    "pyarrow",
    "sklearn",
    "lightgbm",
    "mlflow",
    "scipy",
    "matplotlib",
)
PUBLIC = [
    "ChurnlensError",
    "ConfigError",
    "InputError",
    "ModelError",
    "PopulationStats",
    "Settings",
    "__version__",
    "build_features",
    "compute_population",
    "feature_names",
    "load_events",
    "load_settings",
    "read_events",
]


def fresh_python(code: str) -> dict:
    """Run ``code`` in a new interpreter; it prints one JSON value, returned here."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_version_and_help_import_none_of_the_data_stack() -> None:
    found = fresh_python(
        f"""
import json, sys
from typer.testing import CliRunner
import churnlens.cli
runner = CliRunner()
outputs = {{}}
for args in (["--version"], ["--help"], ["score", "--help"], ["models", "--help"]):
    result = runner.invoke(churnlens.cli.app, args)
    assert result.exit_code == 0, (args, result.output)
    outputs[" ".join(args)] = result.output
print(json.dumps({{"loaded": [m for m in {HEAVY!r} if m in sys.modules], "outputs": outputs}}))
"""
    )
    assert found["loaded"] == []
    # the invocations did run: the version, the commands and the score options were shown
    assert found["outputs"]["--version"].strip() == f"churnlens {churnlens.__version__}"
    assert "features" in found["outputs"]["--help"] and "score" in found["outputs"]["--help"]
    assert "--population" in found["outputs"]["score --help"]
    assert "list" in found["outputs"]["models --help"]


def test_the_package_root_imports_its_names_on_first_use() -> None:
    found = fresh_python(
        f"""
import json, sys
import churnlens
before = [m for m in {HEAVY!r} if m in sys.modules]
names = sorted(churnlens.__all__)
listed = sorted(set(names) & set(dir(churnlens)))
build = churnlens.build_features
from churnlens.features.aggregation import build_features
print(json.dumps({{
    "before": before,
    "names": names,
    "listed": listed,
    "same": build is build_features,
    "pandas_after": "pandas" in sys.modules,
}}))
"""
    )
    assert found["before"] == []
    assert found["names"] == sorted(PUBLIC)
    assert found["listed"] == sorted(PUBLIC)
    assert found["same"] and found["pandas_after"]


def test_every_public_name_resolves_to_its_module_object() -> None:
    from churnlens import config, errors, events, features

    assert churnlens.__all__ == PUBLIC
    assert set(PUBLIC) <= set(dir(churnlens))
    homes = {
        "ChurnlensError": errors,
        "ConfigError": errors,
        "InputError": errors,
        "ModelError": errors,
        "PopulationStats": features,
        "Settings": config,
        "build_features": features,
        "compute_population": features,
        "feature_names": features,
        "load_events": events,
        "load_settings": config,
        "read_events": events,
    }
    for name, module in homes.items():
        assert getattr(churnlens, name) is getattr(module, name), name
    namespace: dict[str, object] = {}
    exec("from churnlens import *", namespace)
    assert set(PUBLIC) <= set(namespace)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        churnlens.no_such_name  # noqa: B018
    assert not hasattr(churnlens, "no_such_name")
