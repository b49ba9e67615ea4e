"""Model bundles on disk: a model kind's own files plus a manifest with SHA-256 of each.

A bundle is a directory written to a temporary name and renamed when complete, so a
killed run never leaves half a bundle. The model writes its files through the model
protocol (:meth:`~churnlens.models.base.ChurnlensModel.save`); the manifest records its
``kind``, metadata and every file's hash. Loading checks every file's hash against the
manifest before anything is read, refuses a modified bundle, and rebuilds the model
through its kind's :meth:`~churnlens.models.base.ChurnlensModel.load`.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from churnlens import __version__
from churnlens.errors import ModelError, OutputError
from churnlens.models.base import ChurnlensModel, model_class
from churnlens.outputs import sha256_file, sweep_dead_work, work_prefix

MANIFEST = "manifest.json"


def versions() -> dict[str, str]:
    """Versions of everything a bundle depends on."""
    import duckdb
    import lightgbm
    import numpy as np
    import pandas as pd
    import sklearn

    return {
        "churnlens": __version__,
        "python": platform.python_version(),
        "lightgbm": lightgbm.__version__,
        "scikit-learn": sklearn.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "duckdb": duckdb.__version__,
    }


def write_bundle(directory: str | Path, model: ChurnlensModel, manifest: dict[str, Any]) -> Path:
    """Write ``model`` (its kind's files) and ``manifest`` (JSON) atomically as ``directory``."""
    directory = Path(directory)
    if directory.exists():
        raise ModelError(f"{directory}: a bundle already exists there; choose another name")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        sweep_dead_work(directory.parent)  # partial bundles of killed trainings
        prefix = work_prefix(directory.name, "bundle")
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=directory.parent))
    except OSError as exc:
        where = directory.parent
        raise OutputError(f"{where}: cannot write a model bundle there ({exc.strerror})") from None
    try:
        written = model.save(tmp)
        files = {name: sha256_file(tmp / name) for name in written}
        described = {**manifest, "kind": model.kind, "model": model.metadata(), "files": files}
        text = json.dumps(described, indent=2, sort_keys=True, default=str)
        (tmp / MANIFEST).write_text(text + "\n", encoding="utf-8")
        os.chmod(tmp, 0o755 & ~_umask())
        os.replace(tmp, directory)
    except OSError as exc:
        raise OutputError(
            f"{directory}: the model bundle cannot be written ({exc.strerror}); nothing was "
            "saved there. Free space or fix the permissions, then train again"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a bundle, without loading the model."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ModelError(f"{directory}: not a churnlens model bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: unreadable manifest ({exc})") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{path}: unreadable manifest (not a JSON object)")
    return manifest


def load_bundle(
    directory: str | Path, kind: str | None = None
) -> tuple[ChurnlensModel, dict[str, Any]]:
    """The model and manifest of a bundle, after checking every file's SHA-256 (and,
    with ``kind``, that it holds that kind of model)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    found = manifest.get("kind")
    if kind is not None and found != kind:
        raise ModelError(f"{directory}: a {found or 'unknown'} bundle, not a {kind} bundle")
    files = manifest.get("files") or {}
    if not files:
        raise ModelError(f"{directory}: the manifest lists no model files")
    for name, expected in files.items():
        path = directory / name
        if not path.is_file() or sha256_file(path) != expected:
            raise ModelError(
                f"{path}: does not match the SHA-256 in its manifest; the bundle was "
                "modified or is incomplete, so it is not loaded. Retrain or restore it"
            )
    return model_class(str(found)).load(directory, manifest.get("model") or {}), manifest
