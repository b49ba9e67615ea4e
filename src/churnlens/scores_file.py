"""Reading a scores file written by ``churnlens score`` (Parquet or CSV), with its manifest.

One reader for every command that takes scores back (``report``, ``outcomes``,
``train-uplift``, ``score --previous``): the file must exist, be readable and hold the
columns the command needs; every problem is one :class:`~churnlens.errors.InputError`
naming the file, what is wrong and how to fix it. ``customer_id`` is always read as text,
so a CSV's zero-padded ids ("00042") still match the event log's.

``score --engine spark`` writes a Parquet dataset instead (a folder of part files, its
manifest beside it listing each part's name and size): the folder is read like a file,
its parts in name order (the single-machine file's row order), after checking that they
are exactly the parts the manifest lists (a part missing, added or changed since the
run is an error, as a file whose checksum differs from its manifest's is).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from churnlens.errors import InputError, Problem
from churnlens.outputs import part_files, read_paired_manifest

FIX = "give a scores file written by `churnlens score`"


def read_scores_file(
    path: str | Path,
    needed: Sequence[str],
    wanted: Sequence[str] | None = None,
    *,
    label: str = "-",
    noun: str = "file",
    fix: str = FIX,
) -> tuple[pd.DataFrame, dict[str, Any] | None]:
    """The scores at ``path`` and their manifest (``None`` without one), checked to hold
    the ``needed`` columns; with ``wanted``, only ``needed`` and those of ``wanted`` the file
    has are read (a million-row file is read in a fraction of the time). ``label`` names
    the argument in errors (empty: none), ``noun`` the file."""
    path = Path(path)
    if not path.is_file() and not path.is_dir():
        raise InputError(str(path), [Problem(label, f"{noun} not found", fix=fix)])
    manifest = read_paired_manifest(path)
    parts = dataset_parts(path, manifest, label) if path.is_dir() else [path]
    columns = None if wanted is None else [*dict.fromkeys([*needed, *wanted])]
    try:
        frame = _read(parts, columns)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        what = f"{noun} cannot be read ({first})"
        raise InputError(str(path), [Problem(label, what, fix=fix)]) from None
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        what = f"not a scores file: column(s) {', '.join(missing)} missing"
        raise InputError(str(path), [Problem(label, what, fix=fix)])
    if "customer_id" in frame.columns:  # a customer twice would count twice
        repeated = frame["customer_id"].duplicated(keep=False)
        if repeated.any():
            examples = tuple(frame.loc[repeated, "customer_id"].drop_duplicates().head(3))
            what = "customer_id repeated: a scores file has one row per customer"
            raise InputError(str(path), [Problem(label, what, int(repeated.sum()), examples, fix)])
    problems = value_problems(frame)
    if problems:
        raise InputError(str(path), problems)
    return frame, manifest


def value_problems(frame: pd.DataFrame) -> list[Problem]:
    """What a scores file edited by hand may hold that ``churnlens score`` never writes:
    no row, probabilities outside [0, 1] or not numbers, a segment id that is not a
    number, an ``as_of`` that is not a day, a stage or group not of churnlens."""
    from churnlens.experiments import GROUPS
    from churnlens.lifecycle import STAGES

    if frame.empty:
        return [Problem("", "holds no customer", fix="give the scores of a scoring run")]
    problems = []

    def bad(column: str, wrong: pd.Series, what: str) -> None:
        if wrong.any():
            examples = tuple(frame.loc[wrong, column].astype(str).drop_duplicates().head(3))
            problems.append(Problem(column, what, int(wrong.sum()), examples, fix=FIX))

    for column in ("churn_probability", "uplift"):
        if column in frame.columns:
            given = frame[column].notna()
            number = pd.to_numeric(frame[column], errors="coerce")
            low = -1.0 if column == "uplift" else 0.0
            bad(column, given & ~number.between(low, 1.0), f"not a number within [{low:g}, 1]")
    if "segment_id" in frame.columns:
        given = frame["segment_id"].notna()
        bad("segment_id", given & pd.to_numeric(frame["segment_id"], errors="coerce").isna(),
            "not a segment number")  # fmt: skip
    if "as_of" in frame.columns:  # one day in a whole file: each distinct text parsed once
        text = frame["as_of"].astype(str)
        days = pd.Series(text.unique())
        parsed = pd.to_datetime(days, errors="coerce", format="mixed")
        bad("as_of", text.isin(days[parsed.isna()]), "not a day (YYYY-MM-DD)")
    for column, allowed in (("lifecycle_stage", STAGES), ("group", GROUPS)):
        if column in frame.columns:
            bad(column, ~frame[column].isin(allowed), f"not one of {', '.join(allowed)}")
    return problems


def dataset_parts(folder: Path, manifest: dict[str, Any] | None, label: str) -> list[Path]:
    """The part files of a Spark scores dataset, in name order, checked against the
    names and sizes its manifest lists."""
    listed = (manifest or {}).get("output_files")
    if not isinstance(listed, dict) or not listed:
        what = (
            "is a folder but not a Spark scores dataset (no manifest beside it listing "
            "its part files)"
        )
        fix = "give the scores file, or the folder `churnlens score --engine spark` wrote"
        raise InputError(str(folder), [Problem(label, what, fix=fix)])
    found = part_files(folder)
    if found != listed:
        missing = sorted(set(listed) - set(found))
        extra = sorted(set(found) - set(listed))
        changed = sorted(n for n in set(listed) & set(found) if listed[n] != found[n])
        said = [
            f"{len(names)} part file(s) {kind}, e.g. {names[0]}"
            for names, kind in ((missing, "missing"), (extra, "not in the manifest"),
                                (changed, "changed since the run"))
            if names
        ]  # fmt: skip
        what = "the dataset differs from its manifest: " + "; ".join(said)
        fix = "rerun the `churnlens score --engine spark` job that writes it"
        raise InputError(str(folder), [Problem(label, what, fix=fix)])
    return [folder / name for name in sorted(listed)]


def _read(parts: list[Path], columns: list[str] | None) -> pd.DataFrame:
    """One file, or a dataset's parts read as one Arrow table (one schema read, one
    conversion to pandas)."""
    if parts[0].name.lower().endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = pq.read_schema(parts[0]).names
        keep = None if columns is None else [c for c in columns if c in names]
        table = pa.concat_tables([pq.read_table(part, columns=keep) for part in parts])
        frame = table.to_pandas()
        if "customer_id" in frame.index.names:  # written by pandas with the ids as index
            frame = frame.reset_index()
    else:
        usecols = None if columns is None else (lambda c: c in columns)
        frame = pd.read_csv(parts[0], usecols=usecols, dtype={"customer_id": str})
    if "customer_id" in frame.columns:
        frame["customer_id"] = frame["customer_id"].astype(str)
    return frame
