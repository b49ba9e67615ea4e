"""``churnlens score --engine spark``: the scores written by the executors, atomically.

Nothing is collected to the driver but small aggregates. The ranked scores
(:mod:`churnlens.spark_ranking`: each partition sorted by action then priority) are
written by the executors as a **Parquet dataset**: a folder of part files (one per
partition, in that order: reading the folder gives the single-machine file's rows in its
order), with the same manifest as on one machine beside it (``<out>.manifest.json``),
plus ``engine``, ``spark_master``, ``output_format`` (``parquet-dataset``) and
``output_files`` (each part's name and size) in place of ``output_sha256``. The
manifest's counts, sums and experiment balance are computed by Spark SQL over the kept
scores, with the single-machine :func:`churnlens.scores_manifest.manifest_of`.

Atomic, as on one machine: the dataset is written into a hidden work folder beside
``out`` (``.<name>.work.<pid>-<host>.*``); renamed to ``.<name>.pending``; the manifest renamed
into place (the commit point); the earlier result (a folder, or a file from the DuckDB
engine) moved into the work folder and the pending folder renamed to ``out``. A job killed
after the commit leaves the pending folder, which the next job on ``out`` renames into
place when the manifest describes it (:func:`churnlens.output_datasets.recover_dataset`,
run by every job on ``out`` through :func:`churnlens.work_folders.remove_stale_work`, whichever
engine). The ``<out>.lock`` file is
removed at the end, whatever happened; a Py4J or Spark failure is one
:class:`~churnlens.errors.SparkError` line.

On a cluster ``out`` must be on a file system the driver and every executor see at the
same path (a shared mount): the executors write the part files, the driver renames them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

from churnlens.actions import Policy
from churnlens.errors import ChurnlensError, InputError, Problem, SparkError
from churnlens.model_source import ScoringModels, load_models
from churnlens.output_datasets import DATASET, dataset_manifest, swap_into_place
from churnlens.outputs import (
    check_not_input,
    manifest_file,
    manifest_path,
    output_failure,
    part_files,
    pending_path,
    publish_mode,
)
from churnlens.ranking import with_ranking
from churnlens.scores_manifest import manifest_of
from churnlens.spark import ranked_scores, read_events, spark_session
from churnlens.work_folders import owned_output, remove_work, work_prefix

RANKED_VIEW = "_ranked"  # the relation manifest_of queries


class SparkSQL:
    """What :func:`~churnlens.scoring.manifest_of` asks of a DuckDB connection
    (``execute(sql)`` then ``fetchone``, ``fetchall`` or ``df``), answered by Spark SQL;
    double-quoted names are identifiers, as in DuckDB."""

    def __init__(self, spark: Any) -> None:
        self.spark = spark

    def execute(self, query: str) -> SparkSQL.Result:
        keys = ("spark.sql.ansi.enabled", "spark.sql.ansi.doubleQuotedIdentifiers")
        before = {k: self.spark.conf.get(k, None) for k in keys}
        for key in keys:
            self.spark.conf.set(key, "true")
        try:
            return SparkSQL.Result(self.spark.sql(query))  # parsed here, run when fetched
        finally:
            for key, value in before.items():
                if value is None:
                    self.spark.conf.unset(key)
                else:
                    self.spark.conf.set(key, value)

    class Result:
        def __init__(self, frame: Any) -> None:
            self.frame = frame

        def fetchall(self) -> list[tuple[Any, ...]]:
            return [tuple(row) for row in self.frame.collect()]

        def fetchone(self) -> tuple[Any, ...] | None:
            rows = self.fetchall()
            return rows[0] if rows else None

        def df(self) -> Any:
            return self.frame.toPandas()


def spark_message(exc: BaseException) -> str:
    """The first line that says what went wrong in a Py4J or PySpark error."""
    java = getattr(exc, "java_exception", None)
    text = str(java) if java is not None else str(exc)
    lines = [line.strip().lstrip(": ") for line in text.splitlines() if line.strip(" :\t")]
    lines = [line for line in lines if not line.startswith("An error occurred while calling")]
    first = lines[0] if lines else type(exc).__name__
    return first if len(first) <= 400 else first[:400] + "..."


@contextlib.contextmanager
def spark_errors(what: str) -> Iterator[None]:
    """Turn a Py4J or PySpark failure inside the block into one :class:`SparkError`."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    try:
        yield
    except ChurnlensError:
        raise
    except (Py4JError, PySparkException) as exc:
        raise SparkError(
            f"{what} failed on Spark: {spark_message(exc)} (the driver's and executors' "
            "logs have the details)"
        ) from None


