"""``churnlens score --engine spark`` on a local standalone cluster, beside one machine.

Usage::

    SPARK_HOME=... .venv/bin/python benchmarks/bench_spark.py --customers 2000000

The log and the models are ``bench_scoring.py``'s (cached under ``data/bench/``: about
50 events a customer over 730 days; bundles trained on a separate small log). A standalone
master and ``--workers`` workers of one core each are started on 127.0.0.1 from the
installed pyspark (``spark-class``; ``SPARK_HOME`` is set to the pyspark package when not
given), and stopped at the end whatever happens. Two runs, each in a fresh process:

- **one machine**: ``bench_scoring.py --run`` (``load_models`` + ``score``, DuckDB),
  wall time and peak resident memory;
- **Spark**: ``churnlens score --engine spark --master spark://...``, wall time and the
  driver's peak memory: the resident memory of the driver's Python process and its JVM
  together, sampled every 0.2 s (the executors run under the workers and are not counted).

Both scores are then compared by customer (churn probability to 1e-9, action, priority):
the benchmark exits non-zero when they differ or a customer is missing. On the 2-core
reference machine Spark is for reach, not speed: the same DuckDB pass runs per bucket,
plus Spark's shuffles, serialisation and JVMs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scoring  # beside this file, importable through the sys.path entry above
from bench_scoring import BENCH, ROOT
from churnlens.spark_standalone import LocalCluster, spark_home

JAVA_OPTS = "-XX:+UseSerialGC"


def _env() -> dict[str, str]:
    env = dict(os.environ, SPARK_HOME=spark_home(), SPARK_LOCAL_IP="127.0.0.1")
    env["SPARK_DAEMON_MEMORY"] = "512m"
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    return env


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


def _run_measured(
    command: list[str], env: dict[str, str], quiet: bool = False
) -> tuple[float, int]:
    """Run ``command``; its wall time and the peak resident memory of its process tree."""
    began = time.perf_counter()
    child = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL if quiet else None)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(child.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = child.wait()
    done.set()
    sampler.join()
    if code != 0:
        sys.exit(f"bench_spark: {command[2] if len(command) > 2 else command} failed ({code})")
    return time.perf_counter() - began, peak


def _compare(local: Path, spark: Path) -> dict[str, float]:
    """Customers missing on either side, the largest probability difference, and the rows
    whose action or priority differ."""
    import duckdb

    con = duckdb.connect()
    a = f"read_parquet('{local}')"
    b = f"read_parquet('{spark}/*.parquet')"
    (rows_a,) = con.execute(f"SELECT count(*) FROM {a}").fetchone()  # type: ignore[misc]
    (rows_b,) = con.execute(f"SELECT count(*) FROM {b}").fetchone()  # type: ignore[misc]
    missing, diff, other = con.execute(
        f"""SELECT count(*) FILTER (WHERE a.customer_id IS NULL OR b.customer_id IS NULL),
                   max(abs(a.churn_probability - b.churn_probability)),
                   count(*) FILTER (WHERE a.action <> b.action OR a.priority <> b.priority)
            FROM {a} AS a FULL JOIN {b} AS b ON a.customer_id = b.customer_id"""
    ).fetchone()  # type: ignore[misc]
    return {
        "rows_local": rows_a,
        "rows_spark": rows_b,
        "missing": missing,
        "max_probability_difference": float(diff or 0.0),
        "action_or_priority_differ": other,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2_000_000, help="customers to score")
    parser.add_argument("--days", type=int, default=730, help="length of the log in days")
    parser.add_argument("--train-customers", type=int, default=20_000)
    parser.add_argument("--chunk-customers", type=int, default=50_000, help="generator chunk")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2, help="one core each")
    parser.add_argument("--worker-memory", default="4g", help="each worker's memory")
    parser.add_argument("--executor-memory", default="3g")
    parser.add_argument("--driver-memory", default="2g")
    parser.add_argument("--partitions", type=int, default=None, help="Spark buckets")
    parser.add_argument("--work-dir", type=Path, default=BENCH)
    args = parser.parse_args()

    as_of = bench_scoring.last_day(args.days)
    path = bench_scoring.scoring_log(args.customers, args.days, args.seed, args.chunk_customers)
    churn, segments = bench_scoring.bench_models(args.train_customers, args.days, args.seed)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bench-spark.", dir=args.work_dir))
    cluster = None
    try:
        local_out, spark_out = work / "local.parquet", work / "spark.parquet"
        one = [sys.executable, str(ROOT / "benchmarks" / "bench_scoring.py"), "--run",
               "--path", str(path), "--churn", str(churn), "--segments", str(segments),
               "--as-of", as_of.isoformat(), "--out", str(local_out)]  # fmt: skip
        print("one machine ...", flush=True)
        local_seconds, local_peak = _run_measured(one, _env(), quiet=True)
        print(f"one machine: {local_seconds:.1f} s, peak {local_peak / 2**30:.2f} GiB", flush=True)
        cluster = LocalCluster(work, args.workers, memory=args.worker_memory, env=_env())
        env = _env()
        env["PYSPARK_SUBMIT_ARGS"] = (
            f"--driver-memory {args.driver_memory} --executor-memory {args.executor_memory} "
            f"--driver-java-options {JAVA_OPTS} pyspark-shell"
        )
        spark = [sys.executable, "-m", "churnlens.cli", "score", str(path), "--as-of",
                 as_of.isoformat(), "--out", str(spark_out), "--model", str(churn),
                 "--segments", str(segments), "--engine", "spark", "--master", cluster.url,
                 "--no-track"]  # fmt: skip
        if args.partitions:
            spark += ["--partitions", str(args.partitions)]
        print(f"Spark on {cluster.url} ({args.workers} workers of 1 core) ...", flush=True)
        spark_seconds, spark_peak = _run_measured(spark, env)
        print(f"Spark: {spark_seconds:.1f} s, driver peak {spark_peak / 2**30:.2f} GiB", flush=True)
        manifest = json.loads((work / "spark.parquet.manifest.json").read_text())
        same = _compare(local_out, spark_out)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(work, ignore_errors=True)

    events = manifest["events_scored"]
    print(f"\nscoring as of {as_of}, {path.name}: {events:,} events, {manifest['rows']:,} rows")
    print(f"{'engine':<36} {'wall s':>8} {'events/s':>11} {'peak memory':>14}")
    print(
        f"{'one machine (DuckDB, 2 threads)':<36} {local_seconds:>8.1f} "
        f"{events / local_seconds:>11,.0f} {local_peak / 2**30:>10.2f} GiB"
    )
    print(
        f"{'Spark, ' + str(args.workers) + ' x 1 core, driver only':<36} {spark_seconds:>8.1f} "
        f"{events / spark_seconds:>11,.0f} {spark_peak / 2**30:>10.2f} GiB"
    )
    print(f"Spark buckets: {manifest['partitions']}; part files: {len(manifest['output_files'])}")
    print("compared by customer:", json.dumps(same))
    ok = (
        same["missing"] == 0
        and same["rows_local"] == same["rows_spark"]
        and same["max_probability_difference"] <= 1e-9
        and same["action_or_priority_differ"] == 0
    )
    if not ok:
        sys.exit("bench_spark: Spark's scores differ from one machine's")


if __name__ == "__main__":
    main()
