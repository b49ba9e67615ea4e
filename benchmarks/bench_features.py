"""Feature-build throughput and peak memory: DuckDB engine against the pandas reference.

Usage::

    .venv/bin/python benchmarks/bench_features.py --events 10000000

Generates N events (N/50 customers) once with the sample generator, caches them as
Parquet under ``data/bench/``, then times each method in a fresh subprocess so that its
peak resident memory (ru_maxrss) is its own:

- ``engine/parquet``: ``build_features(path)``: DuckDB reads and validates the file;
- ``engine/pandas``: ``build_features(frame)`` on a frame already in memory;
- ``reference/pandas``: the vectorised pandas reference in ``tests/reference/``.

Wall seconds include validation and loading; the frame read for the in-memory methods
is not timed but counts in their peak memory. The ratio in the last column is the figure
that matters on a noisy machine.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("engine/parquet", "engine/pandas", "reference/pandas")


def _dataset(events: int, days: int, seed: int) -> tuple[Path, date]:
    from churnlens.sample import generate_events

    path = ROOT / "data" / "bench" / f"events_{events}_{days}_{seed}.parquet"
    start = date(2024, 1, 1)
    as_of = date.fromordinal(start.toordinal() + days - 1)
    if path.exists():
        return path, as_of
    path.parent.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    frame = generate_events(customers=max(1, events // 50), days=days, seed=seed, start=start)
    frame.to_parquet(path, index=False)
    print(
        f"generated {len(frame):,} events of {frame['customer_id'].nunique():,} customers "
        f"in {time.perf_counter() - began:.1f} s -> {path.relative_to(ROOT)}"
    )
    return path, as_of


def _run_one(method: str, path: Path, as_of: date) -> dict[str, float]:
    """Runs in the child process: time one method, report JSON on stdout."""
    import pandas as pd
    import pyarrow.parquet as pq

    from churnlens import build_features

    sys.path.insert(0, str(ROOT))
    from tests.reference.features_pandas import reference_features

    frame = None if method == "engine/parquet" else pd.read_parquet(path)
    began = time.perf_counter()
    if method == "engine/parquet":
        result = build_features(path, as_of)
    elif method == "engine/pandas":
        result = build_features(frame, as_of)
    else:
        result = reference_features(frame, as_of)
    seconds = time.perf_counter() - began
    events = pq.ParquetFile(path).metadata.num_rows
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"seconds": seconds, "events": events, "customers": len(result), "peak_bytes": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events to generate")
    parser.add_argument("--days", type=int, default=730, help="length of the log in days")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--run", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--as-of", type=date.fromisoformat, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.run:
        print(json.dumps(_run_one(args.run, args.path, args.as_of)))
        return

    path, as_of = _dataset(args.events, args.days, args.seed)
    results = {}
    for method in args.methods:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--run",
                method,
                "--path",
                str(path),
                "--as-of",
                as_of.isoformat(),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    reference = results.get("reference/pandas", {}).get("seconds")
    print(f"\nfeatures as of {as_of}, {path.name}")
    print(
        f"{'method':<18} {'events':>12} {'customers':>10} {'wall s':>8} "
        f"{'events/s':>12} {'peak RSS':>9} {'speed-up':>9}"
    )
    for method, r in results.items():
        speedup = f"{reference / r['seconds']:.2f}x" if reference else "-"
        print(
            f"{method:<18} {r['events']:>12,} {r['customers']:>10,} {r['seconds']:>8.2f} "
            f"{r['events'] / r['seconds']:>12,.0f} {r['peak_bytes'] / 2**30:>7.2f} GiB "
            f"{speedup:>9}"
        )


if __name__ == "__main__":
    main()
