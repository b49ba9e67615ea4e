"""Writing results safely: checked before work starts, replaced atomically, never over an input.

A result is written to a temporary file beside its destination and renamed over it only
when complete, so a crash or a kill never leaves a partial file and never destroys the
previous result. A result with a manifest (the scores file) is replaced as one step with
it: see :func:`replace_with_manifest`. Every output path is checked against the job's
inputs first, so a job never writes over the file (or into the folder) it reads.

Fault injection for the tests: with ``CHURNLENS_FAULT=<point>`` in the environment the
process kills itself (SIGKILL) at that named point of :func:`replace_with_manifest`
(``after-commit``: the new manifest is in place, the new result not yet renamed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from churnlens.errors import InputError, OutputError, Problem

TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz")


def _problem(path: Path, message: str, fix: str) -> InputError:
    return InputError(str(path), [Problem(column="--out", message=message, fix=fix)])


def check_output_path(
    path: str | Path,
    suffixes: tuple[str, ...] = TABLE_SUFFIXES,
    inputs: Iterable[object] = (),
) -> Path:
    """Fail early, before any work, when ``path`` cannot take the result or would write
    over one of ``inputs`` (paths; anything else, such as a DataFrame, is ignored)."""
    path = Path(path)
    check_not_input(path, inputs)
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


def _companions(out: Path) -> tuple[Path, ...]:
    """Every file a job writing ``out`` creates at a fixed name."""
    return (out, manifest_path(out), out.with_name(out.name + ".lock"))


def check_not_input(out: str | Path, inputs: Iterable[object]) -> None:
    """Refuse an output that is one of ``inputs`` or one of their manifests or lock files
    (or whose own manifest or lock file is), or that lies inside an input folder: the job
    would overwrite, or read back, what it writes."""
    out = Path(out)
    targets = [p.resolve() for p in _companions(out)]
    for item in inputs:
        if not isinstance(item, (str, Path)) or str(item).startswith("models:/"):
            continue
        source = Path(item)
        if not source.exists():
            continue
        real = source.resolve()
        for target in targets:
            for kept in (p.resolve() for p in _companions(source)):
                if target == kept or (
                    target.exists() and kept.exists() and os.path.samefile(target, kept)
                ):
                    what = "the input" if kept == real else "a companion file of the input"
                    raise _problem(
                        out,
                        f"the output {target.name} is {what} {source}: writing it would "
                        "destroy the input",
                        "write the result to another path",
                    )
            if real.is_dir() and target.is_relative_to(real):
                raise _problem(
                    out,
                    f"the output lies inside the input folder {source}: the next read of "
                    "that folder would take it for input",
                    "write the result outside the input folder",
                )


def manifest_path(out: str | Path) -> Path:
    """Where the manifest of the result ``out`` lives: ``<out>.manifest.json``."""
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def output_failure(path: Path, exc: BaseException) -> OutputError:
    """The error for an operating-system failure while writing ``path``."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    code = re.search(r"errno\W{0,3}(\d+)", reason)  # pyarrow and DuckDB put it in the text
    first = os.strerror(int(code[1])) if code else (reason.strip().splitlines() or ["?"])[0]
    return OutputError(
        f"{path}: cannot be written ({first}); any earlier file there is unchanged. "
        "Free space or fix the permissions, then run again"
    )


