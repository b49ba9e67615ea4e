"""Model bundles on disk: joblib payload plus a manifest with SHA-256 of every file.

A bundle is a directory written to a temporary name and renamed when complete, so a
killed run never leaves half a bundle. Loading checks every file's hash against the
manifest before anything is unpickled, and refuses a modified bundle.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import joblib

from churnlens.errors import ModelError, OutputError

MANIFEST = "manifest.json"
PAYLOAD = "model.joblib"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_bundle(directory: str | Path, payload: Any, manifest: dict[str, Any]) -> Path:
    """Write ``payload`` (joblib) and ``manifest`` (JSON) atomically as ``directory``."""
    directory = Path(directory)
    if directory.exists():
        raise ModelError(f"{directory}: a bundle already exists there; choose another name")
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    except OSError as exc:
        where = directory.parent
        raise OutputError(f"{where}: cannot write a model bundle there ({exc.strerror})") from None
    try:
        joblib.dump(payload, tmp / PAYLOAD, compress=3)
        files = {PAYLOAD: _sha256(tmp / PAYLOAD)}
        text = json.dumps({**manifest, "files": files}, indent=2, sort_keys=True, default=str)
        (tmp / MANIFEST).write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, directory)
    except OSError as exc:
        raise OutputError(
            f"{directory}: the model bundle cannot be written ({exc.strerror}); nothing was "
            "saved there. Free space or fix the permissions, then train again"
        ) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return directory


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The manifest of a bundle, without loading the model."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ModelError(f"{directory}: not a churnlens model bundle (no {MANIFEST})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: unreadable manifest ({exc})") from None


def load_bundle(directory: str | Path) -> tuple[Any, dict[str, Any]]:
    """The payload and manifest of a bundle, after checking every file's SHA-256."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    files = manifest.get("files") or {}
    if PAYLOAD not in files:
        raise ModelError(f"{directory}: the manifest lists no {PAYLOAD}")
    for name, expected in files.items():
        path = directory / name
        if not path.is_file() or _sha256(path) != expected:
            raise ModelError(
                f"{path}: does not match the SHA-256 in its manifest; the bundle was "
                "modified or is incomplete, so it is not loaded. Retrain or restore it"
            )
    return joblib.load(directory / PAYLOAD), manifest
