"""Batch-scoring throughput and peak memory: ``load_models`` + ``score`` of a big log.

Usage::

    .venv/bin/python benchmarks/bench_scoring.py --customers 1000000

Builds, once, a Parquet event log of N customers (about 50 events each over 730 days)
under ``data/bench/``: the sample generator runs in chunks of ``--chunk-customers`` with
distinct seeds, each chunk's customer ids get the chunk number as a prefix so that they
stay unique, and the chunks are appended to one file with a ``ParquetWriter``, so memory
stays bounded by one chunk. Trains, once, a churn bundle and a segments bundle on a
separate small log (``--train-customers``) as of the same last day, cached under
``data/bench/models_*``. Both caches are written under a temporary name and renamed
when complete.

Only the scoring is measured, in a fresh subprocess so that its peak resident memory
(ru_maxrss, DuckDB's included) is its own: ``load_models`` then ``score`` of the big log
as of its last day into a temporary folder beside the data. The per-phase split comes
from the progress callback (called after each partition). The scores file must hold one
row per customer seen: the benchmark exits non-zero when it does not.

The targets are for 1M customers / 50M events on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "data" / "bench"
START = date(2024, 1, 1)
TARGET_SECONDS = 120.0
TARGET_GIB = 6.0
TARGET_CUSTOMERS = 1_000_000


def last_day(days: int) -> date:
    return date.fromordinal(START.toordinal() + days - 1)


def _chunk_seed(seed: int, chunk: int) -> int:
    # Far apart from each other and from the training log's seed, so that no two logs
    # share their first random draws (which would repeat customers).
    return seed * 1_000_000 + chunk


def scoring_log(customers: int, days: int, seed: int, chunk_customers: int) -> Path:
    """The cached big log; generated chunk by chunk and renamed into place when complete."""
    import pyarrow.parquet as pq

    name = f"scoring_events_{customers}_{days}_{seed}_c{chunk_customers}.parquet"
    path = BENCH / name
    if path.exists():
        return path
    BENCH.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    began = time.perf_counter()
    events = 0
    writer = None
    try:
        for _, table in chunk_tables(customers, days, seed, chunk_customers):
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
            writer.write_table(table)
            events += table.num_rows
        writer.close()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)
    print(
        f"generated {events:,} events of {customers:,} customers "
        f"in {time.perf_counter() - began:.1f} s -> {path.relative_to(ROOT)}"
    )
    return path


def chunk_tables(
    customers: int, days: int, seed: int, chunk_customers: int
) -> Iterator[tuple[int, pa.Table]]:
    """The sample log in chunks of ``chunk_customers`` customers, as (chunk, Arrow table).

    Each chunk has its own seed, and its customer ids get the chunk number as a prefix
    ("C0000001" -> "C003_0000001"), so they stay unique; memory holds one chunk.
    """
    import pyarrow as pa

    from churnlens.sample import generate_events

    chunks = math.ceil(customers / chunk_customers)
    width = max(3, len(str(chunks - 1)))
    began, events, schema = time.perf_counter(), 0, None
    for chunk in range(chunks):
        n = min(chunk_customers, customers - chunk * chunk_customers)
        frame = generate_events(customers=n, days=days, seed=_chunk_seed(seed, chunk), start=START)
        frame["customer_id"] = f"C{chunk:0{width}d}_" + frame["customer_id"].str.slice(1)
        table = pa.Table.from_pandas(frame, preserve_index=False)
        del frame
        schema = schema or table.schema.remove_metadata()
        events += table.num_rows
        print(
            f"  chunk {chunk + 1}/{chunks}: {events:,} events so far "
            f"({time.perf_counter() - began:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
        yield chunk, table.cast(schema)


def bench_models(train_customers: int, days: int, seed: int) -> tuple[Path, Path]:
    """The cached churn and segments bundles, trained on a separate small log."""
    from churnlens import __version__
    from churnlens.config import Settings
    from churnlens.events import load_events
    from churnlens.sample import generate_events
    from churnlens.segmenting import segment
    from churnlens.training import train

    # the version is in the name: a bundle of another version is refused by load_models
    folder = BENCH / f"models_{train_customers}_{days}_{seed}_v{__version__}"
    if not folder.exists():
        BENCH.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=BENCH))
        try:
            began = time.perf_counter()
            as_of = last_day(days)
            frame = generate_events(
                customers=train_customers, days=days, seed=_chunk_seed(seed, 999_999), start=START
            )
            # "T..." ids: nobody in the training log is in the scored log
            frame["customer_id"] = "T" + frame["customer_id"].str.slice(1)
            table = load_events(frame, Settings())
            trained = train(table, as_of, Settings(), tmp, track=False)
            segmented = segment(table, as_of, Settings(), tmp, track=False)
            tmp.chmod(0o755)  # mkdtemp makes it private
            try:
                os.rename(tmp, folder)
            except OSError:  # another run got there first: use its bundles
                if not folder.exists():
                    raise
            print(
                f"trained on {len(frame):,} events of {train_customers:,} customers "
                f"({trained.rows:,} snapshot rows, {segmented.model.k_} segments) "
                f"in {time.perf_counter() - began:.1f} s -> {folder.relative_to(ROOT)}"
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    churn = sorted(folder.glob("churn-*"))
    segments = sorted(folder.glob("segments-*"))
    if len(churn) != 1 or len(segments) != 1:
        sys.exit(f"{folder}: expected one churn and one segments bundle; delete it and rerun")
    return churn[0], segments[0]


def _run_one(
    events: Path,
    churn: Path,
    segments: Path,
    as_of: date,
    out: Path,
    partitions: int | None,
    value: bool = True,
    previous: Path | None = None,
) -> dict[str, object]:
    """Runs in the child process: time load_models + score, report JSON on stdout."""
    from churnlens.actions import Policy
    from churnlens.config import Settings
    from churnlens.model_source import load_models
    from churnlens.scoring import score

    marks: list[tuple[float, int, int, int]] = []

    def progress(done: int, total: int, customers: int) -> None:
        if done:  # not the first call, which only gives the count (nothing done yet)
            marks.append((time.perf_counter(), done, total, customers))

    began = time.perf_counter()
    models = load_models(churn, segments, Settings(), value="auto" if value else None)
    loaded = time.perf_counter()
    history = {} if previous is None else {"previous": previous}  # the changes since it
    result = score(
        events, as_of, out, models, Policy(), partitions=partitions, progress=progress, **history
    )
    ended = time.perf_counter()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    first = marks[0][0] if marks else ended
    last = marks[-1][0] if marks else ended
    return {
        "seconds": ended - began,
        "peak_bytes": peak,
        "events": result.manifest["events_scored"],
        "partitions": result.manifest["partitions"],
        "parts_scored": len(marks),
        "customers_scored": marks[-1][3] if marks else None,
        "manifest_rows": result.manifest["rows"],
        "phases": {
            "load models": loaded - began,
            "checks, 1st partition's DuckDB pass": first - loaded,
            "other partitions": last - first,
            "rank and write": ended - last,
        },
    }


def _expected_customers(events: Path, as_of: date) -> int:
    """Distinct customers with an event on or before ``as_of``, counted apart from churnlens."""
    import duckdb

    con = duckdb.connect()
    (n,) = con.execute(
        "SELECT count(DISTINCT customer_id) FROM read_parquet(?) "
        "WHERE CAST(timestamp AS DATE) <= CAST(? AS DATE)",
        [str(events), as_of.isoformat()],
    ).fetchone()  # type: ignore[misc]
    return int(n)


def output_rows(out: Path) -> tuple[int, int]:
    """(rows, distinct customer ids) of the scores file."""
    import duckdb

    con = duckdb.connect()
    rows, distinct = con.execute(
        "SELECT count(*), count(DISTINCT customer_id) FROM read_parquet(?)", [str(out)]
    ).fetchone()  # type: ignore[misc]
    return int(rows), int(distinct)


def _verdict(ok: bool, full_size: bool) -> str:
    if not full_size:
        return "n/a below 1M customers"
    return "met" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers to score")
    parser.add_argument("--days", type=int, default=730, help="length of the log in days")
    parser.add_argument("--partitions", type=int, default=None, help="default: score's own")
    parser.add_argument("--train-customers", type=int, default=20_000)
    parser.add_argument("--chunk-customers", type=int, default=50_000, help="generator chunk")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--work-dir", type=Path, default=BENCH, help="where the scores and work files go"
    )
    parser.add_argument(
        "--no-value", action="store_true", help="score without the value model (for an A/B)"
    )
    parser.add_argument(
        "--previous", type=Path, default=None, help="a scores file to compare with (history)"
    )
    parser.add_argument("--run", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--churn", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--segments", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--as-of", type=date.fromisoformat, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run:
        result = _run_one(
            args.path, args.churn, args.segments, args.as_of, args.out, args.partitions,
            not args.no_value, args.previous,
        )  # fmt: skip
        print(json.dumps(result))
        return
    for name in ("customers", "days", "train_customers", "chunk_customers"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.partitions is not None and args.partitions < 1:
        parser.error("--partitions must be >= 1")

    as_of = last_day(args.days)
    path = scoring_log(args.customers, args.days, args.seed, args.chunk_customers)
    churn, segments = bench_models(args.train_customers, args.days, args.seed)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".bench-scoring.", dir=args.work_dir))
    try:
        out = work / "scores.parquet"
        command = [
            sys.executable,
            __file__,
            "--run",
            "--path",
            str(path),
            "--churn",
            str(churn),
            "--segments",
            str(segments),
            "--as-of",
            as_of.isoformat(),
            "--out",
            str(out),
        ]
        if args.partitions is not None:
            command += ["--partitions", str(args.partitions)]
        if args.no_value:
            command.append("--no-value")
        if args.previous is not None:
            command += ["--previous", str(args.previous)]
        # stderr goes through, so a failure in the child shows its traceback
        child = subprocess.run(command, stdout=subprocess.PIPE, text=True)
        if child.returncode != 0:
            sys.exit(f"bench_scoring: the scoring child failed (exit {child.returncode})")
        r = json.loads(child.stdout.strip().splitlines()[-1])
        rows, distinct = output_rows(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    expected = _expected_customers(path, as_of)

    seconds, gib = r["seconds"], r["peak_bytes"] / 2**30
    print(f"\nscoring as of {as_of}, {path.name}, models {churn.parent.name}")
    print(
        f"{'customers':>10} {'events':>12} {'parts':>5} {'wall s':>8} {'target':>8} "
        f"{'events/s':>11} {'customers/s':>11} {'peak RSS':>9} {'target':>8} {'rows':>10}"
    )
    print(
        f"{expected:>10,} {r['events']:>12,} {r['partitions']:>5} {seconds:>8.2f} "
        f"{'<= ' + format(TARGET_SECONDS, '.0f'):>8} {r['events'] / seconds:>11,.0f} "
        f"{expected / seconds:>11,.0f} {gib:>5.2f} GiB {'<= ' + format(TARGET_GIB, '.0f'):>8} "
        f"{rows:>10,}"
    )
    print(f"\n{'phase':<36} {'wall s':>8}")
    for phase, s in r["phases"].items():
        print(f"{phase:<36} {s:>8.2f}")

    full = (
        args.customers >= TARGET_CUSTOMERS
    )  # the log's size; a few generated customers have no event
    print(
        f"\nsummary: {expected:,} customers / {r['events']:,} events scored in {seconds:.1f} s "
        f"(target <= {TARGET_SECONDS:.0f} s: {_verdict(seconds <= TARGET_SECONDS, full)}), "
        f"peak RSS {gib:.2f} GiB (target <= {TARGET_GIB:.0f} GiB: "
        f"{_verdict(gib <= TARGET_GIB, full)}), {r['partitions']} partition(s), "
        f"{rows:,} score rows"
    )
    problems = []
    if rows != expected:
        problems.append(f"the scores file has {rows:,} rows for {expected:,} customers seen")
    if distinct != rows:
        problems.append(f"the scores file repeats customers ({distinct:,} distinct of {rows:,})")
    if r["customers_scored"] is not None and r["customers_scored"] != rows:
        problems.append(f"the partitions scored {r['customers_scored']:,}, the file has {rows:,}")
    if r["manifest_rows"] != rows:
        problems.append(f"the manifest says {r['manifest_rows']:,} rows, the file has {rows:,}")
    if problems:
        sys.exit("bench_scoring: WRONG OUTPUT: " + "; ".join(problems))


if __name__ == "__main__":
    main()
