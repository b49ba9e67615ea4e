"""The Spark scores dataset on disk, without a JVM: replaced with its manifest as one
step, a replacement killed after its commit point completed by the next run, an output
folder that is not an earlier dataset left alone, Py4J errors as one line."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from churnlens.errors import InputError
from churnlens.output_datasets import DATASET, recover_dataset
from churnlens.outputs import manifest_path, part_files
from churnlens.spark_output import (
    check_dataset_path,
    publish_dataset,
    spark_message,
)


def _dataset(folder: Path, rows: int) -> Path:
    folder.mkdir(parents=True)
    for part in range(2):
        frame = pd.DataFrame({"customer_id": [f"c{part}{i}" for i in range(rows)]})
        frame.to_parquet(folder / f"part-{part:05d}-x.zstd.parquet")
    (folder / "_SUCCESS").touch()
    (folder / ".part-00000-x.zstd.parquet.crc").touch()
    return folder


def test_a_dataset_replaces_an_earlier_file_then_an_earlier_dataset(tmp_path) -> None:
    out = tmp_path / "scores.parquet"
    pd.DataFrame({"customer_id": ["old"]}).to_parquet(out)  # from the DuckDB engine
    manifest_path(out).write_text(json.dumps({"kind": "scores"}))
    for rows in (3, 5):
        work = tmp_path / f".scores.parquet.work.1.{rows}"
        work.mkdir()
        data = _dataset(work / "scores", rows)
        publish_dataset(data, out, {"kind": "scores", "output_format": DATASET}, work)
        assert len(pd.read_parquet(out)) == 2 * rows
        written = json.loads(manifest_path(out).read_text())
        assert written["output_files"] == part_files(out) and len(part_files(out)) == 2
        assert not list(out.glob(".*.crc"))
        assert check_dataset_path(out, []) == out  # an earlier dataset: may be replaced
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "scores.parquet",
        "scores.parquet.manifest.json",
    ]
    assert not (tmp_path / ".scores.parquet.pending").exists()


def test_a_replacement_killed_after_its_commit_is_completed_by_the_next_run(tmp_path) -> None:
    out = tmp_path / "scores.parquet"
    pending = _dataset(tmp_path / ".scores.parquet.pending", 4)  # the new dataset, renamed
    manifest = {"kind": "scores", "output_format": DATASET, "output_files": part_files(pending)}
    manifest_path(out).write_text(json.dumps(manifest))  # ... and committed; then a kill
    work = tmp_path / "work"
    work.mkdir()
    assert recover_dataset(out, work)
    assert len(pd.read_parquet(out)) == 8 and not pending.exists()
    stray = _dataset(tmp_path / ".scores.parquet.pending", 1)  # not what the manifest lists
    assert not recover_dataset(out, work) and not stray.exists()
    assert len(pd.read_parquet(out)) == 8


def test_an_output_folder_that_is_not_a_dataset_is_left_alone(tmp_path) -> None:
    out = tmp_path / "precious.parquet"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(InputError, match="not an earlier Spark scores dataset"):
        check_dataset_path(out, [])
    with pytest.raises(InputError, match="writes a Parquet dataset"):
        check_dataset_path(tmp_path / "scores.csv", [])
    with pytest.raises(InputError, match="is the input"):
        check_dataset_path(out, [out])
    assert (out / "keep.txt").read_text() == "mine"


def test_a_py4j_error_is_its_first_meaningful_line() -> None:
    class JavaError(Exception):
        java_exception = (
            "org.apache.spark.SparkException: Job aborted due to stage failure: Total size "
            "of serialized results of 2 tasks (1210.0 KiB) is bigger than "
            "spark.driver.maxResultSize (1024.0 KiB)\n\tat org.apache.spark..."
        )

    assert spark_message(JavaError()).endswith("spark.driver.maxResultSize (1024.0 KiB)")
    text = "An error occurred while calling o53.parquet.\n: [PATH_NOT_FOUND] Path does not exist"
    assert spark_message(RuntimeError(text)) == "[PATH_NOT_FOUND] Path does not exist"


def test_a_dataset_is_read_back_only_as_its_manifest_lists_it(tmp_path) -> None:
    """report, outcomes and train-uplift read a Spark dataset like a file, refusing one
    whose parts differ from what the run wrote, and a folder with no dataset manifest."""
    from churnlens.scores_file import read_scores_file

    out = _dataset(tmp_path / "scores.parquet", 3)
    manifest = {"kind": "scores", "output_format": DATASET, "output_files": part_files(out)}
    manifest_path(out).write_text(json.dumps(manifest))
    frame, read = read_scores_file(out, ("customer_id",))
    assert frame["customer_id"].tolist() == ["c00", "c01", "c02", "c10", "c11", "c12"]
    assert read == manifest
    pd.DataFrame({"customer_id": ["late"]}).to_parquet(out / "part-00002-y.zstd.parquet")
    with pytest.raises(InputError, match=r"1 part file\(s\) not in the manifest"):
        read_scores_file(out, ("customer_id",))
    (out / "part-00002-y.zstd.parquet").unlink()
    (out / "part-00001-x.zstd.parquet").unlink()
    with pytest.raises(InputError, match=r"1 part file\(s\) missing, e.g. part-00001"):
        read_scores_file(out, ("customer_id",))
    manifest_path(out).unlink()
    with pytest.raises(InputError, match="not a Spark scores dataset"):
        read_scores_file(out, ("customer_id",))


def test_any_job_on_the_output_completes_a_killed_dataset_replacement(tmp_path) -> None:
    """recover_interrupted, which every job on an output runs first (the one-machine
    engine's too), completes a Spark replacement killed after its commit, or removes a
    pending folder its manifest does not describe, leaving no aside folder behind."""
    from churnlens.work_folders import recover_interrupted, remove_stale_work

    out = tmp_path / "scores.parquet"
    pending = _dataset(tmp_path / ".scores.parquet.pending", 2)
    manifest = {"kind": "scores", "output_format": DATASET, "output_files": part_files(pending)}
    manifest_path(out).write_text(json.dumps(manifest))
    assert recover_interrupted(out)
    assert len(pd.read_parquet(out)) == 4 and not pending.exists()
    _dataset(tmp_path / ".scores.parquet.pending", 1)  # not what the manifest lists
    (tmp_path / ".scores.parquet.manifest.json.x1.tmp").write_text("{}")  # a killed write
    remove_stale_work(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "scores.parquet",
        "scores.parquet.manifest.json",
    ]
    assert len(pd.read_parquet(out)) == 4
