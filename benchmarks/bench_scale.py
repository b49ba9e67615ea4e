"""Features and scoring at scale: a partitioned Parquet log of ~100M events, memory capped.

Usage::

    .venv/bin/python benchmarks/bench_scale.py [--customers 2000000] [--days 730]
        [--memory-limit 6GB] [--only features|scoring] [--no-value]

Builds, once, a partitioned event log under ``data/bench/``: a folder holding one Parquet
file per generator chunk of ``--chunk-customers`` customers (about 2.6M events each at
730 days), each chunk with its own seed and its chunk number as a customer-id prefix so
that ids stay unique (as in ``bench_scoring.py``). The folder is filled under a temporary
name and renamed when complete, so a cached folder is always whole. 2M customers x 730
days is about 100M events and takes about 3 minutes to generate.

Then measures, each in a fresh subprocess so that its peak resident memory (ru_maxrss,
DuckDB's included) is its own, with ``engine.memory_limit`` set to ``--memory-limit``
and ``engine.temp_dir`` a temporary folder beside the data:

- ``features``: ``write_features(folder, as_of, out, settings)`` into a temporary
  ``.parquet``;
- ``scoring``: ``load_models(churn, segments, settings)`` + ``score(folder, as_of, out,
  models)``, with ``bench_scoring.py``'s cached bundles trained on a separate small log
  (made through its own function when missing).

``as_of`` is the log's last day. Each output must hold one row per distinct customer with
an event up to ``as_of``, counted apart with DuckDB: the benchmark exits 1 when not.
The targets are for 2M customers / ~100M events on the 2-core reference machine; the
1-minute load average before and after each child is printed beside its figures, since
another job on the machine skews them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from churnlens.config import Settings

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_scoring  # beside this file, importable through the sys.path entry above
from bench_scoring import BENCH, ROOT

MEASURES = ("features", "scoring")
TARGET_CUSTOMERS = 2_000_000
TARGETS = {  # (wall seconds, peak GiB)
    "features": (90.0, 8.0),
    "scoring": (240.0, 8.0),
}


def _dataset(customers: int, days: int, seed: int, chunk_customers: int) -> Path:
    """The cached partitioned log: one Parquet file per chunk, renamed into place."""
    import pyarrow.parquet as pq

    folder = BENCH / f"scale_events_{customers}_{days}_{seed}_c{chunk_customers}"
    if folder.is_dir():
        return folder
    BENCH.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=BENCH))
    began = time.perf_counter()
    events = chunks = 0
    try:
        for chunk, table in bench_scoring.chunk_tables(customers, days, seed, chunk_customers):
            pq.write_table(table, tmp / f"part-{chunk:04d}.parquet", compression="zstd")
            events += table.num_rows
            chunks += 1
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            os.rename(tmp, folder)
        except OSError:  # another run got there first: use its folder
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"generated {events:,} events of {customers:,} customers in {chunks} files "
        f"in {time.perf_counter() - began:.1f} s -> {folder.relative_to(ROOT)}"
    )
    return folder


def _settings(memory_limit: str, temp_dir: Path) -> Settings:
    from churnlens.config import Settings

    engine: dict[str, object] = {"memory_limit": memory_limit, "temp_dir": str(temp_dir)}
    # BENCH_PARTITION_EVENTS overrides engine.partition_events and
    # engine.feature_partition_events (children inherit it)
    if os.environ.get("BENCH_PARTITION_EVENTS"):
        size = int(os.environ["BENCH_PARTITION_EVENTS"])
        engine["partition_events"] = engine["feature_partition_events"] = size
    return Settings().with_overrides(engine=engine)


def _phases(
    began: float, ended: float, marks: list[tuple[float, int, int, int]], first: str
) -> dict[str, float]:
    """Wall seconds before the first partition's callback, between, and after the last."""
    start = marks[0][0] if marks else ended
    last = marks[-1][0] if marks else ended
    return {first: start - began, "other partitions": last - start, "after the last": ended - last}


