"""Reading a scores file written by ``churnlens score`` (Parquet or CSV), with its manifest.

One reader for every command that takes scores back (``report``, ``outcomes``,
``train-uplift``, ``score --previous``): the file must exist, be readable and hold the
columns the command needs; every problem is one :class:`~churnlens.errors.InputError`
naming the file, what is wrong and how to fix it. ``customer_id`` is always read as text,
so a CSV's zero-padded ids ("00042") still match the event log's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from churnlens.errors import InputError, Problem
from churnlens.outputs import read_paired_manifest

FIX = "give a scores file written by `churnlens score`"


def read_scores_file(
    path: str | Path,
    needed: Sequence[str],
    wanted: Sequence[str] | None = None,
    *,
    label: str = "SCORES",
    noun: str = "file",
    fix: str = FIX,
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The scores at ``path`` and their manifest (``None`` without one), checked to hold
    the ``needed`` columns; with ``wanted``, only ``needed`` and those of ``wanted`` the file
    has are read (a million-row file is read in a fraction of the time). ``label`` names
    the argument in errors (empty: none), ``noun`` the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), [Problem(label, f"{noun} not found", fix=fix)])
    columns = None if wanted is None else [*dict.fromkeys([*needed, *wanted])]
    try:
        frame = _read(path, columns)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        what = f"{noun} cannot be read ({first})"
        raise InputError(str(path), [Problem(label, what, fix=fix)]) from None
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        what = f"not a scores file: column(s) {', '.join(missing)} missing"
        raise InputError(str(path), [Problem(label, what, fix=fix)])
    return frame, read_paired_manifest(path)


def _read(path: Path, columns: list[str] | None) -> pd.DataFrame:
    if path.name.lower().endswith(".parquet"):
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        keep = None if columns is None else [c for c in columns if c in names]
        frame = pq.read_table(path, columns=keep).to_pandas()
    else:
        usecols = None if columns is None else (lambda c: c in columns)
        frame = pd.read_csv(path, usecols=usecols, dtype={"customer_id": str})
    if "customer_id" in frame.columns:
        frame["customer_id"] = frame["customer_id"].astype(str)
    return frame
