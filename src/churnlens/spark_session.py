"""Starting Spark for churnlens: the master, the executors' Python, UTC, quiet warnings.

:func:`spark_session` is what :mod:`churnlens.spark` and ``churnlens score --engine
spark`` use; :func:`session_settings` is the configuration it starts with (a plain
dict: what a session gets is visible without a JVM).

- **The master**: given, it is used; not given, the one already configured wins (an
  active session, ``spark-submit --master`` (its Python driver finds
  ``PYSPARK_GATEWAY_PORT``), ``--master`` in ``PYSPARK_SUBMIT_ARGS``, ``spark.master`` in
  ``spark-defaults.conf``); only when none is, ``local[2]``. A master Spark would refuse
  fails here with one :class:`~churnlens.errors.SparkError` line, before a JVM starts.
- **The executors' Python**: with ``archive`` (a conda-pack archive, or a venv-pack one
  where Python sits at the same path on every node), ``spark.archives=<archive>#environment``
  and ``./environment/bin/python`` for the executors, while the driver keeps its own
  interpreter (``spark.pyspark.driver.python``); without it, executors run this
  interpreter (``sys.executable``), unless ``PYSPARK_PYTHON`` names another on a cluster.
- **Time zone**: ``spark.sql.session.timeZone=UTC``; :func:`check_time_zone` warns when a
  session in another zone holds ``TIMESTAMP`` values (naive text parsed by Spark, e.g.
  with ``inferSchema``, is read in the session's zone: silently shifted instants).
- **Warnings**: PySpark's "does not yet fully support pandas >= 3.0.0" FutureWarning is
  filtered, in the driver and (``PYTHONWARNINGS``) in the Python workers; nothing else.
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from churnlens.errors import ChurnlensError, SparkError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

DEFAULT_MASTER = "local[2]"
ENVIRONMENT = "environment"  # the folder an archive is unpacked to on every node
ARCHIVE_PYTHON = f"./{ENVIRONMENT}/bin/python"
PANDAS_WARNING = "PySpark does not yet fully support pandas"
# what Spark accepts as a master (SparkSubmit and SparkContext.createTaskScheduler)
_MASTER = re.compile(
    r"^(local(\[(\*|\d+)(,\s*\d+)?\])?|local-cluster\[\d+,\s*\d+,\s*\d+\]"
    r"|spark://[^\s/]+(,[^\s/]+)*|k8s://\S+|yarn)$"
)
UTC_NAMES = {"UTC", "Etc/UTC", "Z", "+00:00", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Zulu"}


class TimeZoneWarning(UserWarning):
    """Spark's session time zone is not UTC while the events hold Spark timestamps."""


def require_spark() -> None:
    """Raise a :class:`ChurnlensError` saying how to install PySpark when it is missing."""
    try:
        import pyspark.sql  # noqa: F401
    except ImportError:
        raise ChurnlensError(
            'churnlens.spark needs PySpark: pip install "churnlens[spark]" (and Java 17+)'
        ) from None


def quiet_pandas_warning() -> None:
    """Filter PySpark's pandas-3 FutureWarning here and in the Python workers this
    process starts (local mode; on a cluster :func:`session_settings` passes it on)."""
    warnings.filterwarnings("ignore", message=PANDAS_WARNING, category=FutureWarning)
    entry = f"ignore:{PANDAS_WARNING}:FutureWarning"
    found = os.environ.get("PYTHONWARNINGS", "")
    if entry not in found.split(","):
        os.environ["PYTHONWARNINGS"] = ",".join(filter(None, [found, entry]))


def check_master(master: str) -> str:
    """``master`` when Spark accepts it, else one :class:`SparkError` saying what it takes."""
    master = master.strip()
    if not _MASTER.match(master):
        raise SparkError(
            f"--master {master!r} is not a Spark master: give local[N], "
            "spark://HOST:PORT, yarn or k8s://https://HOST:PORT"
        )
    if master == "yarn" and not (
        os.environ.get("HADOOP_CONF_DIR") or os.environ.get("YARN_CONF_DIR")
    ):
        raise SparkError(
            "--master yarn needs HADOOP_CONF_DIR (or YARN_CONF_DIR) set to the cluster's "
            "Hadoop configuration folder, or run through spark-submit on the cluster"
        )
    return master


def _defaults_master() -> str | None:
    """``spark.master`` of ``spark-defaults.conf`` (SPARK_CONF_DIR or SPARK_HOME/conf)."""
    home = os.environ.get("SPARK_HOME")
    folder = os.environ.get("SPARK_CONF_DIR") or (str(Path(home) / "conf") if home else None)
    if not folder:
        return None
    try:
        lines = (Path(folder) / "spark-defaults.conf").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.strip().split(None, 1)
        if len(parts) == 2 and parts[0] == "spark.master":
            return parts[1].strip()
    return None