def _run_features(args: argparse.Namespace) -> dict[str, object]:
    """Runs in the child process: time write_features."""
    from churnlens.features.batched import write_features

    marks: list[tuple[float, int, int, int]] = []

    def progress(done: int, total: int, customers: int) -> None:
        marks.append((time.perf_counter(), done, total, customers))

    settings = _settings(args.memory_limit, args.temp_dir)
    began = time.perf_counter()
    result = write_features(args.path, args.as_of, args.out, settings, progress=progress)
    ended = time.perf_counter()
    return {
        "seconds": ended - began,
        "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "events": None,
        "partitions": result.partitions,
        "reported_rows": result.customers,
        "phases": _phases(began, ended, marks, "overview, customers, 1st partition"),
    }


def _run_scoring(args: argparse.Namespace) -> dict[str, object]:
    """Runs in the child process: time load_models + score."""
    from churnlens.model_source import load_models
    from churnlens.scoring import score

    marks: list[tuple[float, int, int, int]] = []

    def progress(done: int, total: int, customers: int) -> None:
        marks.append((time.perf_counter(), done, total, customers))

    settings = _settings(args.memory_limit, args.temp_dir)
    began = time.perf_counter()
    models = load_models(
        args.churn, args.segments, settings, value=None if args.no_value else "auto"
    )
    loaded = time.perf_counter()
    result = score(args.path, args.as_of, args.out, models, progress=progress)
    ended = time.perf_counter()
    phases = {"load models": loaded - began}
    phases.update(_phases(loaded, ended, marks, "checks, 1st partition's DuckDB pass"))
    phases["rank and write (after the last)"] = phases.pop("after the last")
    return {
        "seconds": ended - began,
        "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "events": result.manifest["events_scored"],
        "partitions": result.manifest["partitions"],
        "reported_rows": result.manifest["rows"],
        "phases": phases,
    }


def _log_counts(folder: Path, as_of: date) -> tuple[int, int]:
    """(events, distinct customers) on or before ``as_of``, counted apart from churnlens."""
    import duckdb

    con = duckdb.connect()
    events, customers = con.execute(
        "SELECT count(*), count(DISTINCT customer_id) FROM read_parquet(?) "
        "WHERE CAST(timestamp AS DATE) <= CAST(? AS DATE)",
        [str(folder / "*.parquet"), as_of.isoformat()],
    ).fetchone()  # type: ignore[misc]
    return int(events), int(customers)


def _load() -> float:
    return os.getloadavg()[0]


