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


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[Path]:
    """Hold ``<path>.lock`` for the length of a job that writes ``path``.

    A second job on the same output fails at once with an :class:`InputError` instead of
    interleaving its work with the first; the lock goes with the process, so a killed
    job never leaves it behind. Yields the lock file's path.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".lock")
    with open(lock, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise _problem(
                path,
                f"another churnlens job ({holder}) is writing this output right now",
                "wait for it to finish, or write to another path",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield lock
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_stale_work(path: str | Path) -> int:
    """Remove the work folders (``.<name>.work.*``) a killed job left beside ``path``;
    call it only while holding :func:`output_lock`. Returns how many were removed."""
    import shutil

    path = Path(path)
    stale = [p for p in path.parent.glob(f".{path.name}.work.*") if p.is_dir()]
    stale += [p for p in path.parent.glob(f".{path.name}.*.tmp") if p.is_file()]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(stale)


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
