"""Writing result tables safely: checked before work starts, replaced atomically.

A result is written to a temporary file beside its destination and renamed over it only
when complete, so a crash or a kill never leaves a partial file and never destroys the
previous result.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from churnlens.errors import InputError, Problem

TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz")


def _problem(path: Path, message: str, fix: str) -> InputError:
    return InputError(str(path), [Problem(column="--out", message=message, fix=fix)])


def check_output_path(path: str | Path, suffixes: tuple[str, ...] = TABLE_SUFFIXES) -> Path:
    """Fail early, before any work, when ``path`` cannot take the result."""
    path = Path(path)
    if path.is_dir():
        raise _problem(path, "the output path is a directory", "give a file name inside it")
    if not path.name.lower().endswith(suffixes):
        raise _problem(
            path, "unsupported output type", f"end the name with {' or '.join(suffixes)}"
        )
    parent = path.parent.resolve()
    existing = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK)):
        raise _problem(path, f"cannot write into {existing}", "choose a writable folder")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed over ``path`` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_table(frame: pd.DataFrame, path: str | Path, *, index: bool = False) -> Path:
    """Write ``frame`` as Parquet or CSV (by extension) atomically; returns the path."""
    path = check_output_path(path)
    with atomic_path(path) as tmp:
        if path.name.lower().endswith(".parquet"):
            frame.to_parquet(tmp, index=index)
        else:
            compression = "gzip" if path.name.lower().endswith(".gz") else None
            frame.to_csv(tmp, index=index, compression=compression)
    return path