def _measure(
    measure: str,
    folder: Path,
    as_of: date,
    memory_limit: str,
    models: tuple[Path, Path] | None,
    timeout: float,
    no_value: bool = False,
) -> dict[str, object]:
    """Run one measure in a child; returns its figures plus the output's row counts."""
    BENCH.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".bench-scale-{measure}.", dir=BENCH))
    try:
        out = work / f"{measure}.parquet"
        command = [
            sys.executable,
            __file__,
            "--run",
            measure,
            "--path",
            str(folder),
            "--as-of",
            as_of.isoformat(),
            "--out",
            str(out),
            "--memory-limit",
            memory_limit,
            "--temp-dir",
            str(work / "duckdb"),
        ]
        if models is not None:
            command += ["--churn", str(models[0]), "--segments", str(models[1])]
        if no_value:
            command.append("--no-value")
        before = _load()
        print(f"running {measure} (load {before:.2f}) ...", file=sys.stderr, flush=True)
        try:
            # stderr goes through, so a failure in the child shows its traceback
            child = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            sys.exit(f"bench_scale: {measure} took more than {timeout:.0f} s; stopped")
        if child.returncode != 0:
            sys.exit(f"bench_scale: the {measure} child failed (exit {child.returncode})")
        r = json.loads(child.stdout.strip().splitlines()[-1])
        r["load"] = (before, _load())
        r["rows"], r["distinct"] = bench_scoring.output_rows(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return r


def _verdict(ok: bool, full_size: bool) -> str:
    if not full_size:
        return "n/a below 2M customers"
    return "met" if ok else "MISSED"


def _child(args: argparse.Namespace) -> None:
    run = _run_features if args.run == "features" else _run_scoring
    print(json.dumps(run(args)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=TARGET_CUSTOMERS)
    parser.add_argument("--days", type=int, default=730, help="length of the log in days")
    parser.add_argument("--memory-limit", default="6GB", help="engine.memory_limit (DuckDB)")
    parser.add_argument("--only", choices=MEASURES, help="run one measure only")
    parser.add_argument("--train-customers", type=int, default=20_000)
    parser.add_argument("--chunk-customers", type=int, default=50_000, help="customers a file")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--timeout", type=float, default=1200.0, help="seconds a child may take before it stops"
    )
    parser.add_argument(
        "--no-value", action="store_true", help="score without the value model (for an A/B)"
    )
    parser.add_argument("--run", choices=MEASURES, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--churn", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--segments", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--as-of", type=date.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--temp-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run:
        _child(args)
        return
    for name in ("customers", "days", "train_customers", "chunk_customers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    _settings(args.memory_limit, BENCH)  # a bad --memory-limit fails here, not in a child

    measures = (args.only,) if args.only else MEASURES
    as_of = bench_scoring.last_day(args.days)
    folder = _dataset(args.customers, args.days, args.seed, args.chunk_customers)
    models = None
    if "scoring" in measures:
        models = bench_scoring.bench_models(args.train_customers, args.days, args.seed)
    counted = time.perf_counter()
    events, expected = _log_counts(folder, as_of)
    counted = time.perf_counter() - counted
    files = sorted(folder.glob("*.parquet"))
    size = sum(f.stat().st_size for f in files) / 2**30
    print(
        f"log {folder.relative_to(ROOT)}: {len(files)} files, {size:.2f} GiB, "
        f"{events:,} events of {expected:,} customers up to {as_of} "
        f"(counted with duckdb in {counted:.1f} s)"
    )

    results = {
        m: _measure(m, folder, as_of, args.memory_limit, models, args.timeout, args.no_value)
        for m in measures
    }

    print(f"\nas of {as_of}, memory_limit {args.memory_limit}, {os.cpu_count()} cores")
    print(
        f"{'measure':<9} {'customers':>10} {'events':>12} {'parts':>5} {'wall s':>8} "
        f"{'target':>7} {'events/s':>11} {'customers/s':>11} {'peak RSS':>9} {'target':>7} "
        f"{'rows':>10} {'load 1m':>11}"
    )
    full = args.customers >= TARGET_CUSTOMERS  # the log's size; a few may have no event
    summary = []
    problems = []
    for m, r in results.items():
        seconds, gib = r["seconds"], r["peak_bytes"] / 2**30
        target_s, target_gib = TARGETS[m]
        load = f"{r['load'][0]:.2f}->{r['load'][1]:.2f}"
        print(
            f"{m:<9} {expected:>10,} {events:>12,} {r['partitions']:>5} {seconds:>8.2f} "
            f"{'<= ' + format(target_s, '.0f'):>7} {events / seconds:>11,.0f} "
            f"{expected / seconds:>11,.0f} {gib:>5.2f} GiB {'<= ' + format(target_gib, '.0f'):>7} "
            f"{r['rows']:>10,} {load:>11}"
        )
        summary.append(
            f"{m} {seconds:.1f} s (<= {target_s:.0f}: {_verdict(seconds <= target_s, full)}), "
            f"{gib:.2f} GiB (<= {target_gib:.0f}: {_verdict(gib <= target_gib, full)})"
        )
        if r["rows"] != expected:
            problems.append(f"{m}: {r['rows']:,} rows for {expected:,} customers seen")
        if r["distinct"] != r["rows"]:
            problems.append(f"{m}: customers repeat ({r['distinct']:,} of {r['rows']:,})")
        if r["reported_rows"] != r["rows"]:
            problems.append(f"{m}: reports {r['reported_rows']:,} rows, the file has {r['rows']:,}")
        if r["events"] is not None and r["events"] != events:
            problems.append(f"{m}: scored {r['events']:,} events of {events:,}")
    for m, r in results.items():
        print(f"\n{m + ' phase':<40} {'wall s':>8}")
        for phase, s in r["phases"].items():
            print(f"{phase:<40} {s:>8.2f}")
    print(
        f"\nsummary: {expected:,} customers / {events:,} events, "
        f"memory_limit {args.memory_limit}: " + "; ".join(summary)
    )
    if problems:
        sys.exit("bench_scale: WRONG OUTPUT: " + "; ".join(problems))


if __name__ == "__main__":
    main()
