"""Model bundles on disk: a model kind's own files plus a manifest with SHA-256 of each.

A bundle is a directory written to a temporary name and renamed when complete, so a
killed run never leaves half a bundle. The model writes its files through the model
protocol (:meth:`~churnlens.models.base.ChurnlensModel.save`), without pickle (see
:mod:`churnlens.models.state`); the manifest records its ``kind``, metadata, format and
every file's hash. Loading checks every file's hash against the manifest before anything
is read, refuses a modified bundle, and rebuilds the model through its kind's
:meth:`~churnlens.models.base.ChurnlensModel.load`.

**Authenticity.** Hashes beside the files stop corruption, not someone who can write the
folder: they can rewrite the manifest too. With ``CHURNLENS_SIGNING_KEY`` set, bundles are
signed (HMAC-SHA-256 of the manifest's bytes, in ``manifest.sig``) and a bundle whose
signature does not verify with that key, or that has none, is refused before its manifest
is parsed. Without a key, bundles are written and read unsigned and say so.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import platform
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from churnlens import __version__
from churnlens.errors import ModelError, OutputError
from churnlens.models.base import PICKLED, ChurnlensModel, model_class
from churnlens.models.state import FORMAT
from churnlens.outputs import sha256_file
from churnlens.work_folders import sweep_dead_work, work_prefix

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
KEY_VARIABLE = "CHURNLENS_SIGNING_KEY"
MIN_KEY_BYTES = 16


def signing_key() -> bytes | None:
    """The bundle signing key from ``CHURNLENS_SIGNING_KEY`` (None when unset)."""
    text = os.environ.get(KEY_VARIABLE, "")
    if not text:
        return None
    key = text.encode("utf-8")
    if len(key) < MIN_KEY_BYTES:
        raise ModelError(
            f"{KEY_VARIABLE} holds {len(key)} bytes; use a secret of at least "
            f"{MIN_KEY_BYTES} (e.g. `python -c 'import secrets; print(secrets.token_hex(32))'`)"
        )
    return key


def _signature(key: bytes, manifest: bytes) -> str:
    return "hmac-sha256:" + hmac.new(key, manifest, hashlib.sha256).hexdigest()


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
        key = signing_key()
        written = model.save(tmp)
        files = {name: sha256_file(tmp / name) for name in written}
        described = {
            **manifest,
            "kind": model.kind,
            "model": model.metadata(),
            "files": files,
            "format": FORMAT,
            "signed": key is not None,
        }
        text = json.dumps(described, indent=2, sort_keys=True, default=str) + "\n"
        (tmp / MANIFEST).write_bytes(text.encode("utf-8"))
        if key is not None:
            (tmp / SIGNATURE).write_text(_signature(key, text.encode("utf-8")) + "\n")
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


def read_manifest(directory: str | Path, verify: bool = False) -> dict[str, Any]:
    """The manifest of a bundle, without loading the model; with ``verify``, only after
    its signature verified when a signing key is set."""
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ModelError(f"{directory}: not a churnlens model bundle (no {MANIFEST})")
    raw = path.read_bytes()
    if verify and (key := signing_key()) is not None:
        _verify(Path(directory), key, raw)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"{path}: unreadable manifest ({str(exc)[:200]})") from None
    files = manifest.get("files", {}) if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in files.values()
    ):
        raise ModelError(f"{path}: unreadable manifest (not a JSON object with file hashes)")
    for key in ("settings", "versions", "model"):
        if not isinstance(manifest.get(key, {}), dict):
            raise ModelError(f"{path}: unreadable manifest ({key!r} is not an object)")
    return manifest


def _verify(directory: Path, key: bytes, raw: bytes) -> None:
    sig = directory / SIGNATURE
    if not sig.is_file():
        raise ModelError(
            f"{directory}: the bundle is not signed, and {KEY_VARIABLE} is set, so only signed "
            "bundles are loaded. Retrain with the key set, or unset it to accept unsigned ones"
        )
    found = sig.read_text(encoding="utf-8", errors="replace").strip()
    if not hmac.compare_digest(found.encode(), _signature(key, raw).encode()):
        raise ModelError(
            f"{directory}: the bundle's signature does not verify with {KEY_VARIABLE}: it was "
            "changed after training or signed with another key, so it is not loaded"
        )


def check_files(directory: Path, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Each model file's bytes, after refusing a bundle of the old pickle format or whose
    files do not match their hashes. The bytes returned are the bytes hashed: the model is
    parsed from them, so no file can be swapped between the check and the load."""
    files = manifest.get("files") or {}
    if not files:
        raise ModelError(f"{directory}: the manifest lists no model files")
    if PICKLED in files or manifest.get("format") != FORMAT:
        as_of = manifest.get("as_of") or "AS_OF"
        raise ModelError(
            f"{directory}: a bundle of the old pickle format, which churnlens no longer loads "
            "(unpickling a file runs whatever code it holds). Retrain it (`churnlens train "
            f"EVENTS --as-of {as_of} --models-dir {directory.parent}`), or, if you trust its "
            f"origin, convert it once: `churnlens models convert --trust-pickle {directory}`"
        )
    contents = {}
    for name, expected in files.items():
        path = directory / name
        data = path.read_bytes() if Path(name).name == name and path.is_file() else None
        if data is None or hashlib.sha256(data).hexdigest() != expected:
            raise ModelError(
                f"{path}: does not match the SHA-256 in its manifest; the bundle was "
                "modified or is incomplete, so it is not loaded. Retrain or restore it"
            )
        contents[name] = data
    return contents


