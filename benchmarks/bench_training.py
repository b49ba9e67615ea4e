"""Training at scale: `train` on a 500,000-customer sample of a 1M-customer log.

Usage::

    .venv/bin/python benchmarks/bench_training.py [--customers 1000000]
        [--max-customers 500000] [--max-rows 300000 | --max-rows 0] [--repeat 1]

The log is ``bench_scoring.py``'s cached sample log (``--customers`` customers over 730
days, ~52 events each, under ``data/bench/``; generated when missing). Each run is a
fresh subprocess timing ``churnlens.training.train(log, as_of=last day, settings,
models_dir=<temporary>)`` without MLflow, with ``training.max_customers`` and
``model.max_rows`` as given (``--max-rows 0``: every row). It prints the time at which
each step started, the wall time, the peak resident memory (ru_maxrss), the 1-minute
load average before and after (another job on the machine skews the figures), and the
churn model's validation metrics and the value model's method, so that a speed change
can be checked for what it does to accuracy. Target: under 5 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(events: Path, as_of: str, max_customers: int, max_rows: int | None) -> dict:
    """Runs in the child: one `train`, reported as JSON on stdout."""
    import resource

    from churnlens.config import Settings
    from churnlens.training import train

    settings = Settings().with_overrides(training={"max_customers": max_customers})
    model = settings.model.model_copy(update={"max_rows": max_rows})
    settings = settings.model_copy(update={"model": model})
    began = time.perf_counter()
    steps: list[tuple[float, str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-training-") as models:
        result = train(
            events,
            as_of,
            settings,
            models,
            step=lambda text: steps.append((time.perf_counter() - began, text)),
        )
    seconds = time.perf_counter() - began
    calibrated = result.model.validation_["calibrated"]
    return {
        "seconds": seconds,
        "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "rows": result.rows,
        "customers": result.sample.customers if result.sample else None,
        "steps": steps,
        "roc_auc": calibrated["roc_auc"],
        "brier": calibrated["brier"],
        "log_loss": calibrated["log_loss"],
        "value_method": result.value.model.method_,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers in the log")
    parser.add_argument("--days", type=int, default=730)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--chunk-customers", type=int, default=50_000)
    parser.add_argument("--max-customers", type=int, default=500_000)
    parser.add_argument("--max-rows", type=int, default=300_000, help="0: every row")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--run", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        events, as_of, max_customers, max_rows = args.run
        rows = int(max_rows) or None
        print(json.dumps(_run(Path(events), as_of, int(max_customers), rows)))
        return 0
    sys.path.insert(0, str(HERE))
    import bench_scoring

    events = bench_scoring.scoring_log(args.customers, args.days, args.seed, args.chunk_customers)
    as_of = bench_scoring.last_day(args.days).isoformat()
    print(f"log: {events} as of {as_of}; max_customers {args.max_customers:,}, "
          f"max_rows {args.max_rows or 'every row'}")  # fmt: skip
    times = []
    for i in range(args.repeat):
        load = os.getloadavg()[0]
        child = [sys.executable, __file__, "--run", str(events), as_of]
        out = subprocess.run(
            [*child, str(args.max_customers), str(args.max_rows)],
            check=True,
            capture_output=True,
            text=True,
        )
        report = json.loads(out.stdout.strip().splitlines()[-1])
        times.append(report["seconds"])
        for at, text in report["steps"]:
            print(f"  {at:7.1f} s  {text}")
        customers = f"{report['customers']:,}" if report["customers"] else "all"
        print(
            f"run {i + 1}: {report['seconds']:.1f} s for {customers} "
            f"customers, {report['rows']:,} snapshot rows; peak RSS {report['peak_gib']:.2f} "
            f"GiB; load average {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
            f"validation AUC {report['roc_auc']:.5f}, Brier {report['brier']:.5f}, log loss "
            f"{report['log_loss']:.5f}; value model: {report['value_method']}",
            flush=True,
        )
    times.sort()
    print(f"median {times[len(times) // 2]:.1f} s (target: under 300 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
