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
import signal
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from churnlens.errors import InputError, OutputError, Problem

TABLE_SUFFIXES = (".parquet", ".csv", ".csv.gz")


def output_problem(path: Path, message: str, fix: str) -> InputError:
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
        raise output_problem(path, "the output path is a directory", "give a file name inside it")
    if not path.name.lower().endswith(suffixes):
        raise output_problem(
            path, "unsupported output type", f"end the name with {' or '.join(suffixes)}"
        )
    parent = path.parent.resolve()
    existing = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK)):
        raise output_problem(path, f"cannot write into {existing}", "choose a writable folder")
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
                    raise output_problem(
                        out,
                        f"the output {target.name} is {what} {source}: writing it would "
                        "destroy the input",
                        "write the result to another path",
                    )
            if real.is_dir() and target.is_relative_to(real):
                raise output_problem(
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


def fsync_file(path: Path) -> None:
    """Flush ``path``'s written bytes to the disk (a full disk shows here, not later)."""
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
        fsync_file(tmp)
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
    :func:`churnlens.work_folders.recover_interrupted` (run by the next job on ``out``)
    renames into place. Call it within :func:`churnlens.work_folders.owned_output`, which
    runs that recovery first: a failure here removes ``.<out>.pending`` as its own.
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
            fsync_file(tmp)
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