def load_bundle(
    directory: str | Path, kind: str | None = None
) -> tuple[ChurnlensModel, dict[str, Any]]:
    """The model and manifest of a bundle, after checking its signature (when
    ``CHURNLENS_SIGNING_KEY`` is set) and every file's SHA-256 (and, with ``kind``, that it
    holds that kind of model)."""
    directory = Path(directory)
    manifest = read_manifest(directory, verify=True)
    found = manifest.get("kind")
    if kind is not None and found != kind:
        raise ModelError(f"{directory}: a {found or 'unknown'} bundle, not a {kind} bundle")
    contents = check_files(directory, manifest)
    try:
        model = model_class(str(found)).load(contents, manifest.get("model") or {})
    except ModelError as exc:
        raise ModelError(f"{directory}: {exc}") from None
    return model, manifest


def convert_pickled(directory: str | Path, sign: bool = False) -> Path:
    """Rewrite a bundle of the old pickle format in today's format, in place (trusting
    its pickle: the one explicit exception, ``churnlens models convert --trust-pickle``).
    The old bundle is kept beside it until the new one is in place. With a signing key
    set, the old bundle's signature must verify, or ``sign`` must say that the operator
    vouches for it: converting never turns a planted bundle into a signed one unasked."""
    import joblib

    directory = Path(directory)
    if signing_key() is not None and not sign:
        read_manifest(directory, verify=True)  # refuses an unsigned or changed bundle
    manifest = read_manifest(directory)
    files = manifest.get("files") or {}
    if PICKLED not in files:
        raise ModelError(f"{directory}: not a bundle of the old pickle format; nothing to do")
    for name, expected in files.items():
        if sha256_file(directory / name) != expected:
            raise ModelError(f"{directory / name}: does not match its manifest; not converted")
    model = joblib.load(directory / PICKLED)
    kind = manifest.get("kind")
    if not isinstance(model, ChurnlensModel) or model.kind != kind:
        raise ModelError(f"{directory}: its pickle holds no {kind} model; not converted")
    kept = {k: v for k, v in manifest.items() if k not in ("files", "kind", "model", "format")}
    staged = directory.with_name(f".{directory.name}.converted-{os.getpid()}")
    backup = directory.with_name(f".{directory.name}.pickled-{os.getpid()}")
    write_bundle(staged, model, {**kept, "converted_from": "pickle"})
    os.replace(directory, backup)
    os.replace(staged, directory)
    shutil.rmtree(backup, ignore_errors=True)
    return directory