def check_dataset_path(out: str | Path, inputs: list[Any]) -> Path:
    """Fail before any work when ``out`` cannot take a Parquet dataset: a name ending
    ``.parquet``, not an input, in a writable folder, and not a folder other than an
    earlier Spark scores dataset (which is replaced)."""
    out = Path(out)
    check_not_input(out, inputs)

    def problem(message: str, fix: str) -> InputError:
        return InputError(str(out), [Problem(column="--out", message=message, fix=fix)])

    if not out.name.lower().endswith(".parquet"):
        raise problem(
            "--engine spark writes a Parquet dataset (a folder of part files)",
            "end the name with .parquet",
        )
    if out.is_dir() and dataset_manifest(out) is None:
        raise problem(
            "the output is a folder that is not an earlier Spark scores dataset",
            "give another name (the folder is left alone)",
        )
    parent = out.parent.resolve()
    existing = next((p for p in [parent, *parent.parents] if p.exists()), None)
    if existing is not None and (not existing.is_dir() or not os.access(existing, os.W_OK)):
        raise problem(f"cannot write into {existing}", "choose a writable folder")
    return out


def publish_dataset(data: Path, out: Path, manifest: dict[str, Any], work: Path) -> None:
    """Replace ``out`` and its manifest with the dataset folder ``data`` (see the
    module's text for the order of the steps)."""
    for crc in data.glob(".*.crc"):  # Hadoop's local checksums: not part of the dataset
        crc.unlink()
    manifest["output_files"] = part_files(data)
    pending, target = pending_path(out), manifest_path(out)
    name = None
    try:
        # the manifest keeps the mode of the one it replaces (an operator's chmod 640)
        name = manifest_file(target, manifest, publish_mode(target))
        os.replace(data, pending)
        os.replace(name, target)  # the commit point
    except OSError as exc:
        if name is not None:
            with contextlib.suppress(OSError):
                os.unlink(name)
        shutil.rmtree(pending, ignore_errors=True)
        raise output_failure(out, exc) from None
    try:
        swap_into_place(pending, out, work / "earlier")
    except OSError as exc:
        raise SparkError(
            f"{out}: the new scores could not be renamed into place ({exc.strerror}); they "
            f"are kept as {pending.name} and the next run on this output completes it"
        ) from None


def score_to_file(
    events_path: str | Path,
    as_of: str | date,
    out: str | Path,
    models: ScoringModels | str | Path,
    policy: Policy | None = None,
    max_contacts: int | None = None,
    master: str | None = None,
    buckets: int | None = None,
    ui: bool = False,
    archive: str | Path | None = None,
) -> dict[str, Any]:
    """Score an event log file on Spark; the executors write the scores as a Parquet
    dataset at ``out`` (see the module's text), with its manifest. ``master`` and
    ``archive`` go to :func:`churnlens.spark_session.spark_session`; ``buckets``
    defaults to one per ``engine.partition_events`` events. Returns the manifest."""
    started = time.perf_counter()
    out = check_dataset_path(out, inputs=[events_path])
    if not isinstance(models, ScoringModels):
        models = load_models(models)  # a bad model fails before Spark starts
    policy = with_ranking(policy or Policy(), models.uplift)
    spark = spark_session(master, ui=ui, archive=archive)
    with owned_output(out, remove=True):  # one job on out; no lock file left behind
        work = Path(tempfile.mkdtemp(prefix=work_prefix(out.name), dir=out.parent.resolve()))
        try:
            data = work / "scores"
            with spark_errors("scoring"):
                events = read_events(spark, events_path)
                ranked, plan, found = ranked_scores(
                    events, as_of, models, policy, max_contacts, buckets
                )
                try:
                    ranked.frame.write.option("compression", "zstd").parquet(str(data))
                    ranked.frame.createOrReplaceTempView(RANKED_VIEW)
                    manifest = manifest_of(
                        SparkSQL(spark), plan, models, policy, out, max_contacts,
                        found.buckets, started,
                    )  # fmt: skip
                finally:
                    spark.catalog.dropTempView(RANKED_VIEW)
                    ranked.release()
            manifest.update(
                engine="spark", spark_master=spark.sparkContext.master, output_format=DATASET
            )
            manifest["seconds"] = round(time.perf_counter() - started, 3)
            publish_dataset(data, out, manifest, work)
        finally:
            remove_work(work)
    return manifest


__all__ = [
    "SparkSQL",
    "check_dataset_path",
    "publish_dataset",
    "score_to_file",
    "spark_errors",
    "spark_message",
]
