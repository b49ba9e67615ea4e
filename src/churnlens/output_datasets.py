"""A result written as a Parquet dataset (a folder of part files, as the Spark engine
writes scores): what its manifest says, and how an interrupted replacement of it is
completed or undone. Shared by the Spark writer (:mod:`churnlens.spark_output`) and
:func:`churnlens.work_folders.recover_interrupted`, which every job on an output runs first,
whichever engine wrote the pending result; nothing here imports Spark.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from churnlens.outputs import manifest_path, part_files, pending_path

DATASET = "parquet-dataset"  # the manifest's output_format of a dataset result


def dataset_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest beside ``out`` when it describes a Spark dataset."""
    try:
        manifest = json.loads(manifest_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(manifest, dict) and manifest.get("output_format") == DATASET:
        return manifest
    return None


def swap_into_place(pending: Path, out: Path, aside: Path) -> None:
    """Move the earlier result at ``out`` into ``aside`` and ``pending`` into its place."""
    if out.exists() or out.is_symlink():
        os.replace(out, aside)
    os.replace(pending, out)


def recover_dataset(out: Path, work: Path) -> bool:
    """Finish a replacement killed after its commit point (the pending folder holds the
    files the manifest lists: it is renamed into place), or drop a pending folder the
    manifest does not describe. Call it while holding the output's lock."""
    pending = pending_path(out)
    if not pending.is_dir():
        return False
    manifest = dataset_manifest(out)
    if manifest is not None and manifest.get("output_files") == part_files(pending):
        swap_into_place(pending, out, work / "earlier")
        return True
    shutil.rmtree(pending, ignore_errors=True)
    return False
