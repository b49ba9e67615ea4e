"""One job per output: its lock, its hidden work folders, and what a killed job left.

Every job that writes an output holds ``<out>.lock`` for its length
(:func:`output_lock`; :func:`owned_output` also finishes or undoes first what a killed
job left there: :func:`remove_stale_work`), so two jobs never interleave their writes
and a replacement killed after its commit point (:func:`churnlens.outputs.
replace_with_manifest`) is completed before anything else touches the output. Work
folders are named for the process and host that own them (:func:`work_prefix`) and
swept once that process is gone (:func:`sweep_dead_work`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from churnlens.outputs import (
    manifest_path,
    output_failure,
    output_problem,
    pending_path,
    sha256_file,
)


@contextlib.contextmanager
def output_lock(path: str | Path, remove: bool = False) -> Iterator[Path]:
    """Hold ``<path>.lock`` for the length of a job that writes ``path``.

    A second job on the same output fails at once with an :class:`InputError` instead of
    interleaving its work with the first; the lock goes with the process, so a killed
    job never leaves it behind. With ``remove`` the file is deleted at the end (while
    still locked: a job that locked the deleted file sees it is no longer at the path
    and locks the new one). Yields the lock file's path.
    """
    import fcntl

    path = Path(path)
    lock = path.with_name(path.name + ".lock")
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(lock, "a+")  # noqa: SIM115 (closed by the with below)
        except OSError as exc:
            raise output_failure(lock, exc) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise output_problem(
                path,
                f"another churnlens job ({holder}) is writing this output right now",
                "wait for it to finish, or write to another path",
            ) from None
        if _same_file(handle, lock):
            break
        handle.close()  # removed by the job that held it: lock the file now at the path
    with handle:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        try:
            yield lock
        finally:
            if remove:
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _same_file(handle: Any, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(handle.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def owned_output(out: str | Path, remove: bool = False) -> Iterator[Path]:
    """Hold ``out``'s lock (:func:`output_lock`; ``remove``: no lock file left behind) for
    a whole job, having first completed or undone what a killed job left there
    (:func:`remove_stale_work`): a replacement killed after its commit point is renamed
    into place, so this job's own replacement never deletes a committed result. Yields
    the lock file's path."""
    with output_lock(out, remove=remove) as lock:
        remove_stale_work(out)
        yield lock


def recover_interrupted(out: str | Path) -> bool:
    """Finish a :func:`replace_with_manifest` that was killed after its commit point (the
    pending result matches the manifest: it is renamed into place), or drop a pending
    result the manifest does not describe. Call it only while holding
    :func:`output_lock`. Returns whether a result was renamed into place."""
    out = Path(out)
    pending = pending_path(out)
    if pending.is_dir():  # a Parquet dataset's (the Spark engine's) replacement
        return _recover_dataset(out)
    if not pending.is_file():
        return False
    try:
        expected = json.loads(manifest_path(out).read_text(encoding="utf-8")).get("output_sha256")
    except (OSError, ValueError, AttributeError):
        expected = None
    if expected and sha256_file(pending) == expected:
        os.replace(pending, out)
        return True
    pending.unlink()
    return False


def _recover_dataset(out: Path) -> bool:
    from churnlens.output_datasets import recover_dataset

    aside = Path(tempfile.mkdtemp(prefix=work_prefix(out.name), dir=out.parent))
    try:
        return recover_dataset(out, aside)
    finally:
        shutil.rmtree(aside, ignore_errors=True)


def remove_stale_work(path: str | Path) -> int:
    """Complete or undo an interrupted replacement (:func:`recover_interrupted`), then
    remove the work folders (``.<name>.work.*``) and temporary files a killed job left
    beside ``path``; call it only while holding :func:`output_lock`. Returns how many
    were removed."""

    path = Path(path)
    recover_interrupted(path)
    sweep_dead_work(path.parent)
    stale = [p for p in path.parent.glob(f".{path.name}.work.*") if p.is_dir()]
    stale += [p for p in path.parent.glob(f".{path.name}.*.tmp") if p.is_file()]
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return len(stale)


def remove_work(folder: Path, con: Any = None) -> None:
    """Remove a job's work folder, even while it is being stopped: ``con`` (its DuckDB
    connection, which may still spill into the folder) is closed first, and removal is
    retried while threads finishing their part files add to it."""
    if con is not None:
        with contextlib.suppress(Exception):
            con.close()
    for _ in range(50):
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            return
        time.sleep(0.1)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"


def work_prefix(name: str, kind: str = "work") -> str:
    """The prefix of a hidden work folder for ``name`` owned by this process:
    ``.<name>.<kind>.<pid>-<host>.`` (:func:`sweep_dead_work` removes those of dead
    processes of this host)."""
    return f".{name}.{kind}.{os.getpid()}-{_host()}."


def sweep_dead_work(folder: str | Path) -> int:
    """Remove the hidden work folders (:func:`work_prefix`) in ``folder`` whose process
    is gone: what a job killed with SIGKILL left, whatever output it was writing. Only
    this host's: on a folder shared between machines (NFS, pods), another host's process
    id says nothing here, and its job may be running. Folders named without a host (by
    an earlier churnlens) count as this host's. Returns how many were removed."""

    removed, here = 0, _host()
    for p in Path(folder).glob(".*.*.*.*"):
        match = re.search(r"\.(work|bundle)\.(\d+)(?:-([A-Za-z0-9-]+))?\.[^.]*$", p.name)
        if not match or not p.is_dir() or match.group(3) not in (None, here):
            continue
        if _alive(int(match.group(2))):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, not ours to sweep
        return True
    return True