def _temporary(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise output_failure(path, exc) from None
    os.close(fd)
    return Path(tmp)


def publish_mode(destination: str | Path) -> int:
    """The mode a result written to ``destination`` gets: the mode of the file it
    replaces (an operator's ``chmod 640`` survives the nightly job), else the one a plain
    ``open()`` gives under the umask. A result's manifest and report take the result's."""
    try:
        return stat.S_IMODE(os.stat(destination).st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | Path, mode: int | None = None) -> Iterator[Path]:
    """A temporary path beside ``path``; renamed over ``path`` when the block succeeds,
    with ``mode`` (default: :func:`publish_mode`; mkstemp's own is 0600).

    An operating-system error (a full disk, a read-only folder) becomes one
    :class:`~churnlens.errors.OutputError`; the earlier file at ``path`` is untouched.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        yield tmp
        os.chmod(tmp, publish_mode(path) if mode is None else mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise output_failure(path, exc) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def sha256_file(path: str | Path) -> str:
    """The hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fault(point: str) -> None:
    """The test hook of the module docstring: die here when asked to."""
    if os.environ.get("CHURNLENS_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)


def pending_path(out: Path) -> Path:
    """Where a replacement of ``out`` waits between its commit point and its rename."""
    return out.with_name(f".{out.name}.pending")


def part_files(folder: Path) -> dict[str, int]:
    """The Parquet part files of a dataset folder and their sizes, by name."""
    return {p.name: p.stat().st_size for p in sorted(folder.glob("*.parquet")) if p.is_file()}


def manifest_file(target: Path, manifest: dict[str, Any], mode: int) -> Path:
    """``manifest`` as JSON in a temporary file beside ``target``, on disk (fsync) with
    ``mode``: ready to be renamed onto ``target`` (the commit point of a replacement)."""
    tmp = _temporary(target)
    try:
        text = json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n"
        tmp.write_text(text, "utf-8")
        _fsync(tmp)
        os.chmod(tmp, mode)
    except BaseException:  # the caller never learns its name: remove it here
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def replace_with_manifest(
    out: str | Path,
    write: Callable[[Path], None],
    manifest: dict[str, Any] | Callable[[], dict[str, Any]],
) -> tuple[Path, dict[str, Any]]:
    """Write a result with ``write(tmp)`` and replace ``out`` and its manifest together.

    ``manifest`` may be a function, called once the result is written. The manifest
    gets ``output_sha256``, the SHA-256 of the new result. Order of the
    steps: result and manifest under temporary names (both fsynced); the result renamed
    to ``.<out>.pending``; the manifest renamed into place (the commit point); the
    pending result renamed over ``out``. A failure before the commit leaves the earlier
    pair untouched; a kill after it leaves the new manifest and ``.<out>.pending``, which
    :func:`recover_interrupted` (run by the next job on ``out``) renames into place.
    Readers check the pairing with :func:`read_paired_manifest`.
    """
    out = Path(out)
    target = manifest_path(out)
    tmp, pending = _temporary(out), pending_path(out)
    tmp_manifest: Path | None = None
    committed = False
    try:
        try:
            write(tmp)
            _fsync(tmp)
            described = manifest() if callable(manifest) else manifest
            manifest = {**described, "output_sha256": sha256_file(tmp)}
            mode = publish_mode(out)  # the manifest takes the result's mode
            tmp_manifest = manifest_file(target, manifest, mode)
            os.chmod(tmp, mode)
            os.replace(tmp, pending)
            os.replace(tmp_manifest, target)
            committed = True
        except OSError as exc:
            raise output_failure(out, exc) from None
        _fault("after-commit")
        try:
            os.replace(pending, out)
        except OSError as exc:
            raise OutputError(
                f"{out}: the new result could not be renamed into place ({exc.strerror}); "
                f"it is kept as {pending.name} and the next run on this output completes it"
            ) from None
    finally:
        for leftover in (tmp, tmp_manifest, *(() if committed else (pending,))):
            if leftover is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)
    return target, manifest


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


def read_paired_manifest(out: str | Path) -> dict[str, Any] | None:
    """The manifest of the result ``out``, checked to describe exactly that file; ``None``
    when there is none. Raises :class:`InputError` when it describes another result."""
    out = Path(out)
    path = manifest_path(out)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(
            str(path), [Problem("manifest", f"cannot be read ({exc})", fix="rerun the job")]
        ) from None
    if not isinstance(manifest, dict):
        raise InputError(
            str(path),
            [
                Problem(
                    "manifest",
                    f"holds a JSON {type(manifest).__name__}, not the object a churnlens "
                    "job writes (it was overwritten by another file)",
                    fix="rerun the job that writes the result, to write its manifest again",
                )
            ],
        )
    expected = manifest.get("output_sha256")
    if expected and sha256_file(out) != expected:
        raise InputError(
            str(out),
            [
                Problem(
                    "manifest",
                    f"{path.name} describes another version of this file (a run was "
                    "interrupted while replacing them, or the file was changed by hand)",
                    fix="rerun the job that writes it: it completes or undoes the interrupted "
                    "replacement first",
                )
            ],
        )
    return manifest


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
            raise _problem(
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


def work_prefix(name: str, kind: str = "work") -> str:
    """The prefix of a hidden work folder for ``name`` owned by this process:
    ``.<name>.<kind>.<pid>.`` (:func:`sweep_dead_work` removes those of dead processes)."""
    return f".{name}.{kind}.{os.getpid()}."


def sweep_dead_work(folder: str | Path) -> int:
    """Remove the hidden work folders (:func:`work_prefix`) in ``folder`` whose process
    is gone: what a job killed with SIGKILL left, whatever output it was writing.
    Returns how many were removed."""

    removed = 0
    for p in Path(folder).glob(".*.*.*.*"):
        match = re.search(r"\.(work|bundle)\.(\d+)\.[^.]*$", p.name)
        if not match or not p.is_dir() or _alive(int(match.group(2))):
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