def configured_master() -> str | None:
    """The master already chosen outside this call, or ``None`` (see the module's text)."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        return active.sparkContext.master
    if "PYSPARK_GATEWAY_PORT" in os.environ:  # a driver started by spark-submit
        return "spark-submit"
    submit = os.environ.get("PYSPARK_SUBMIT_ARGS", "")
    if "--master" in submit.split():
        return "PYSPARK_SUBMIT_ARGS"
    return _defaults_master()


def session_settings(
    master: str | None, ui: bool = False, archive: str | Path | None = None
) -> dict[str, str]:
    """The configuration :func:`spark_session` starts a session with (``spark.master``
    only when a master is given)."""
    conf = {
        "spark.app.name": "churnlens",
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.enabled": str(ui).lower(),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",  # the CLI shows its own
        "spark.executorEnv.PYTHONWARNINGS": f"ignore:{PANDAS_WARNING}:FutureWarning",
    }
    if master is not None:
        conf["spark.master"] = check_master(master)
    if archive is not None:
        if (master or "").startswith("local"):
            raise SparkError(
                "--spark-archive is only on a cluster: local executors run this Python"
            )
        path = Path(archive)
        if not path.is_file():
            raise SparkError(f"--spark-archive {archive}: no such file (a conda-pack .tar.gz)")
        conf["spark.archives"] = f"{path.resolve()}#{ENVIRONMENT}"
        conf["spark.pyspark.python"] = ARCHIVE_PYTHON
        conf["spark.pyspark.driver.python"] = sys.executable
    return conf


def spark_session(
    master: str | None = None, ui: bool = False, archive: str | Path | None = None
) -> SparkSession:
    """A SparkSession with the traps handled (see the module's text).

    Parameters
    ----------
    master
        ``local[N]``, ``spark://HOST:PORT``, ``yarn``, ``k8s://...``; ``None``: the one
        spark-submit (or an active session, or spark-defaults.conf) chose, else
        ``local[2]``.
    ui
        Spark's web UI.
    archive
        An environment archive (conda-pack) with churnlens installed, shipped to the
        executors (``spark.archives``) and run there as ``./environment/bin/python``.

    Raises
    ------
    SparkError
        A master Spark refuses, or a JVM that would not start (the Java message is
        printed above by Spark).
    """
    require_spark()
    from pyspark.errors import PySparkRuntimeError
    from pyspark.sql import SparkSession

    quiet_pandas_warning()
    if master is None and configured_master() is None:
        master = DEFAULT_MASTER
    conf = session_settings(master, ui, archive)
    local = (master or "").startswith("local")
    if archive is not None:
        os.environ["PYSPARK_PYTHON"] = ARCHIVE_PYTHON  # read once, when the context starts
    elif local or "PYSPARK_PYTHON" not in os.environ:
        os.environ["PYSPARK_PYTHON"] = sys.executable  # executors must import churnlens
    builder: Any = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except PySparkRuntimeError as exc:
        raise SparkError(
            f"Spark did not start (master {master or 'from spark-submit'}): {_first_line(exc)}; "
            "Java's own message is above"
        ) from None
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # getOrCreate may reuse a session
    return spark


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def is_utc(zone: str | None) -> bool:
    """Whether a session time zone names UTC."""
    return (zone or "").strip() in UTC_NAMES


def check_time_zone(df: DataFrame) -> None:
    """Warn (:class:`TimeZoneWarning`) when ``df``'s session is not in UTC and its
    ``timestamp`` column is a Spark ``TIMESTAMP``: if that came from naive text (a CSV
    read with ``inferSchema``, ``to_timestamp``), Spark read it in the session's zone and
    every instant is shifted. Text, dates and ``TIMESTAMP_NTZ`` are safe (DuckDB parses
    them as on one machine)."""
    from pyspark.sql import types as T

    if "timestamp" not in df.columns:
        return
    if not isinstance(df.schema["timestamp"].dataType, T.TimestampType):
        return
    zone = df.sparkSession.conf.get("spark.sql.session.timeZone")
    if is_utc(zone):
        return
    warnings.warn(
        f"the Spark session time zone is {zone}, not UTC, and the events' timestamp is a "
        f"Spark TIMESTAMP: naive text parsed by Spark (inferSchema, to_timestamp) was read "
        f"as {zone} time, so days and scores shift. Set spark.sql.session.timeZone=UTC "
        "before reading the events (churnlens.spark.spark_session does), or keep the "
        "timestamps as text",
        TimeZoneWarning,
        stacklevel=3,
    )


__all__ = [
    "DEFAULT_MASTER",
    "TimeZoneWarning",
    "check_master",
    "check_time_zone",
    "configured_master",
    "is_utc",
    "quiet_pandas_warning",
    "require_spark",
    "session_settings",
    "spark_session",
]
